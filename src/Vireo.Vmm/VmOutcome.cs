namespace Vireo.Vmm;

/// <summary>Why a VM stopped.</summary>
public enum StopReason
{
    /// <summary>The guest asked for a reset (i8042 0xFE, or a KVM reset event).</summary>
    Reset,
    /// <summary>The guest powered off (KVM shutdown event).</summary>
    PowerOff,
    /// <summary>The guest wrote a status to the debug-exit port.</summary>
    DebugExit,
    /// <summary>Stopped from the host: Ctrl-] q, a signal, or the API.</summary>
    HostRequest,
    /// <summary>The run took longer than its time limit.</summary>
    Timeout,
    /// <summary>Triple fault: the CPU shut down.</summary>
    TripleFault,
    /// <summary>KVM could not emulate an instruction.</summary>
    EmulationFailure,
    /// <summary>KVM reported an internal error or a failed VM entry.</summary>
    InternalError,
    /// <summary>A host system call failed.</summary>
    HostError,
    /// <summary>The guest reported a crash (KVM crash event).</summary>
    GuestCrash,
    /// <summary>The VM went on in another VMM (a live migration committed): this one's part is over.</summary>
    Migrated,
}

/// <summary>How a VM run ended: the reason, the guest's status where it gave one, and for failures a message and registers.</summary>
public sealed record VmOutcome(StopReason Reason, int GuestStatus = 0, string Message = "", string? RegisterDump = null)
{
    /// <summary>True when the guest ended the run on its own terms, not by a fault.</summary>
    public bool IsClean => Reason is StopReason.Reset or StopReason.PowerOff or StopReason.DebugExit or StopReason.HostRequest or StopReason.Migrated;

    /// <summary>The process exit status `vireo run` reports: 0 for reset/poweroff, the guest's status for debug-exit, else non-zero.</summary>
    public int ExitCode => Reason switch
    {
        StopReason.Reset or StopReason.PowerOff or StopReason.HostRequest or StopReason.Migrated => 0,
        StopReason.DebugExit => GuestStatus,
        StopReason.Timeout => 124,
        _ => 1,
    };

    public override string ToString() => Reason switch
    {
        StopReason.Reset => "guest reset",
        StopReason.PowerOff => "guest powered off",
        StopReason.DebugExit => $"guest exited with status {GuestStatus}",
        _ => string.IsNullOrEmpty(Message) ? Reason.ToString() : $"{Reason}: {Message}",
    };
}
