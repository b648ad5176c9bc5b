using Vireo.Interop;

namespace Vireo.Kvm.Tests;

/// <summary>KvmVmState.Problem: a VM state read from a file is untrusted.</summary>
public class KvmVmStateTests
{
    private static kvm_pit_state2 Pit()
    {
        var pit = new kvm_pit_state2();
        pit.channel0 = new kvm_pit_channel_state { count = 0x10000, mode = 3, rw_mode = 3, gate = 1 };
        return pit;
    }

    private static readonly KvmVmState Valid = new()
    {
        Clock = new kvm_clock_data { clock = 123_456_789, flags = KvmAbi.KVM_CLOCK_TSC_STABLE },
        PicMaster = new byte[512],
        PicSlave = new byte[512],
        Ioapic = new byte[512],
        Pit = Pit(),
    };

    [Fact]
    public void A_well_formed_state_has_no_problem()
    {
        Assert.Null(Valid.Problem());
        Assert.Null((Valid with { PicMaster = null, PicSlave = null, Ioapic = null, Pit = null }).Problem());
        Assert.Null((Valid with { Pit = Pit() with { channel1 = new kvm_pit_channel_state { mode = 0xff } } }).Problem()); // KVM's reset value
    }

    public static TheoryData<string, string> Bad => new()
    {
        { "short master PIC", "vm: master PIC state is 16 bytes, expected 512" },
        { "long IOAPIC", "vm: IOAPIC state is 4096 bytes, expected 512" },
        { "two chips of three", "vm: the irqchip state has some of the master PIC, slave PIC and IOAPIC but not all three" },
        { "clock flags", "vm: clock flags 0x101 include bits KVM does not define" },
        { "pit flags", "vm: PIT flags 0x80 include bits KVM does not define" },
        { "pit count", "vm: PIT channel 1: count 70000 exceeds 65536" },
        { "pit mode", "vm: PIT channel 0: mode 7, expected 0 to 5 (or 255, never programmed)" },
        { "pit rw mode", "vm: PIT channel 2: access mode 9, expected 0 to 3" },
        { "pit gate", "vm: PIT channel 0: bcd 0 or gate 2 is not 0 or 1" },
    };

    [Theory]
    [MemberData(nameof(Bad))]
    public void A_malformed_state_is_named(string broken, string expected)
    {
        var pit = Pit();
        KvmVmState state = broken switch
        {
            "short master PIC" => Valid with { PicMaster = new byte[16] },
            "long IOAPIC" => Valid with { Ioapic = new byte[4096] },
            "two chips of three" => Valid with { PicSlave = null },
            "clock flags" => Valid with { Clock = new kvm_clock_data { flags = 0x101 } },
            "pit flags" => Valid with { Pit = pit with { flags = 0x80 } },
            "pit count" => Valid with { Pit = pit with { channel1 = new kvm_pit_channel_state { count = 70000 } } },
            "pit mode" => Valid with { Pit = pit with { channel0 = pit.channel0 with { mode = 7 } } },
            "pit rw mode" => Valid with { Pit = pit with { channel2 = new kvm_pit_channel_state { rw_mode = 9 } } },
            "pit gate" => Valid with { Pit = pit with { channel0 = pit.channel0 with { gate = 2 } } },
            _ => throw new ArgumentException(broken),
        };
        Assert.Equal(expected, state.Problem());
    }
}
