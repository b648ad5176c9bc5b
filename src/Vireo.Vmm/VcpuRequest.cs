namespace Vireo.Vmm;

/// <summary>
/// What a vCPU thread is asked to do, between two KVM_RUNs (Firecracker's VcpuEvent). The thread
/// takes its requests from its own queue, never from shared flags, and answers each with a
/// <see cref="VcpuResponse"/>, so that "paused" means every vCPU has left KVM_RUN and said so.
/// </summary>
internal enum VcpuRequest
{
    /// <summary>Leave KVM_RUN and wait for Resume or Stop; answered with Paused.</summary>
    Pause,

    /// <summary>Run on; answered with Resumed (also when the vCPU was not paused).</summary>
    Resume,

    /// <summary>End the thread; answered with Exited, as any end of the thread is.</summary>
    Stop,

    /// <summary>Capture the vCPU's state (sent while paused: it stays paused); answered with Saved.</summary>
    Save,
}

/// <summary>A vCPU thread's answer to a <see cref="VcpuRequest"/> (Firecracker's VcpuResponse).</summary>
internal enum VcpuResponse
{
    Paused,
    Resumed,

    /// <summary>The state is in <see cref="VcpuRunner.LastSaved"/>.</summary>
    Saved,

    /// <summary>The thread has ended (asked to, or the VM stopped); it answers nothing more.</summary>
    Exited,
}
