using Vireo.Devices.Pci;

namespace Vireo.Devices.Tests;

/// <summary>Each legacy device's state: saved, restored into a fresh device, the same registers read back; bad state refused, nothing changed.</summary>
public class DeviceStateTests
{
    private static byte In(IBusDevice d, ulong reg)
    {
        var b = new byte[1];
        d.Read(reg, b);
        return b[0];
    }

    [Fact]
    public void A_uart_restored_from_state_has_its_registers_and_unread_input()
    {
        var a = new Serial16550(_ => { }, null);
        a.Write(3, [0x83]);            // LCR: DLAB, 8 bits
        a.Write(0, [0x01]);            // divisor latch low
        a.Write(3, [0x03]);
        a.Write(7, [0x5a]);            // scratch
        a.Write(1, [0x01]);            // IER
        a.Enqueue("left"u8);
        var state = a.SaveState();

        var b = new Serial16550(_ => { }, null);
        Assert.True(b.TryRestore(state, out var error), error);
        Assert.Equal(0x03, In(b, 3));
        Assert.Equal(0x5a, In(b, 7));
        Assert.Equal(0x01, In(b, 1));
        Assert.Equal(4, b.PendingInput);
        Assert.Equal((byte)'l', In(b, 0));
        Assert.Equal(state with { Rx = [] }, b.SaveState() with { Rx = [] });
    }

    [Fact]
    public void A_uart_refuses_more_input_than_its_buffer_and_keeps_what_it_had()
    {
        var uart = new Serial16550(_ => { }, null);
        uart.Enqueue("x"u8);
        var bad = uart.SaveState() with { Rx = new byte[Serial16550.RxCapacity + 1] };
        Assert.False(uart.TryRestore(bad, out var error));
        Assert.Contains("rx holds 4097 bytes", error);
        Assert.Equal(1, uart.PendingInput);
        Assert.False(uart.TryRestore(bad with { Rx = null! }, out error));
        Assert.Contains("rx is missing", error);
    }

    [Fact]
    public void The_cmos_keeps_its_bytes_and_index_and_refuses_a_wrong_size()
    {
        var a = new CmosRtc(64 << 20, 0);
        a.Write(0, [0x40]);
        a.Write(1, [0x99]);
        var state = a.SaveState();
        var b = new CmosRtc(16 << 20, 0);
        Assert.True(b.TryRestore(state, out _));
        Assert.Equal(0x40, In(b, 0));
        Assert.Equal(0x99, In(b, 1));
        Assert.False(b.TryRestore(state with { Ram = new byte[12] }, out var error));
        Assert.Contains("ram is 12 bytes", error);
        Assert.False(b.TryRestore(state with { Index = 200 }, out error));
        Assert.Contains("index 200", error);
        Assert.Equal(0x40, In(b, 0));
    }

    [Fact]
    public void The_pm_registers_and_the_i8042_and_the_pci_address_come_back()
    {
        var pm = new AcpiPm(() => { }, () => { }, null);
        pm.Write(AcpiPm.EventBlockOffset + 2, [0x00, 0x01]); // enable the power button
        pm.PressPowerButton();
        var pm2 = new AcpiPm(() => { }, () => { }, null);
        pm2.Restore(pm.SaveState());
        Assert.Equal(pm.SaveState(), pm2.SaveState());

        var kbc = new I8042(() => { });
        kbc.Write(4, [0x20]); // read command byte: output full
        var kbc2 = new I8042(() => { });
        kbc2.Restore(kbc.SaveState());
        Assert.Equal(kbc.SaveState(), kbc2.SaveState());
        Assert.Equal(In(kbc, 4), In(kbc2, 4));

        var root = new PciRoot();
        root.PortDevice.Write(0, [0x00, 0x08, 0x00, 0x80]);
        var root2 = new PciRoot();
        root2.Restore(root.SaveState());
        Assert.Equal(0x80000800u, root2.SaveState().Address);
    }
}
