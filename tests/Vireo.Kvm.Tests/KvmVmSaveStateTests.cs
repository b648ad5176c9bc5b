using System.Buffers.Binary;
using System.Diagnostics;
using Vireo.Interop;
using Vireo.Tests;

namespace Vireo.Kvm.Tests;

/// <summary>KvmVm.SaveState and RestoreState: the clock, the PICs and IOAPIC, and the PIT, into a fresh VM.</summary>
public class KvmVmSaveStateTests
{
    private static readonly byte[] Halt = [0xf4];
    private const int PicImr = 2, IoapicRedirtbl = 24; // offsets in kvm_pic_state and kvm_ioapic_state

    private static BareVm Programmed()
    {
        var vm = new BareVm(Halt, irqchip: true, pit: true);
        byte[] master = vm.Vm.GetIrqchip(KvmAbi.KVM_IRQCHIP_PIC_MASTER);
        master[PicImr] = 0xfa; // only IRQ 0 and 2 unmasked
        vm.Vm.SetIrqchip(KvmAbi.KVM_IRQCHIP_PIC_MASTER, master);
        byte[] ioapic = vm.Vm.GetIrqchip(KvmAbi.KVM_IRQCHIP_IOAPIC);
        BinaryPrimitives.WriteUInt64LittleEndian(ioapic.AsSpan(IoapicRedirtbl + 8 * 4), 0x0300_0000_0001_0024); // pin 4: vector 0x24, masked, to APIC 3
        vm.Vm.SetIrqchip(KvmAbi.KVM_IRQCHIP_IOAPIC, ioapic);
        var pit = vm.Vm.GetPit2();
        pit.channel0.count = 0x1234;
        pit.channel0.mode = 2;     // rate generator
        pit.channel0.rw_mode = 3;  // lobyte/hibyte
        pit.channel0.gate = 1;
        pit.channel2.mode = 3;
        pit.channel2.count = 0x533;
        vm.Vm.SetPit2(pit);
        return vm;
    }

    private static object Channel(kvm_pit_channel_state c) => (c.count, c.mode, c.rw_mode, c.gate, c.bcd, c.read_state, c.write_state);

    [KvmFact]
    public void Irqchips_pit_and_clock_restore_into_a_fresh_vm()
    {
        using var source = Programmed();
        var saved = source.Vm.SaveState();
        Assert.Null(saved.Problem());
        Assert.True(saved.HasIrqchip);
        Assert.Equal((byte)0xfa, saved.PicMaster![PicImr]);
        Assert.Equal((0x1234u, (byte)2), (saved.Pit!.Value.channel0.count, saved.Pit.Value.channel0.mode));

        using var target = new BareVm(Halt, irqchip: true, pit: true);
        var clock = Stopwatch.StartNew();
        target.Vm.RestoreState(saved);
        var again = target.Vm.SaveState();
        long elapsedNs = clock.Elapsed.Ticks * 100;

        Assert.Equal(saved.PicMaster, again.PicMaster);
        Assert.Equal(saved.PicSlave, again.PicSlave);
        Assert.Equal(saved.Ioapic, again.Ioapic);
        var (a, b) = (saved.Pit.Value, again.Pit!.Value);
        Assert.Equal(Channel(a.channel0), Channel(b.channel0));
        Assert.Equal(Channel(a.channel1), Channel(b.channel1));
        Assert.Equal(Channel(a.channel2), Channel(b.channel2));
        Assert.Equal(a.flags, b.flags);
        // The clock resumes where it was saved: it moved on by at most the time the restore took.
        long jump = (long)(again.Clock.clock - saved.Clock.clock);
        Assert.InRange(jump, 0, elapsedNs + 5_000_000);
    }

    [KvmFact]
    public void The_clock_can_catch_up_by_the_wall_time_since_the_save_where_the_host_gives_it()
    {
        using var source = new BareVm(Halt, irqchip: true);
        var saved = source.Vm.SaveState();
        Thread.Sleep(30);
        using var target = new BareVm(Halt, irqchip: true);
        if (!saved.ClockHasRealtime)
        {
            // This host's clocksource is not the TSC (nested KVM): KVM gives no wall time, and says so.
            Assert.Contains("no wall-clock time", Assert.Throws<InvalidOperationException>(() => target.Vm.RestoreState(saved, advanceClockByRealtime: true)).Message);
            target.Vm.RestoreState(saved);
            Assert.InRange((long)(target.Vm.GetClock().clock - saved.Clock.clock), 0, 5_000_000);
            return;
        }
        target.Vm.RestoreState(saved, advanceClockByRealtime: true);
        Assert.InRange((long)(target.Vm.GetClock().clock - saved.Clock.clock), 30_000_000, 100_000_000);
    }

    [KvmFact]
    public void A_vm_without_the_saved_devices_or_vcpus_is_refused()
    {
        using var source = Programmed();
        var saved = source.Vm.SaveState();

        using var bare = new BareVm(Halt);
        Assert.Contains("the saved VM has an in-kernel irqchip and this one has none",
            Assert.Throws<InvalidOperationException>(() => bare.Vm.RestoreState(saved)).Message);

        using var noPit = new BareVm(Halt, irqchip: true);
        Assert.Contains("the saved VM has an in-kernel PIT and this one has none",
            Assert.Throws<InvalidOperationException>(() => noPit.Vm.RestoreState(saved)).Message);

        using var kvm = Kvm.Open();
        using var empty = kvm.CreateVm();
        empty.CreateIrqchip();
        empty.CreatePit2();
        Assert.Contains("after creating its vCPUs", Assert.Throws<InvalidOperationException>(() => empty.RestoreState(saved)).Message);

        Assert.Contains("IOAPIC state is 100 bytes, expected 512",
            Assert.Throws<ArgumentException>(() => source.Vm.RestoreState(saved with { Ioapic = new byte[100] })).Message);
    }

    [KvmFact]
    public void A_bare_vm_saves_only_its_clock()
    {
        using var vm = new BareVm(Halt);
        var saved = vm.Vm.SaveState();
        Assert.False(saved.HasIrqchip);
        Assert.Null(saved.Pit);
        Assert.Null(saved.Problem());
        vm.Vm.RestoreState(saved);
    }
}
