namespace Vireo.Devices.Tests;

public class LegacyDeviceTests
{
    private static byte In(IBusDevice d, ulong offset)
    {
        var b = new byte[1];
        d.Read(offset, b);
        return b[0];
    }

    [Fact]
    public void I8042_reset_command_stops_the_vm()
    {
        int resets = 0;
        var kbd = new I8042(() => resets++);
        kbd.Write(4, [0xaa]);
        Assert.Equal(1, In(kbd, 4) & 1);
        Assert.Equal(0x55, In(kbd, 0));
        Assert.Equal(0, resets);
        kbd.Write(4, [0xfe]);
        Assert.Equal(1, resets);
    }

    [Fact]
    public void I8042_command_byte_round_trips_and_output_port_reset_line_resets()
    {
        int resets = 0;
        var kbd = new I8042(() => resets++);
        kbd.Write(4, [0x60]);
        kbd.Write(0, [0x47]);
        kbd.Write(4, [0x20]);
        Assert.Equal(0x47, In(kbd, 0));
        kbd.Write(4, [0xd1]);
        kbd.Write(0, [0x00]); // bit 0 low: reset
        Assert.Equal(1, resets);
    }

    [Fact]
    public void Rtc_reports_a_fixed_clock_in_bcd_then_binary()
    {
        var now = new DateTime(2026, 11, 21, 20, 45, 59, DateTimeKind.Utc);
        var rtc = new CmosRtc(256UL << 20, 0, () => now);
        byte Reg(byte index)
        {
            rtc.Write(0, [index]);
            return In(rtc, 1);
        }
        Assert.Equal((0x59, 0x45, 0x20, 0x21, 0x11, 0x26, 0x20), (Reg(0), Reg(2), Reg(4), Reg(7), Reg(8), Reg(9), Reg(0x32)));
        Assert.Equal(7, Reg(6)); // Saturday
        Assert.Equal(0, Reg(0x0a) & 0x80);
        Assert.Equal(0x80, Reg(0x0d));
        rtc.Write(0, [0x0b]);
        rtc.Write(1, [0x06]); // binary, 24-hour
        Assert.Equal((59, 45, 20), (Reg(0), Reg(2), Reg(4)));
        rtc.Write(0, [0x00]);
        rtc.Write(1, [0x11]); // the guest cannot move the host's clock
        Assert.Equal(59, Reg(0));
    }

    [Fact]
    public void Rtc_cmos_holds_memory_sizes_and_masks_the_nmi_bit()
    {
        var rtc = new CmosRtc(3UL << 30, 2UL << 30);
        byte Reg(byte index)
        {
            rtc.Write(0, [index]);
            return In(rtc, 1);
        }
        int above16M = Reg(0x34) | (Reg(0x35) << 8);
        Assert.Equal((int)(((3UL << 30) - (16UL << 20)) >> 16), above16M);
        int above4G = Reg(0x5b) | (Reg(0x5c) << 8) | (Reg(0x5d) << 16);
        Assert.Equal((int)((2UL << 30) >> 16), above4G);
        rtc.Write(0, [0x80 | 0x0d]);
        Assert.Equal(0x0d, In(rtc, 0));
    }

    [Fact]
    public void Debug_exit_port_reports_the_guest_status_for_each_width()
    {
        var codes = new List<int>();
        var port = new DebugExitPort(codes.Add);
        port.Write(0, [7]);
        port.Write(0, [0x34, 0x12]);
        port.Write(0, [1, 0, 0, 0]);
        Assert.Equal([7, 0x1234, 1], codes);
    }

    [Fact]
    public void Post_code_port_keeps_the_last_code()
    {
        var post = new PostCodePort();
        Assert.Equal(-1, post.LastCode);
        post.Write(0, [0x12]);
        post.Write(0, [0x34]);
        Assert.Equal((0x34, 2L), (post.LastCode, post.Writes));
    }
}
