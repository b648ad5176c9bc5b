namespace Vireo.Devices.Tests;

public class BusTests
{
    private sealed class Recorder : IBusDevice
    {
        public List<(ulong Offset, byte[] Data)> Writes { get; } = [];
        public void Read(ulong offset, Span<byte> data) => data.Fill((byte)offset);
        public void Write(ulong offset, ReadOnlySpan<byte> data) => Writes.Add((offset, data.ToArray()));
    }

    [Fact]
    public void Devices_see_offsets_into_their_own_range()
    {
        var bus = new Bus();
        var a = new Recorder();
        var b = new Recorder();
        bus.Insert(b, 0x3f8, 8);
        bus.Insert(a, 0x60, 5);
        Assert.True(bus.Write(0x3fb, [1]));
        Assert.Equal(3UL, b.Writes[0].Offset);
        Assert.Equal(new byte[] { 1 }, b.Writes[0].Data);
        var buf = new byte[1];
        Assert.True(bus.Read(0x64, buf));
        Assert.Equal(4, buf[0]);
        Assert.Equal([0x60UL, 0x3f8UL], bus.Ranges.Select(r => r.Base));
    }

    [Fact]
    public void Unclaimed_reads_are_all_ones_and_writes_are_dropped()
    {
        var bus = new Bus();
        bus.Insert(new Recorder(), 0x100, 4);
        var buf = new byte[2];
        Assert.False(bus.Read(0x104, buf));
        Assert.Equal(new byte[] { 0xff, 0xff }, buf);
        Assert.False(bus.Write(0xff, [1]));
        // An access that starts inside a range but runs past its end is not that device's.
        Assert.False(bus.Read(0x103, buf));
    }

    [Theory]
    [InlineData(0x100, 4)]
    [InlineData(0xfe, 4)]
    [InlineData(0x103, 1)]
    [InlineData(0x0, 0x1000)]
    public void Overlaps_are_refused(ulong @base, ulong length)
    {
        var bus = new Bus();
        bus.Insert(new Recorder(), 0x100, 4);
        Assert.Throws<InvalidOperationException>(() => bus.Insert(new Recorder(), @base, length));
    }

    [Fact]
    public void Empty_or_wrapping_ranges_are_refused()
    {
        var bus = new Bus();
        Assert.Throws<ArgumentException>(() => bus.Insert(new Recorder(), 0x10, 0));
        Assert.Throws<ArgumentException>(() => bus.Insert(new Recorder(), ulong.MaxValue, 2));
    }

    [Fact]
    public async Task Lookups_stay_correct_while_devices_are_inserted_concurrently()
    {
        var bus = new Bus();
        bus.Insert(new Recorder(), 0x10000, 1);
        using var cts = new CancellationTokenSource();
        var reader = Task.Run(() =>
        {
            var buf = new byte[1];
            while (!cts.IsCancellationRequested)
            {
                Assert.True(bus.Read(0x10000, buf));
            }
        });
        for (ulong i = 0; i < 500; i++)
        {
            bus.Insert(new Recorder(), i * 16, 8);
        }
        cts.Cancel();
        await reader;
        Assert.Equal(501, bus.Ranges.Count);
    }
}
