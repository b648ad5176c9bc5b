using Vireo.Interop;
using Vireo.Tests;

namespace Vireo.Kvm.Tests;

/// <summary>KvmVcpu.SaveState and RestoreState on the real /dev/kvm, from one VM into a fresh one.</summary>
public class KvmVcpuStateTests
{
    // 0x1000: inc ax ; out 0x10, al ; jmp 0x1000  -- a counter the host sees at every OUT
    private static readonly byte[] Counter = [0x40, 0xe6, 0x10, 0xeb, 0xfb];

    private const uint MsrTsc = 0x10, MsrSysenterCs = 0x174, MsrSysenterEsp = 0x175, MsrStar = 0xc000_0081,
        MsrKernelGsBase = 0xc000_0102, MsrTscDeadline = 0x6e0, MsrKvmAsyncPfInt = 0x4b56_4d06;
    private const int ApicSvr = 0xf0, ApicLvtTimer = 0x320, ApicTimerDivide = 0x3e0;

    /// <summary>KVM_GET_SUPPORTED_CPUID with the TSC-deadline timer, which KVM's LAPIC emulates, as Machine does.</summary>
    private static kvm_cpuid_entry2[] GuestCpuid(Kvm kvm)
    {
        var cpuid = kvm.GetSupportedCpuid();
        for (int i = 0; i < cpuid.Length; i++)
        {
            if (cpuid[i].function == 1)
            {
                cpuid[i].ecx |= 1u << 24;
            }
        }
        return cpuid;
    }

    private static void RunToOut(BareVm vm, byte expectedAl)
    {
        Assert.Equal(KvmAbi.KVM_EXIT_IO, vm.RunToExit());
        Assert.Equal((ushort)0x10, vm.Vcpu.Exit.Io.port);
        Assert.Equal(new[] { expectedAl }, vm.Vcpu.Exit.IoData.ToArray());
    }

    /// <summary>A vCPU with an in-kernel LAPIC that has run the counter three times and carries distinctive state.</summary>
    private static BareVm Source(out ulong deadline)
    {
        var vm = new BareVm(Counter, irqchip: true);
        vm.Vcpu.SetCpuid(GuestCpuid(vm.Kvm));
        var regs = vm.Vcpu.GetRegs();
        regs.rbx = 0x1122_3344_5566_7788;
        regs.r15 = 0xfeed_f00d;
        vm.Vcpu.SetRegs(regs);
        for (byte i = 1; i <= 3; i++)
        {
            RunToOut(vm, i);
        }
        var lapic = vm.Vcpu.GetLapic();
        Lapic.Set(ref lapic, ApicSvr, 0x1ff);               // software-enabled, spurious vector 0xff
        Lapic.Set(ref lapic, ApicTimerDivide, 0xb);         // divide by 1
        Lapic.Set(ref lapic, ApicLvtTimer, 0x4_0000 | 0x1_0000 | 0xef); // TSC-deadline mode, masked, vector 0xef
        vm.Vcpu.SetLapic(lapic);
        ulong tsc = vm.Vcpu.GetMsrs([MsrTsc])[0].data;
        deadline = tsc + 1_000_000_000_000; // far in the future, and masked anyway
        vm.Vcpu.SetMsrs(
        [
            new kvm_msr_entry { index = MsrSysenterCs, data = 0x10 },
            new kvm_msr_entry { index = MsrSysenterEsp, data = 0x8000 },
            new kvm_msr_entry { index = MsrStar, data = 0x0023_0010_0000_0000 },
            new kvm_msr_entry { index = MsrKernelGsBase, data = 0xffff_8880_1234_5000 },
            new kvm_msr_entry { index = MsrTscDeadline, data = deadline },
        ]);
        var xcrs = vm.Vcpu.GetXcrs();
        xcrs.nr_xcrs = 1;
        xcrs.Set(0, new kvm_xcr { xcr = 0, value = 0x3 }); // x87 | SSE
        vm.Vcpu.SetXcrs(xcrs);
        var dr = vm.Vcpu.GetDebugregs();
        dr.SetDb(0, 0x1000);
        dr.SetDb(3, 0xdead_0000);
        dr.dr7 = 0x400; // no breakpoint enabled: the addresses are only carried
        vm.Vcpu.SetDebugregs(dr);
        return vm;
    }

    private static ulong Msr(VcpuState s, uint index) => Assert.Single(s.Msrs, m => m.Index == index).Value;

    [KvmFact]
    public void A_saved_vcpu_restores_into_a_fresh_vm_field_by_field_and_runs_on()
    {
        using var source = Source(out ulong deadline);
        var saved = source.Vcpu.SaveState();
        Assert.Null(saved.Problem());
        Assert.Equal(0x1122_3344_5566_7788UL, saved.Regs.rbx);
        Assert.Equal(3UL, saved.Regs.rax & 0xffff);
        Assert.Equal(deadline, Msr(saved, MsrTscDeadline));

        using var target = new BareVm(Counter, irqchip: true);
        target.Vcpu.RestoreState(saved);
        var again = target.Vcpu.SaveState();

        Assert.Equal(saved.Id, again.Id);
        Assert.Equal(StructBytes.Of(saved.Regs), StructBytes.Of(again.Regs));
        Assert.Equal(StructBytes.Of(saved.Sregs), StructBytes.Of(again.Sregs));
        Assert.Equal(saved.Xsave, again.Xsave);
        Assert.Equal(saved.Xcrs, again.Xcrs);
        Assert.Equal(StructBytes.Of(saved.Debugregs), StructBytes.Of(again.Debugregs));
        Assert.Equal(saved.Lapic, again.Lapic);
        Assert.Equal(StructBytes.Of(saved.Events), StructBytes.Of(again.Events));
        Assert.Equal(saved.MpState, again.MpState);
        Assert.Equal(saved.TscKhz, again.TscKhz);
        Assert.Equal(saved.Cpuid.Select(e => StructBytes.Of(e)), again.Cpuid.Select(e => StructBytes.Of(e)));
        Assert.Equal(saved.Msrs.Select(m => m.Index), again.Msrs.Select(m => m.Index));
        // Every MSR comes back as saved but the TSC, which ran on between the two reads.
        Assert.Equal(saved.Msrs.Where(m => m.Index != MsrTsc), again.Msrs.Where(m => m.Index != MsrTsc));
        ulong ticks = Msr(again, MsrTsc) - Msr(saved, MsrTsc);
        // A wrong restore jumps by the host's uptime or wraps backwards; a loaded machine takes a
        // few tens of milliseconds between the two reads. Five seconds tells the two apart.
        Assert.InRange(ticks, 0UL, saved.TscKhz * 5000UL);

        // The guest goes on counting from where it stopped.
        RunToOut(target, 4);
        RunToOut(target, 5);
        Assert.Equal(0x1122_3344_5566_7788UL, target.Vcpu.GetRegs().rbx);
    }

    [KvmFact]
    public void The_tsc_deadline_only_sticks_once_the_lapic_is_in_deadline_mode()
    {
        // Why RestoreState writes MSRs after the LAPIC: written before, the deadline is dropped.
        using var source = Source(out ulong deadline);
        var saved = source.Vcpu.SaveState();
        using var target = new BareVm(Counter, irqchip: true);
        target.Vcpu.SetCpuid(saved.Cpuid);
        target.Vcpu.SetMsrs([new kvm_msr_entry { index = MsrTscDeadline, data = deadline }]);
        Assert.Equal(0UL, target.Vcpu.GetMsrs([MsrTscDeadline])[0].data);
        target.Vcpu.RestoreState(saved with { Cpuid = [] }); // the CPUID is already in; RestoreState sets the LAPIC, then the MSR
        Assert.Equal(deadline, target.Vcpu.GetMsrs([MsrTscDeadline])[0].data);
    }

    [KvmFact]
    public void A_vcpu_without_an_irqchip_saves_no_lapic_and_restores()
    {
        using var source = new BareVm(Counter);
        RunToOut(source, 1);
        var saved = source.Vcpu.SaveState();
        Assert.Null(saved.Lapic);
        Assert.Empty(saved.Cpuid); // none was set
        Assert.Equal(source.Vcpu.XsaveSize, saved.Xsave.Length);
        Assert.True(saved.Xsave.Length >= VcpuState.MinXsaveSize);

        using var target = new BareVm(Counter);
        target.Vcpu.RestoreState(saved);
        RunToOut(target, 2);
    }

    [KvmFact]
    public void A_refused_msr_is_named()
    {
        using var source = new BareVm(Counter);
        var saved = source.Vcpu.SaveState();
        var bad = saved with { Msrs = [.. saved.Msrs, new MsrValue(0xdead_beef, 1)] };
        using var target = new BareVm(Counter);
        var e = Assert.Throws<InvalidOperationException>(() => target.Vcpu.RestoreState(bad));
        Assert.Contains("vcpu 0", e.Message);
        Assert.Contains("MSR 0xdeadbeef was refused", e.Message);
    }

    [KvmFact]
    public void State_from_another_vcpu_or_another_kind_of_vm_is_refused()
    {
        using var withLapic = new BareVm(Counter, irqchip: true);
        var saved = withLapic.Vcpu.SaveState();
        using var bare = new BareVm(Counter);
        Assert.Contains("had an in-kernel LAPIC and this VM has no irqchip",
            Assert.Throws<InvalidOperationException>(() => bare.Vcpu.RestoreState(saved)).Message);

        using var other = new BareVm(Counter, irqchip: true, vcpuId: 1);
        Assert.Contains("vcpu 1: the state was saved from vcpu 0",
            Assert.Throws<ArgumentException>(() => other.Vcpu.RestoreState(saved)).Message);

        Assert.Contains("lapic is 1000 bytes, expected 1024",
            Assert.Throws<ArgumentException>(() => withLapic.Vcpu.RestoreState(saved with { Lapic = new byte[1000] })).Message);
    }

    [KvmFact]
    public void The_msr_index_list_is_probed_down_to_what_a_vcpu_reads_and_takes_back()
    {
        using var bare = new BareVm(Counter);
        uint[] listed = bare.Kvm.GetMsrIndexList();
        Assert.Contains(MsrTsc, listed);
        Assert.Contains(MsrSysenterCs, listed);
        var readable = bare.Vcpu.GetReadableMsrs(listed).Select(e => e.index).ToArray();
        Assert.NotEmpty(readable);
        Assert.All(readable, i => Assert.Contains(i, listed));
        // Without an in-kernel LAPIC KVM reads MSR_KVM_ASYNC_PF_INT but refuses every write to it.
        var saved = bare.Vcpu.SaveState();
        Assert.All(saved.Msrs, m => Assert.Contains(m.Index, readable));
        Assert.DoesNotContain(saved.Msrs, m => m.Index == MsrKvmAsyncPfInt);
        using var withLapic = new BareVm(Counter, irqchip: true);
        Assert.Contains(withLapic.Vcpu.SaveState().Msrs, m => m.Index == MsrKvmAsyncPfInt);
    }

    [KvmFact]
    public void A_vcpu_running_the_hosts_cpuid_misses_no_feature_here()
    {
        using var vm = new BareVm(Counter, irqchip: true);
        vm.Vcpu.SetCpuid(GuestCpuid(vm.Kvm));
        var saved = vm.Vcpu.SaveState();
        Assert.NotEmpty(saved.Cpuid);
        Assert.Null(CpuFeatures.Missing(saved.Cpuid, vm.Kvm.GetSupportedCpuid()));
    }

    [KvmFact]
    public void The_supported_cpuid_is_asked_once_and_each_caller_gets_a_copy_of_its_own()
    {
        using var kvm = Kvm.Open();
        var first = kvm.GetSupportedCpuid();
        var second = kvm.GetSupportedCpuid();
        Assert.NotSame(first, second);
        Assert.Equal(StructBytes.OfArray(first), StructBytes.OfArray(second));
        first[0].eax ^= 0xffff_ffff; // a caller's edit (CpuidTemplate edits its copy) reaches no other caller
        Assert.Equal(StructBytes.OfArray(second), StructBytes.OfArray(kvm.GetSupportedCpuid()));
    }

    [KvmFact]
    public void A_restore_sets_the_saved_cpuid_unless_the_vcpu_was_made_with_those_very_entries()
    {
        using var source = Source(out _);
        var saved = source.Vcpu.SaveState();

        // Made with the same entries (a migration's destination): the restore leaves them, and they are the saved ones.
        using var same = new BareVm(Counter, irqchip: true);
        same.Vcpu.SetCpuid(saved.Cpuid);
        Assert.True(same.Vcpu.CpuidIs(saved.Cpuid));
        same.Vcpu.RestoreState(saved);
        Assert.Equal(StructBytes.OfArray(saved.Cpuid), StructBytes.OfArray(same.Vcpu.CpuidSet));
        RunToOut(same, 4);

        // Made with other entries: the saved ones replace them (a vCPU that has never run takes a second CPUID).
        var other = (kvm_cpuid_entry2[])saved.Cpuid.Clone();
        int leaf1 = Array.FindIndex(other, e => e.function == 1);
        other[leaf1].ecx &= ~(1u << 24); // no TSC-deadline timer
        using var different = new BareVm(Counter, irqchip: true);
        different.Vcpu.SetCpuid(other);
        Assert.False(different.Vcpu.CpuidIs(saved.Cpuid));
        different.Vcpu.RestoreState(saved);
        Assert.True(different.Vcpu.CpuidIs(saved.Cpuid));
        Assert.NotEqual(0u, different.Vcpu.GetCpuid().First(e => e.function == 1).ecx & (1u << 24)); // KVM has the saved ones
        RunToOut(different, 4);
    }
}
