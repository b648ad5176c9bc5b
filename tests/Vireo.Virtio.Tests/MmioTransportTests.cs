using System.Buffers.Binary;
using Vireo.Devices;
using Vireo.Memory;
using Vireo.Virtio.Rng;
using Vireo.Virtio.Transport;
using static Vireo.Virtio.Tests.DriverRing;

namespace Vireo.Virtio.Tests;

public class MmioTransportTests : IDisposable
{
    private sealed class CountingIrq : IInterruptLine
    {
        public int Count;
        public void Trigger() => Count++;
    }

    private readonly GuestMemory _memory = NewMemory();
    private readonly CountingIrq _irq = new();
    private readonly VirtioRng _rng = new();
    private readonly MmioTransport _t;

    public MmioTransportTests() => _t = new MmioTransport(_rng, _memory, _irq);

    public void Dispose() => _memory.Dispose();

    private uint R(ulong off)
    {
        var b = new byte[4];
        _t.Read(off, b);
        return BinaryPrimitives.ReadUInt32LittleEndian(b);
    }

    private void W(ulong off, uint v)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, v);
        _t.Write(off, b);
    }

    private void Negotiate(ulong features)
    {
        W(0x070, 1);
        W(0x070, 3);
        W(0x024, 0);
        W(0x020, (uint)features);
        W(0x024, 1);
        W(0x020, (uint)(features >> 32));
        W(0x070, 3 | 8);
    }

    private void SetUpQueue(ushort size)
    {
        W(0x030, 0);
        W(0x038, size);
        W(0x080, (uint)DescAddr);
        W(0x090, (uint)AvailAddr);
        W(0x0a0, (uint)UsedAddr);
        W(0x044, 1);
    }

    [Fact]
    public void Identifies_as_a_modern_virtio_mmio_device()
    {
        Assert.Equal(0x74726976u, R(0x000));
        Assert.Equal(2u, R(0x004));
        Assert.Equal(VirtioConstants.DeviceRng, R(0x008));
        W(0x014, 1);
        Assert.Equal(1u, R(0x010) & 1); // VERSION_1 is bit 32
        W(0x030, 0);
        Assert.Equal(256u, R(0x034));
        W(0x030, 5);
        Assert.Equal(0u, R(0x034)); // no such queue
    }

    [Fact]
    public void Features_ok_is_refused_without_version_1_or_with_unknown_bits()
    {
        Negotiate(0);
        Assert.Equal(0u, R(0x070) & 8);
        W(0x070, 0);
        Negotiate(VirtioConstants.Bit(VirtioConstants.FeatureVersion1) | (1UL << 50));
        Assert.Equal(0u, R(0x070) & 8);
        W(0x070, 0);
        Negotiate(VirtioConstants.Bit(VirtioConstants.FeatureVersion1));
        Assert.Equal(8u, R(0x070) & 8);
    }

    [Fact]
    public void A_request_through_the_registers_is_served_with_an_interrupt()
    {
        var ring = new DriverRing(_memory, 8);
        Negotiate(VirtioConstants.Bit(VirtioConstants.FeatureVersion1));
        SetUpQueue(8);
        W(0x070, 3 | 8 | 4);
        Assert.False(_rng.Failed);
        ring.SetDesc(0, 0x40000, 64, WRITE, 0);
        ring.Publish(0);
        W(0x050, 0); // QueueNotify
        Assert.Equal((0u, 64u), ring.Used(0));
        Assert.Equal(1, _irq.Count);
        Assert.Equal(1u, R(0x060));
        W(0x064, 1);
        Assert.Equal(0u, R(0x060));
    }

    [Fact]
    public void A_queue_outside_memory_sets_needs_reset_and_a_reset_clears_it()
    {
        Negotiate(VirtioConstants.Bit(VirtioConstants.FeatureVersion1));
        W(0x030, 0);
        W(0x038, 8);
        W(0x080, 0xfffffff0);
        W(0x084, 0xffffffff);
        W(0x044, 1);
        W(0x070, 3 | 8 | 4);
        Assert.True(_rng.Failed);
        Assert.Equal(VirtioConstants.StatusNeedsReset, R(0x070) & VirtioConstants.StatusNeedsReset);
        Assert.Equal(2u, R(0x060) & 2); // configuration change interrupt
        W(0x070, 0);
        Assert.Equal(0u, R(0x070));
        Assert.False(_rng.Failed);
    }

    [Fact]
    public void Queue_registers_are_frozen_once_the_driver_is_running()
    {
        Negotiate(VirtioConstants.Bit(VirtioConstants.FeatureVersion1));
        SetUpQueue(8);
        W(0x070, 3 | 8 | 4);
        W(0x038, 2);
        W(0x044, 0);
        Assert.Equal(1u, R(0x044));
    }

    [Fact]
    public void Odd_widths_and_offsets_are_harmless()
    {
        var one = new byte[1];
        _t.Read(0x000, one);
        _t.Write(0x070, one);
        _t.Read(0x0ff, new byte[4]);
        _t.Read(0x800, new byte[8]);
        _t.Write(0x050, new byte[2]);
        Assert.Equal(0u, R(0x070));
    }
}
