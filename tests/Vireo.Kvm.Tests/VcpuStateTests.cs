using Vireo.Interop;

namespace Vireo.Kvm.Tests;

/// <summary>VcpuState.Problem: a vCPU state read from a file is untrusted.</summary>
public class VcpuStateTests
{
    private static readonly VcpuState Valid = new()
    {
        Id = 1,
        Regs = new kvm_regs { rip = 0xfff0, rflags = 2 },
        Sregs = default,
        Xsave = new byte[4096],
        Xcrs = [new XcrValue(0, 0x7)],
        Debugregs = new kvm_debugregs { dr6 = 0xffff0ff0, dr7 = 0x400 },
        Lapic = new byte[1024],
        Msrs = [new MsrValue(0x10, 12345), new MsrValue(0x174, 0x10)],
        Events = default,
        MpState = KvmAbi.KVM_MP_STATE_HALTED,
        TscKhz = 2_445_404,
        Cpuid = [new kvm_cpuid_entry2 { function = 0 }, new kvm_cpuid_entry2 { function = 7, index = 0 }, new kvm_cpuid_entry2 { function = 7, index = 1 }],
    };

    [Fact]
    public void A_well_formed_state_has_no_problem()
    {
        Assert.Null(Valid.Problem());
        Assert.Null((Valid with { Lapic = null, MpState = 0, Cpuid = [], Msrs = [], Xcrs = [], Xsave = new byte[11008] }).Problem());
    }

    public static TheoryData<string, string> Bad => new()
    {
        { "lapic 1000", "vcpu 1: lapic is 1000 bytes, expected 1024" },
        { "xsave 100", "vcpu 1: the XSAVE area is 100 bytes, expected a multiple of 4 from 4096 to 65536" },
        { "xsave 4097", "vcpu 1: the XSAVE area is 4097 bytes, expected a multiple of 4 from 4096 to 65536" },
        { "xsave 1 MiB", "vcpu 1: the XSAVE area is 1048576 bytes, expected a multiple of 4 from 4096 to 65536" },
        { "17 xcrs", "vcpu 1: 17 XCRs, expected at most 16" },
        { "xcr twice", "vcpu 1: XCR0 appears twice" },
        { "xcr0 without x87", "vcpu 1: XCR0 is 0x6, which lacks the x87 bit every XCR0 has" },
        { "debugregs flags", "vcpu 1: debugregs flags are 0x1, expected 0" },
        { "dr7 high", "vcpu 1: DR6 0xffff0ff0 or DR7 0x100000400 sets bits above 31" },
        { "100k msrs", "vcpu 1: 100000 MSRs, expected at most 4096" },
        { "msr twice", "vcpu 1: MSR 0x174 appears twice" },
        { "event flags", "vcpu 1: vcpu events flags 0x100 include bits KVM does not define" },
        { "exception 200", "vcpu 1: the pending exception is vector 200, expected 0 to 31" },
        { "mp_state 9", "vcpu 1: mp_state is 9, expected 0 (runnable) to 4 (SIPI received)" },
        { "halted without lapic", "vcpu 1: mp_state is 3 but there is no LAPIC; without one only 0 (runnable) is possible" },
        { "tsc 0", "vcpu 1: TSC frequency is 0 kHz, expected 1000 to 20000000" },
        { "tsc 100 GHz", "vcpu 1: TSC frequency is 100000000 kHz, expected 1000 to 20000000" },
        { "300 cpuid", "vcpu 1: 300 CPUID entries, expected at most 256" },
        { "cpuid twice", "vcpu 1: CPUID leaf 0x7.1 appears twice" },
        { "id -1", "vcpu -1: the id is outside 0 to 4095" },
        { "id 5000", "vcpu 5000: the id is outside 0 to 4095" },
    };

    [Theory]
    [MemberData(nameof(Bad))]
    public void A_malformed_state_is_named(string broken, string expected)
    {
        VcpuState state = broken switch
        {
            "lapic 1000" => Valid with { Lapic = new byte[1000] },
            "xsave 100" => Valid with { Xsave = new byte[100] },
            "xsave 4097" => Valid with { Xsave = new byte[4097] },
            "xsave 1 MiB" => Valid with { Xsave = new byte[1 << 20] },
            "17 xcrs" => Valid with { Xcrs = Enumerable.Range(0, 17).Select(i => new XcrValue((uint)i, 1)).ToArray() },
            "xcr twice" => Valid with { Xcrs = [new XcrValue(0, 7), new XcrValue(0, 7)] },
            "xcr0 without x87" => Valid with { Xcrs = [new XcrValue(0, 6)] },
            "debugregs flags" => Valid with { Debugregs = Valid.Debugregs with { flags = 1 } },
            "dr7 high" => Valid with { Debugregs = Valid.Debugregs with { dr7 = 0x1_0000_0400 } },
            "100k msrs" => Valid with { Msrs = Enumerable.Range(0, 100_000).Select(i => new MsrValue((uint)i, 0)).ToArray() },
            "msr twice" => Valid with { Msrs = [.. Valid.Msrs, new MsrValue(0x174, 0)] },
            "event flags" => Valid with { Events = new kvm_vcpu_events { flags = 0x100 } },
            "exception 200" => Valid with { Events = new kvm_vcpu_events { exception = new kvm_vcpu_events_exception { nr = 200 } } },
            "mp_state 9" => Valid with { MpState = 9 },
            "halted without lapic" => Valid with { Lapic = null },
            "tsc 0" => Valid with { TscKhz = 0 },
            "tsc 100 GHz" => Valid with { TscKhz = 100_000_000 },
            "300 cpuid" => Valid with { Cpuid = Enumerable.Range(0, 300).Select(i => new kvm_cpuid_entry2 { function = (uint)i }).ToArray() },
            "cpuid twice" => Valid with { Cpuid = [.. Valid.Cpuid, new kvm_cpuid_entry2 { function = 7, index = 1 }] },
            "id -1" => Valid with { Id = -1 },
            "id 5000" => Valid with { Id = 5000 },
            _ => throw new ArgumentException(broken),
        };
        Assert.Equal(expected, state.Problem());
    }
}
