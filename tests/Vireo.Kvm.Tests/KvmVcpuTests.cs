using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Vireo.Interop;
using Vireo.Tests;

namespace Vireo.Kvm.Tests;

public class KvmVcpuTests
{
    // mov al, 0x42 ; out 0x10, al ; hlt
    private static readonly byte[] OutThenHalt = [0xb0, 0x42, 0xe6, 0x10, 0xf4];

    [KvmFact]
    public void Port_io_and_halt_exits_carry_their_data()
    {
        using var vm = new BareVm(OutThenHalt);
        Assert.Equal(KvmAbi.KVM_EXIT_IO, vm.RunToExit());
        var exit = vm.Vcpu.Exit;
        Assert.Equal((KvmAbi.KVM_EXIT_IO_OUT, (byte)1, (ushort)0x10, 1u), (exit.Io.direction, exit.Io.size, exit.Io.port, exit.Io.count));
        Assert.Equal(new byte[] { 0x42 }, exit.IoData.ToArray());
        Assert.Equal(KvmAbi.KVM_EXIT_HLT, vm.RunToExit());
        Assert.Equal(0x1005UL, vm.Vcpu.GetRegs().rip);
    }

    [KvmFact]
    public void An_ioeventfd_takes_the_write_inside_kvm()
    {
        using var vm = new BareVm(OutThenHalt);
        using var doorbell = new EventFd(nonBlocking: true);
        vm.Vm.RegisterIoeventfd(doorbell, 0x10, 1, pio: true);
        Assert.Equal(KvmAbi.KVM_EXIT_HLT, vm.RunToExit()); // no KVM_EXIT_IO: KVM signalled the eventfd
        Assert.Equal(1UL, doorbell.Consume());
    }

    [KvmFact]
    public void Mmio_outside_ram_exits_with_address_and_data()
    {
        // mov ax, 0x8000 ; mov ds, ax ; mov byte [0x10], 0x5a ; hlt  -- writes 0x80010, past 256 KiB of RAM
        using var vm = new BareVm([0xb8, 0x00, 0x80, 0x8e, 0xd8, 0xc6, 0x06, 0x10, 0x00, 0x5a, 0xf4], ramBytes: 256 << 10);
        Assert.Equal(KvmAbi.KVM_EXIT_MMIO, vm.RunToExit());
        var exit = vm.Vcpu.Exit;
        Assert.True(exit.MmioIsWrite);
        Assert.Equal(0x80010UL, exit.MmioAddress);
        Assert.Equal(new byte[] { 0x5a }, exit.MmioData.ToArray());
        Assert.Equal(KvmAbi.KVM_EXIT_HLT, vm.RunToExit());
    }

    [KvmFact]
    public void Immediate_exit_returns_eintr_without_entering_the_guest()
    {
        using var vm = new BareVm(OutThenHalt);
        vm.Vcpu.ImmediateExit = true;
        Assert.False(vm.Vcpu.TryRun(out int errno));
        Assert.Equal(Libc.EINTR, errno);
        Assert.Equal(0x1000UL, vm.Vcpu.GetRegs().rip);
        vm.Vcpu.ImmediateExit = false;
        Assert.Equal(KvmAbi.KVM_EXIT_IO, vm.RunToExit());
    }

    [KvmFact]
    public void Dirty_log_reports_the_page_the_guest_wrote()
    {
        // mov byte [0x3000], 0x77 ; hlt
        using var vm = new BareVm([0xc6, 0x06, 0x00, 0x30, 0x77, 0xf4], logDirty: true);
        Span<ulong> bitmap = stackalloc ulong[256 / 64];
        vm.Vm.GetDirtyLog(0, bitmap); // clear what loading the code dirtied
        Assert.Equal(KvmAbi.KVM_EXIT_HLT, vm.RunToExit());
        bitmap.Clear();
        vm.Vm.GetDirtyLog(0, bitmap);
        Assert.Equal(1UL << 3, bitmap[0] & ~(1UL << 1)); // page 3 (0x3000); page 1 may be touched by the fetch
        Assert.Equal((byte)0x77, vm.Memory.ReadObj<byte>(new Memory.GuestAddress(0x3000)));
    }

    [KvmFact]
    public void Dirty_logging_turns_on_for_a_slot_registered_without_it()
    {
        // mov byte [0x3000], 0x77 ; hlt ; a migration turns the log on under a running guest.
        using var vm = new BareVm([0xc6, 0x06, 0x00, 0x30, 0x77, 0xf4]);
        var bitmap = new ulong[256 / 64];
        Assert.False(vm.Vm.LogsDirty);
        Assert.ThrowsAny<Exception>(() => vm.Vm.GetRegionDirtyLog(0, bitmap)); // no log on this slot yet
        vm.Vm.SetDirtyLogging(true);
        Assert.True(vm.Vm.LogsDirty);
        Assert.Equal(KvmAbi.KVM_EXIT_HLT, vm.RunToExit());
        vm.Vm.GetRegionDirtyLog(0, bitmap);
        Assert.NotEqual(0UL, bitmap[0] & (1UL << 3));
        Assert.Throws<ArgumentException>(() => vm.Vm.GetRegionDirtyLog(0, bitmap.AsSpan(0, 1))); // too short for 256 pages
        vm.Vm.SetDirtyLogging(false);
        Assert.False(vm.Vm.LogsDirty);
    }

    [KvmFact]
    public void Register_state_round_trips()
    {
        using var vm = new BareVm(OutThenHalt);
        var regs = vm.Vcpu.GetRegs();
        regs.rax = 0x1122334455667788;
        regs.r15 = 42;
        vm.Vcpu.SetRegs(regs);
        Assert.Equal((0x1122334455667788UL, 42UL), (vm.Vcpu.GetRegs().rax, vm.Vcpu.GetRegs().r15));

        var fpu = vm.Vcpu.GetFpu();
        fpu.fcw = 0x27f;
        fpu.mxcsr = 0x1f80;
        vm.Vcpu.SetFpu(fpu);
        Assert.Equal((ushort)0x27f, vm.Vcpu.GetFpu().fcw);

        // XSAVE round-trips on its own (this host's KVM_GET_FPU and KVM_GET_XSAVE disagree on
        // MXCSR, so the two are not cross-checked). MXCSR sits at offset 24 of the legacy area.
        var xsave = vm.Vcpu.GetXsave();
        var area = MemoryMarshal.AsBytes(new Span<kvm_xsave>(ref xsave));
        BinaryPrimitives.WriteUInt32LittleEndian(area[24..], 0x1f00);
        area[512] |= 0x3; // XSTATE_BV: x87 and SSE present, so the legacy area is loaded
        vm.Vcpu.SetXsave(xsave);
        var back = vm.Vcpu.GetXsave();
        Assert.Equal(0x1f00u, BinaryPrimitives.ReadUInt32LittleEndian(MemoryMarshal.AsBytes(new ReadOnlySpan<kvm_xsave>(in back))[24..]));

        vm.Vcpu.SetMsrs([new kvm_msr_entry { index = 0x174, data = 0x10 }]); // IA32_SYSENTER_CS
        var msrs = vm.Vcpu.GetMsrs([0x174]);
        Assert.Equal(0x10UL, Assert.Single(msrs).data);

        Assert.Equal(KvmAbi.KVM_MP_STATE_RUNNABLE, vm.Vcpu.GetMpState());
    }

    [KvmFact]
    public void Supported_cpuid_has_the_basic_leaves()
    {
        using var kvm = Kvm.Open();
        var cpuid = kvm.GetSupportedCpuid();
        Assert.Contains(cpuid, e => e.function == 0);
        Assert.Contains(cpuid, e => e.function == 1);
        Assert.Contains(cpuid, e => e.function == 0x4000_0000); // KVM's signature leaf
        Assert.True(kvm.MaxVcpus >= 1);
    }

    [KvmFact]
    public void The_lapic_lint_pins_are_set_as_a_bios_would()
    {
        using var kvm = Kvm.Open();
        using var vm = kvm.CreateVm();
        vm.CreateIrqchip();
        using var vcpu = vm.CreateVcpu(0);
        Lapic.ConfigureLint(vcpu);
        var state = vcpu.GetLapic();
        Assert.Equal(Lapic.DeliveryExtInt, Lapic.Get(state, Lapic.RegLvt0) & 0x700);
        Assert.Equal(Lapic.DeliveryNmi, Lapic.Get(state, Lapic.RegLvt1) & 0x700);
    }

    [Fact]
    public void A_missing_device_is_reported_as_unavailable()
    {
        var e = Assert.Throws<KvmUnavailableException>(() => Kvm.Open("/nonexistent/kvm"));
        Assert.Contains("cannot open /nonexistent/kvm", e.Message);
    }
}
