namespace Vireo.Devices.Tests;

public class Serial16550Tests
{
    private sealed class CountingIrq : IInterruptLine
    {
        public int Count;
        public void Trigger() => Interlocked.Increment(ref Count);
    }

    private readonly List<byte> _out = [];
    private readonly CountingIrq _irq = new();
    private readonly Serial16550 _uart;

    public Serial16550Tests() => _uart = new Serial16550(_out.Add, _irq);

    private byte In(ulong reg)
    {
        var b = new byte[1];
        _uart.Read(reg, b);
        return b[0];
    }

    private void Out(ulong reg, byte v) => _uart.Write(reg, [v]);

    [Fact]
    public void Transmits_bytes_and_is_always_ready_to_send()
    {
        Assert.Equal(0x60, In(5) & 0x60); // THRE | TEMT
        Out(0, (byte)'h');
        Out(0, (byte)'i');
        Assert.Equal("hi"u8.ToArray(), _out.ToArray());
    }

    [Fact]
    public void Receives_host_input_with_data_ready_and_an_interrupt()
    {
        Out(1, 0x01); // IER: received data available
        Assert.Equal(0, In(5) & 1);
        Assert.Equal(2, _uart.Enqueue("ok"u8));
        Assert.Equal(1, _irq.Count);
        Assert.Equal(1, In(5) & 1);
        Assert.Equal(0x04, In(2) & 0x0f); // IIR: RDA
        Assert.Equal((byte)'o', In(0));
        Assert.Equal((byte)'k', In(0));
        Assert.Equal(0, In(5) & 1);
        Assert.Equal(0x01, In(2) & 0x0f); // nothing pending
    }

    [Fact]
    public void Thre_interrupt_fires_when_enabled_and_clears_on_iir_read()
    {
        Out(1, 0x02);
        Assert.Equal(1, _irq.Count);
        Assert.Equal(0x02, In(2) & 0x0f);
        Assert.Equal(0x01, In(2) & 0x0f);
        Out(0, (byte)'x');
        Assert.Equal(2, _irq.Count);
        Assert.Equal(0x02, In(2) & 0x0f);
    }

    [Fact]
    public void Divisor_latch_and_scratch_register_hold_their_values()
    {
        Out(3, 0x80); // DLAB
        Out(0, 0x01);
        Out(1, 0x02);
        Assert.Equal((1, 2), (In(0), In(1)));
        Out(3, 0x03);
        Assert.Equal(0x03, In(3));
        Out(7, 0x5a);
        Assert.Equal(0x5a, In(7));
        Assert.Empty(_out); // the divisor writes were not transmitted
    }

    [Fact]
    public void Loopback_echoes_data_and_modem_lines_as_the_8250_probe_expects()
    {
        Out(4, 0x10 | 0x0a); // LOOP | RTS | OUT2
        Assert.Equal(0x90, In(6) & 0xf0); // CTS | DCD
        Out(0, 0x42);
        Assert.Empty(_out);
        Assert.Equal(0x42, In(0));
    }

    [Fact]
    public void Fifo_reset_drops_pending_input_and_capacity_is_bounded()
    {
        Assert.Equal(Serial16550.RxCapacity, _uart.Enqueue(new byte[Serial16550.RxCapacity + 10]));
        Assert.Equal(0, _uart.Enqueue([1]));
        Out(2, 0x03);
        Assert.Equal(0, _uart.PendingInput);
        Assert.Equal(0xc0, In(2) & 0xc0); // FIFOs enabled
    }

    [Fact]
    public void Wide_accesses_are_ignored_safely()
    {
        var b = new byte[4];
        _uart.Read(0, b);
        Assert.Equal(new byte[] { 0xff, 0xff, 0xff, 0xff }, b);
        _uart.Write(0, [1, 2]);
        Assert.Empty(_out);
    }
}
