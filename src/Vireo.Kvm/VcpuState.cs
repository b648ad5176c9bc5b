using Vireo.Interop;

namespace Vireo.Kvm;

/// <summary>One MSR of a saved vCPU.</summary>
public readonly record struct MsrValue(uint Index, ulong Value);

/// <summary>One extended control register (XCR0 in practice) of a saved vCPU.</summary>
public readonly record struct XcrValue(uint Index, ulong Value);

/// <summary>
/// Everything KVM holds for one vCPU, as plain data for a snapshot or a migration stream: no fd,
/// no behaviour but <see cref="Problem"/>. Built by <see cref="KvmVcpu.SaveState"/>, applied by
/// <see cref="KvmVcpu.RestoreState"/>; one read from a file is untrusted until Problem() says null.
/// </summary>
/// <remarks>Arrays are compared by reference by the record's equality: compare fields, not records.</remarks>
public sealed record VcpuState
{
    public const int LapicSize = 1024;
    /// <summary>KVM_MAX_CPUID_ENTRIES.</summary>
    public const int MaxCpuidEntries = 256;
    /// <summary>KVM_MAX_VCPU_IDS on x86.</summary>
    public const int MaxVcpuId = 4095;
    /// <summary>sizeof(struct kvm_xsave); the area KVM_CAP_XSAVE2 reports is never smaller.</summary>
    public const int MinXsaveSize = 4096;
    /// <summary>Far above any XSAVE area today (AMX makes it about 11 KiB).</summary>
    public const int MaxXsaveSize = 64 * 1024;
    /// <summary>A TSC between 1 MHz and 20 GHz; anything else is not a real machine's.</summary>
    public const uint MinTscKhz = 1_000, MaxTscKhz = 20_000_000;

    private const uint ValidEventFlags = KvmAbi.KVM_VCPUEVENT_VALID_NMI_PENDING | KvmAbi.KVM_VCPUEVENT_VALID_SIPI_VECTOR
        | KvmAbi.KVM_VCPUEVENT_VALID_SHADOW | KvmAbi.KVM_VCPUEVENT_VALID_SMM | KvmAbi.KVM_VCPUEVENT_VALID_PAYLOAD
        | KvmAbi.KVM_VCPUEVENT_VALID_TRIPLE_FAULT;

    public required int Id { get; init; }
    public required kvm_regs Regs { get; init; }
    public required kvm_sregs Sregs { get; init; }
    /// <summary>The XSAVE area, as many bytes as the saving host's KVM moves (<see cref="KvmVcpu.XsaveSize"/>).</summary>
    public required byte[] Xsave { get; init; }
    public required XcrValue[] Xcrs { get; init; }
    public required kvm_debugregs Debugregs { get; init; }
    /// <summary>The 1 KiB APIC register page, or null for a VM without an in-kernel irqchip.</summary>
    public required byte[]? Lapic { get; init; }
    public required MsrValue[] Msrs { get; init; }
    public required kvm_vcpu_events Events { get; init; }
    /// <summary>KVM_MP_STATE_*: runnable, uninitialized, INIT received, halted, SIPI received.</summary>
    public required uint MpState { get; init; }
    public required uint TscKhz { get; init; }
    /// <summary>The CPUID the vCPU runs with, as it was set (<see cref="KvmVcpu.CpuidSet"/>); empty if none was.</summary>
    public required kvm_cpuid_entry2[] Cpuid { get; init; }

    /// <summary>Null when the record is fit to restore; otherwise the first thing wrong with it, in words.</summary>
    public string? Problem()
    {
        string who = $"vcpu {Id}";
        if (Id < 0 || Id > MaxVcpuId)
        {
            return $"{who}: the id is outside 0 to {MaxVcpuId}";
        }
        if (Xsave is null)
        {
            return $"{who}: the XSAVE area is missing";
        }
        if (Xsave.Length < MinXsaveSize || Xsave.Length > MaxXsaveSize || Xsave.Length % 4 != 0)
        {
            return $"{who}: the XSAVE area is {Xsave.Length} bytes, expected a multiple of 4 from {MinXsaveSize} to {MaxXsaveSize}";
        }
        if (Xcrs is null || Xcrs.Length > KvmAbi.KVM_MAX_XCRS)
        {
            return $"{who}: {Xcrs?.Length.ToString() ?? "no"} XCRs, expected at most {KvmAbi.KVM_MAX_XCRS}";
        }
        for (int i = 0; i < Xcrs.Length; i++)
        {
            for (int j = 0; j < i; j++)
            {
                if (Xcrs[j].Index == Xcrs[i].Index)
                {
                    return $"{who}: XCR{Xcrs[i].Index} appears twice";
                }
            }
            if (Xcrs[i].Index == 0 && (Xcrs[i].Value & 1) == 0)
            {
                return $"{who}: XCR0 is 0x{Xcrs[i].Value:x}, which lacks the x87 bit every XCR0 has";
            }
        }
        if (Debugregs.flags != 0)
        {
            return $"{who}: debugregs flags are 0x{Debugregs.flags:x}, expected 0";
        }
        if (Debugregs.dr6 >> 32 != 0 || Debugregs.dr7 >> 32 != 0)
        {
            return $"{who}: DR6 0x{Debugregs.dr6:x} or DR7 0x{Debugregs.dr7:x} sets bits above 31";
        }
        if (Lapic is not null && Lapic.Length != LapicSize)
        {
            return $"{who}: lapic is {Lapic.Length} bytes, expected {LapicSize}";
        }
        if (Msrs is null || Msrs.Length > Kvm.MaxMsrIndices)
        {
            return $"{who}: {Msrs?.Length.ToString() ?? "no"} MSRs, expected at most {Kvm.MaxMsrIndices}";
        }
        var seen = new HashSet<uint>(Msrs.Length);
        foreach (var msr in Msrs)
        {
            if (!seen.Add(msr.Index))
            {
                return $"{who}: MSR 0x{msr.Index:x} appears twice";
            }
        }
        if ((Events.flags & ~ValidEventFlags) != 0)
        {
            return $"{who}: vcpu events flags 0x{Events.flags:x} include bits KVM does not define";
        }
        if (Events.exception.nr > 31)
        {
            return $"{who}: the pending exception is vector {Events.exception.nr}, expected 0 to 31";
        }
        if (MpState > KvmAbi.KVM_MP_STATE_SIPI_RECEIVED)
        {
            return $"{who}: mp_state is {MpState}, expected 0 (runnable) to {KvmAbi.KVM_MP_STATE_SIPI_RECEIVED} (SIPI received)";
        }
        if (Lapic is null && MpState != KvmAbi.KVM_MP_STATE_RUNNABLE)
        {
            return $"{who}: mp_state is {MpState} but there is no LAPIC; without one only 0 (runnable) is possible";
        }
        if (TscKhz < MinTscKhz || TscKhz > MaxTscKhz)
        {
            return $"{who}: TSC frequency is {TscKhz} kHz, expected {MinTscKhz} to {MaxTscKhz}";
        }
        if (Cpuid is null || Cpuid.Length > MaxCpuidEntries)
        {
            return $"{who}: {Cpuid?.Length.ToString() ?? "no"} CPUID entries, expected at most {MaxCpuidEntries}";
        }
        var leaves = new HashSet<(uint, uint)>(Cpuid.Length);
        foreach (var e in Cpuid)
        {
            if (!leaves.Add((e.function, e.index)))
            {
                return $"{who}: CPUID leaf 0x{e.function:x}.{e.index} appears twice";
            }
        }
        return null;
    }
}
