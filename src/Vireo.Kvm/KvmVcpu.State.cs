using Vireo.Interop;

namespace Vireo.Kvm;

// Whole-vCPU state capture for snapshots and migration. See DESIGN.md ("State capture") for the order.
public sealed unsafe partial class KvmVcpu
{
    /// <summary>Everything KVM holds for this vCPU. Call it from the vCPU's thread, out of KVM_RUN.</summary>
    /// <summary>
    /// Finds the MSRs a save takes, once a process (a scratch VM's worth of work): called before a
    /// migration pauses the guest, so that its downtime does not pay for it.
    /// </summary>
    public void PrepareToSave() => _ = _kvm.SaveableMsrs(HasLapic);

    public VcpuState SaveState()
    {
        // MP state first: reading it makes KVM accept a pending INIT or SIPI, which can rewrite
        // the registers, so everything read after it agrees with it.
        uint mpState = GetMpState();
        var xcrs = GetXcrs();
        int nXcrs = (int)Math.Min(xcrs.nr_xcrs, (uint)KvmAbi.KVM_MAX_XCRS);
        var xcrValues = new XcrValue[nXcrs];
        for (int i = 0; i < nXcrs; i++)
        {
            var x = xcrs.Get(i);
            xcrValues[i] = new XcrValue(x.xcr, x.value);
        }
        var msrs = GetReadableMsrs(_kvm.SaveableMsrs(HasLapic));
        byte[]? lapic = null;
        if (HasLapic)
        {
            var l = GetLapic();
            // SAFETY: l is a local kvm_lapic_state, exactly LapicSize bytes.
            lapic = new ReadOnlySpan<byte>(l.regs, VcpuState.LapicSize).ToArray();
        }
        return new VcpuState
        {
            Id = Id,
            MpState = mpState,
            Regs = GetRegs(),
            Sregs = GetSregs(),
            Xsave = GetXsaveBytes(),
            Xcrs = xcrValues,
            Debugregs = GetDebugregs(),
            Lapic = lapic,
            Msrs = Array.ConvertAll(msrs, e => new MsrValue(e.index, e.data)),
            Events = GetVcpuEvents(),
            TscKhz = GetTscKhz(),
            Cpuid = CpuidSet,
        };
    }

    /// <summary>
    /// Applies a saved vCPU to this fresh one (same id, never run). The order is KVM's: CPUID
    /// first (it decides which CR4, XCR0 and MSR bits are legal), then the TSC rate, sregs,
    /// regs, XSAVE, XCRs, the LAPIC, MSRs (the TSC deadline only sticks once the LAPIC is in
    /// TSC-deadline mode), debug registers, MP state, and the pending events last.
    /// </summary>
    public void RestoreState(VcpuState state)
    {
        ArgumentNullException.ThrowIfNull(state);
        if (state.Problem() is { } problem)
        {
            throw new ArgumentException(problem, nameof(state));
        }
        string who = $"vcpu {Id}";
        if (state.Id != Id)
        {
            throw new ArgumentException($"{who}: the state was saved from vcpu {state.Id}", nameof(state));
        }
        if (state.Lapic is null == HasLapic)
        {
            throw new InvalidOperationException(HasLapic
                ? $"{who}: the saved vCPU had no in-kernel LAPIC and this one has"
                : $"{who}: the saved vCPU had an in-kernel LAPIC and this VM has no irqchip");
        }
        if (state.Xsave.Length > XsaveSize)
        {
            throw new InvalidOperationException($"{who}: the XSAVE area is {state.Xsave.Length} bytes, this host's KVM takes at most {XsaveSize}");
        }

        if (state.Cpuid.Length > 0 && !CpuidIs(state.Cpuid))
        {
            SetCpuid(state.Cpuid); // 0.2 ms on this host: skipped when the vCPU was made with these very entries (a migration's destination)
        }
        uint hostKhz = GetTscKhz();
        if (state.TscKhz != hostKhz)
        {
            try
            {
                SetTscKhz(state.TscKhz);
            }
            catch (SysError e)
            {
                throw new InvalidOperationException($"{who}: KVM cannot run the TSC at the saved {state.TscKhz} kHz (this host's runs at {hostKhz} kHz): {e.Message}", e);
            }
        }
        SetSregs(state.Sregs);
        SetRegs(state.Regs);
        SetXsaveBytes(state.Xsave);
        var xcrs = new kvm_xcrs { nr_xcrs = (uint)state.Xcrs.Length };
        for (int i = 0; i < state.Xcrs.Length; i++)
        {
            xcrs.Set(i, new kvm_xcr { xcr = state.Xcrs[i].Index, value = state.Xcrs[i].Value });
        }
        SetXcrs(xcrs);
        if (state.Lapic is not null)
        {
            kvm_lapic_state lapic;
            // SAFETY: lapic is a local of exactly LapicSize bytes, the length Problem() checked.
            state.Lapic.CopyTo(new Span<byte>(lapic.regs, VcpuState.LapicSize));
            SetLapic(lapic);
        }
        var msrs = Array.ConvertAll(state.Msrs, m => new kvm_msr_entry { index = m.Index, data = m.Value });
        try
        {
            SetMsrs(msrs);
        }
        catch (InvalidOperationException e)
        {
            throw new InvalidOperationException($"{who}: {e.Message}", e);
        }
        SetDebugregs(state.Debugregs);
        SetMpState(state.MpState);
        SetVcpuEvents(state.Events);
    }
}
