using Vireo.Interop;

namespace Vireo.Kvm;

// VM-wide state capture: the kvmclock, the in-kernel PICs and IOAPIC, and the PIT.
public sealed unsafe partial class KvmVm
{
    public kvm_clock_data GetClock() { kvm_clock_data c; Check.Io(Libc.Ioctl(_fd.Fd, KvmAbi.KVM_GET_CLOCK, &c), "KVM_GET_CLOCK"); return c; }
    public void SetClock(in kvm_clock_data c) { fixed (kvm_clock_data* p = &c) { Check.Io(Libc.Ioctl(_fd.Fd, KvmAbi.KVM_SET_CLOCK, p), "KVM_SET_CLOCK"); } }
    public kvm_pit_state2 GetPit2() { kvm_pit_state2 s; Check.Io(Libc.Ioctl(_fd.Fd, KvmAbi.KVM_GET_PIT2, &s), "KVM_GET_PIT2"); return s; }
    public void SetPit2(in kvm_pit_state2 s) { fixed (kvm_pit_state2* p = &s) { Check.Io(Libc.Ioctl(_fd.Fd, KvmAbi.KVM_SET_PIT2, p), "KVM_SET_PIT2"); } }

    /// <summary>KVM_GET_IRQCHIP for one chip (KVM_IRQCHIP_PIC_MASTER, _PIC_SLAVE or _IOAPIC): its 512-byte payload.</summary>
    public byte[] GetIrqchip(uint chipId)
    {
        var chip = new kvm_irqchip { chip_id = chipId };
        Check.Io(Libc.Ioctl(_fd.Fd, KvmAbi.KVM_GET_IRQCHIP, &chip), $"KVM_GET_IRQCHIP({chipId})");
        // SAFETY: chip is a local; its payload is IrqchipPayloadSize bytes.
        return new ReadOnlySpan<byte>(chip.chip, KvmAbi.IrqchipPayloadSize).ToArray();
    }

    public void SetIrqchip(uint chipId, ReadOnlySpan<byte> payload)
    {
        if (payload.Length != KvmAbi.IrqchipPayloadSize)
        {
            throw new ArgumentException($"irqchip {chipId}: payload is {payload.Length} bytes, expected {KvmAbi.IrqchipPayloadSize}", nameof(payload));
        }
        var chip = new kvm_irqchip { chip_id = chipId };
        // SAFETY: chip is a local whose payload holds exactly IrqchipPayloadSize bytes, the length just checked.
        payload.CopyTo(new Span<byte>(chip.chip, KvmAbi.IrqchipPayloadSize));
        Check.Io(Libc.Ioctl(_fd.Fd, KvmAbi.KVM_SET_IRQCHIP, &chip), $"KVM_SET_IRQCHIP({chipId})");
    }

    /// <summary>The VM's clock, irqchips (if it has them) and PIT (if it has one). Take it with every vCPU out of KVM_RUN.</summary>
    public KvmVmState SaveState() => new()
    {
        Clock = GetClock(),
        PicMaster = HasIrqchip ? GetIrqchip(KvmAbi.KVM_IRQCHIP_PIC_MASTER) : null,
        PicSlave = HasIrqchip ? GetIrqchip(KvmAbi.KVM_IRQCHIP_PIC_SLAVE) : null,
        Ioapic = HasIrqchip ? GetIrqchip(KvmAbi.KVM_IRQCHIP_IOAPIC) : null,
        Pit = HasPit ? GetPit2() : null,
    };

    /// <summary>
    /// Applies a validated <see cref="KvmVmState"/> to this VM, which must have the same devices
    /// and its vCPUs already created and restored: the clock goes last, because creating a vCPU
    /// and writing its TSC both resynchronise KVM's master clock, which would move a clock set before.
    /// </summary>
    /// <param name="advanceClockByRealtime">
    /// Add the wall-clock time since the save to the clock (KVM_CLOCK_REALTIME), as a live migration
    /// wants; false resumes the clock where it stopped, as a paused snapshot wants.
    /// </param>
    public void RestoreState(KvmVmState state, bool advanceClockByRealtime = false)
    {
        ArgumentNullException.ThrowIfNull(state);
        if (state.Problem() is { } problem)
        {
            throw new ArgumentException(problem, nameof(state));
        }
        if (state.HasIrqchip != HasIrqchip)
        {
            throw new InvalidOperationException(state.HasIrqchip
                ? "the saved VM has an in-kernel irqchip and this one has none"
                : "this VM has an in-kernel irqchip and the saved one had none");
        }
        if (state.Pit.HasValue != HasPit)
        {
            throw new InvalidOperationException(HasPit ? "this VM has an in-kernel PIT and the saved one had none" : "the saved VM has an in-kernel PIT and this one has none");
        }
        if (_vcpuCount == 0)
        {
            throw new InvalidOperationException("restore the VM state after creating its vCPUs: KVM_SET_CLOCK must follow them");
        }
        if (advanceClockByRealtime && !state.ClockHasRealtime)
        {
            throw new InvalidOperationException("the saved clock carries no wall-clock time (KVM_CLOCK_REALTIME; the saving host's clocksource is not the TSC), so it cannot be advanced by it");
        }
        if (state.PicMaster is not null)
        {
            SetIrqchip(KvmAbi.KVM_IRQCHIP_PIC_MASTER, state.PicMaster);
            SetIrqchip(KvmAbi.KVM_IRQCHIP_PIC_SLAVE, state.PicSlave);
            SetIrqchip(KvmAbi.KVM_IRQCHIP_IOAPIC, state.Ioapic);
        }
        if (state.Pit is { } pit)
        {
            SetPit2(pit);
        }
        // KVM_SET_CLOCK takes only KVM_CLOCK_REALTIME (and ignores the other flags' fields).
        var clock = new kvm_clock_data
        {
            clock = state.Clock.clock,
            flags = advanceClockByRealtime ? KvmAbi.KVM_CLOCK_REALTIME : 0,
            realtime = state.Clock.realtime,
        };
        SetClock(clock);
    }
}
