using Vireo.Interop;

namespace Vireo.Kvm;

/// <summary>
/// What KVM holds for a VM beyond its vCPUs and memory: the kvmclock, the in-kernel PICs and
/// IOAPIC, and the PIT. Plain data, built by <see cref="KvmVm.SaveState"/> and applied by
/// <see cref="KvmVm.RestoreState"/>; untrusted until <see cref="Problem"/> says null.
/// </summary>
public sealed record KvmVmState
{
    private const uint ValidClockFlags = KvmAbi.KVM_CLOCK_TSC_STABLE | KvmAbi.KVM_CLOCK_REALTIME | KvmAbi.KVM_CLOCK_HOST_TSC;
    private const uint ValidPitFlags = KvmAbi.KVM_PIT_FLAGS_HPET_LEGACY | KvmAbi.KVM_PIT_FLAGS_SPEAKER_DATA_ON;

    public required kvm_clock_data Clock { get; init; }
    /// <summary>The 512-byte kvm_irqchip payload of each chip (a kvm_pic_state or kvm_ioapic_state at its start), or null, all three, without an in-kernel irqchip.</summary>
    public required byte[]? PicMaster { get; init; }
    public required byte[]? PicSlave { get; init; }
    public required byte[]? Ioapic { get; init; }
    /// <summary>The in-kernel i8254, or null for a VM without one.</summary>
    public required kvm_pit_state2? Pit { get; init; }

    public bool HasIrqchip => PicMaster is not null;

    /// <summary>The saving host read its wall clock with the kvmclock (KVM_CLOCK_REALTIME), so a restore can add the time since.</summary>
    public bool ClockHasRealtime => (Clock.flags & KvmAbi.KVM_CLOCK_REALTIME) != 0;

    /// <summary>Null when the record is fit to restore; otherwise the first thing wrong with it, in words.</summary>
    public string? Problem()
    {
        if ((Clock.flags & ~ValidClockFlags) != 0)
        {
            return $"vm: clock flags 0x{Clock.flags:x} include bits KVM does not define";
        }
        if (PicMaster is null != (PicSlave is null) || PicMaster is null != (Ioapic is null))
        {
            return "vm: the irqchip state has some of the master PIC, slave PIC and IOAPIC but not all three";
        }
        foreach (var (name, chip) in new[] { ("master PIC", PicMaster), ("slave PIC", PicSlave), ("IOAPIC", Ioapic) })
        {
            if (chip is not null && chip.Length != KvmAbi.IrqchipPayloadSize)
            {
                return $"vm: {name} state is {chip.Length} bytes, expected {KvmAbi.IrqchipPayloadSize}";
            }
        }
        if (Pit is { } pit)
        {
            if ((pit.flags & ~ValidPitFlags) != 0)
            {
                return $"vm: PIT flags 0x{pit.flags:x} include bits KVM does not define";
            }
            var channels = new[] { pit.channel0, pit.channel1, pit.channel2 };
            for (int i = 0; i < channels.Length; i++)
            {
                if (ChannelProblem(channels[i]) is { } problem)
                {
                    return $"vm: PIT channel {i}: {problem}";
                }
            }
        }
        return null;
    }

    /// <summary>The mode KVM gives a PIT channel at reset, before the guest programs it.</summary>
    private const byte NeverProgrammed = 0xff;

    private static string? ChannelProblem(in kvm_pit_channel_state c) =>
        c.count > 0x10000 ? $"count {c.count} exceeds 65536"
        : c.mode > 5 && c.mode != NeverProgrammed ? $"mode {c.mode}, expected 0 to 5 (or 255, never programmed)"
        : c.rw_mode > 3 ? $"access mode {c.rw_mode}, expected 0 to 3"
        : c.read_state > 4 || c.write_state > 4 ? $"read/write state {c.read_state}/{c.write_state}, expected 0 to 4"
        : c.bcd > 1 || c.gate > 1 ? $"bcd {c.bcd} or gate {c.gate} is not 0 or 1"
        : null;
}
