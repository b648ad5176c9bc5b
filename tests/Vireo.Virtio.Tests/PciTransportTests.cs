using System.Buffers.Binary;
using Vireo.Devices.Pci;
using Vireo.Memory;
using Vireo.Virtio.Rng;
using Vireo.Virtio.Transport;
using static Vireo.Virtio.Tests.DriverRing;

namespace Vireo.Virtio.Tests;

public class PciTransportTests : IDisposable
{
    private sealed class Msi : IMsiTarget
    {
        private readonly Dictionary<int, (ulong, uint)> _routes = [];
        public readonly List<(ulong, uint)> Sent = [];
        public void Route(int vector, ulong address, uint data) => _routes[vector] = (address, data);
        public void Signal(int vector) => Sent.Add(_routes[vector]);
    }

    private sealed class Line : ILevelInterrupt
    {
        public bool Level;
        public void Set(bool asserted) => Level = asserted;
    }

    private const ulong Bar = 0xc001_0000;
    private readonly GuestMemory _memory = NewMemory();
    private readonly Msi _msi = new();
    private readonly Line _intx = new();
    private readonly VirtioRng _rng = new();
    private readonly PciTransport _t;

    public PciTransportTests() => _t = new PciTransport(_rng, _memory, _msi, _intx, Bar, 17);

    public void Dispose() => _memory.Dispose();

    private uint Cfg32(int off)
    {
        var b = new byte[4];
        _t.ReadConfig(off, b);
        return BinaryPrimitives.ReadUInt32LittleEndian(b);
    }

    private void Bar32(ulong off, uint v)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, v);
        _t.Write(off, b);
    }

    private uint BarRead(ulong off, int size = 4)
    {
        var b = new byte[4];
        _t.Read(off, b.AsSpan(0, size));
        return BinaryPrimitives.ReadUInt32LittleEndian(b);
    }

    [Fact]
    public void One_write_across_queue_select_and_a_queues_fields_applies_to_the_queue_it_selects()
    {
        // Found by fuzz/run pci: an 8-byte write at 0x14 (status, queue_select, queue_size,
        // queue_msix_vector) indexed the vectors with the select it had just made out of range.
        var wide = new byte[8];
        BinaryPrimitives.WriteUInt16LittleEndian(wide.AsSpan(2), 5); // queue_select 5: rng has one queue
        BinaryPrimitives.WriteUInt16LittleEndian(wide.AsSpan(6), 0); // queue_msix_vector 0
        _t.Write(0x14, wide);
        Assert.Equal(5u, BarRead(0x16, 2));
        Assert.Equal(0u, BarRead(0x18, 2)); // a queue that is not there reads as size 0
        // Selecting queue 0 in the same write as its size sets queue 0's size.
        BinaryPrimitives.WriteUInt16LittleEndian(wide.AsSpan(2), 0);
        BinaryPrimitives.WriteUInt16LittleEndian(wide.AsSpan(4), 4);
        BinaryPrimitives.WriteUInt16LittleEndian(wide.AsSpan(6), 0xffff);
        _t.Write(0x14, wide);
        Assert.Equal(4u, BarRead(0x18, 2));
    }

    /// <summary>What a driver does through the common config: negotiate VERSION_1, set up queue 0 at the ring, go.</summary>
    private void StartDriverWithQueue0(ushort? vector)
    {
        _t.Write(0x14, [1]);
        _t.Write(0x14, [3]);
        Bar32(0x08, 1);
        Bar32(0x0c, 1);                                         // VERSION_1 (bit 32)
        _t.Write(0x14, [3 | 8]);
        Assert.Equal(8u, BarRead(0x14, 1) & 8);
        _t.Write(0x16, [0, 0]);                                 // queue 0
        _t.Write(0x18, [8, 0]);
        if (vector is { } v)
        {
            _t.Write(0x1a, [(byte)v, 0]);
        }
        Bar32(0x20, (uint)DescAddr);
        Bar32(0x28, (uint)AvailAddr);
        Bar32(0x30, (uint)UsedAddr);
        _t.Write(0x1c, [1, 0]);
        _t.Write(0x14, [3 | 8 | 4]);
    }

    [Fact]
    public void Config_space_is_what_linux_virtio_pci_looks_for()
    {
        Assert.Equal(0x1044_1af4u, Cfg32(0));          // virtio 1.0 rng: 0x1040 + 4
        Assert.Equal(1u, Cfg32(8) & 0xff);              // revision 1: modern only
        Assert.Equal(0x10u, (Cfg32(4) >> 16) & 0x10);   // capabilities list
        Assert.Equal((uint)Bar | 4, Cfg32(0x10));       // 64-bit memory BAR
        var types = new List<uint>();
        for (int ptr = (int)(Cfg32(0x34) & 0xff); ptr != 0; ptr = (int)((Cfg32(ptr) >> 8) & 0xff))
        {
            uint cap = Cfg32(ptr);
            types.Add((cap & 0xff) == 0x09 ? cap >> 24 : 0x100 | (cap & 0xff));
        }
        Assert.Equal([1u, 2u, 3u, 4u, 0x111u], types);  // common, notify, ISR, device, then MSI-X
        Assert.Equal((uint)_t.VectorCount - 1, (Cfg32(0x84) >> 16) & 0x7ff);
        Assert.Equal(17u, Cfg32(0x3c) & 0xff);
    }

    [Fact]
    public void Bar_sizing_reads_back_the_size_and_a_move_is_reported()
    {
        var moves = new List<(ulong?, ulong?)>();
        _t.BarChanged = (o, n) => moves.Add((o, n));
        _t.WriteConfig(0x04, [0x06, 0x00]);   // memory decoding on
        _t.WriteConfig(0x04, [0x00, 0x00]);   // off, as Linux does while sizing
        _t.WriteConfig(0x10, [0xff, 0xff, 0xff, 0xff]);
        Assert.Equal(~(uint)(PciTransport.BarSize - 1) | 4, Cfg32(0x10));
        _t.WriteConfig(0x10, [0x00, 0x00, 0x02, 0xc0]); // 0xc0020000
        _t.WriteConfig(0x04, [0x06, 0x00]);
        Assert.Equal([((ulong?)null, (ulong?)Bar), ((ulong?)Bar, (ulong?)null), ((ulong?)null, (ulong?)0xc002_0000)], moves);
    }

    [Fact]
    public void A_request_through_common_config_is_served_and_interrupts_by_msix()
    {
        var ring = new DriverRing(_memory, 8);
        _t.WriteConfig(0x87, [0x80]);                          // MSI-X enable
        Bar32(PciTransport.MsixTableOffset + 16, 0xfee0_0000);  // vector 1: address
        Bar32(PciTransport.MsixTableOffset + 24, 0x41);         // data
        Bar32(PciTransport.MsixTableOffset + 28, 0);            // unmasked
        StartDriverWithQueue0(vector: 1);
        ring.SetDesc(0, 0x40000, 32, WRITE, 0);
        ring.Publish(0);
        _t.Write(PciTransport.NotifyOffset + 0 * PciTransport.NotifyMultiplier, [0, 0]);
        Assert.Equal((0u, 32u), ring.Used(0));
        Assert.Equal([(0xfee0_0000UL, 0x41u)], _msi.Sent);
        Assert.False(_intx.Level);
    }

    [Fact]
    public void Without_msix_the_isr_raises_intx_until_read()
    {
        var ring = new DriverRing(_memory, 8);
        StartDriverWithQueue0(vector: null);
        ring.SetDesc(0, 0x40000, 32, WRITE, 0);
        ring.Publish(0);
        _t.Write(PciTransport.NotifyOffset, [0, 0]);
        Assert.True(_intx.Level);
        Assert.Equal(1u, BarRead(PciTransport.IsrOffset, 1));
        Assert.False(_intx.Level);
        Assert.Equal(0u, BarRead(PciTransport.IsrOffset, 1));
    }

    [Fact]
    public void Out_of_range_vectors_read_back_as_no_vector_and_junk_writes_are_harmless()
    {
        _t.Write(0x10, [0x99, 0x00]);
        Assert.Equal(0xffffu, BarRead(0x10, 2));
        var rng = new Random(3);
        for (int i = 0; i < 20_000; i++)
        {
            var data = new byte[rng.Next(1, 9)];
            rng.NextBytes(data);
            ulong offset = (ulong)rng.Next(0, (int)PciTransport.BarSize);
            if (rng.Next(2) == 0)
            {
                _t.Write(offset, data);
            }
            else
            {
                _t.Read(offset, data);
            }
            _t.WriteConfig(rng.Next(0, 256 - data.Length), data);
        }
    }
}
