using Vireo.Memory;
using Vireo.Virtio.Queue;
using static Vireo.Virtio.Tests.DriverRing;

namespace Vireo.Virtio.Tests;

public class SplitQueueTests : IDisposable
{
    private readonly GuestMemory _memory = NewMemory();
    private readonly DriverRing _ring;

    public SplitQueueTests() => _ring = new DriverRing(_memory);

    public void Dispose() => _memory.Dispose();

    private SplitQueue Create(bool eventIdx = false, bool indirect = true)
    {
        Assert.True(SplitQueue.TryCreate(_memory, _ring.State(eventIdx, indirect), out var q, out var e), e.ToString());
        return q!;
    }

    private QueueError PopError(SplitQueue q)
    {
        Assert.False(q.TryPop(out _, out var error));
        return error;
    }

    [Fact]
    public void A_chain_of_readable_then_writable_buffers_is_popped_and_completed()
    {
        var q = Create();
        _ring.SetDesc(0, 0x40000, 16, NEXT, 1);
        _ring.SetDesc(1, 0x41000, 512, NEXT | WRITE, 2);
        _ring.SetDesc(2, 0x42000, 1, WRITE, 0);
        _ring.Publish(0);
        Assert.True(q.TryPop(out var chain, out _));
        Assert.Equal(0, chain.Head);
        Assert.Equal([new Queue.Buffer(0x40000, 16, false), new Queue.Buffer(0x41000, 512, true), new Queue.Buffer(0x42000, 1, true)], chain.Buffers.ToArray());
        Assert.Equal((16UL, 513UL), (chain.ReadableLength, chain.WritableLength));
        q.AddUsed(chain.Head, 513);
        Assert.Equal(1, _ring.UsedIdx);
        Assert.Equal((0u, 513u), _ring.Used(0));
        Assert.False(q.TryPop(out _, out var none));
        Assert.Equal(QueueError.None, none);
    }

    [Fact]
    public void Indirect_tables_are_followed()
    {
        var q = Create();
        const ulong table = 0x50000;
        _ring.SetDesc(0, 0x40000, 16, NEXT, 1, table);
        _ring.SetDesc(1, 0x41000, 1, WRITE, 0, table);
        _ring.SetDesc(3, table, 32, INDIRECT, 0);
        _ring.Publish(3);
        Assert.True(q.TryPop(out var chain, out _));
        Assert.Equal(3, chain.Head);
        Assert.Equal(2, chain.Buffers.Length);
        Assert.True(chain.Buffers[1].DeviceWritable);
    }

    [Fact]
    public void Event_idx_publishes_avail_event_and_suppresses_interrupts()
    {
        var q = Create(eventIdx: true);
        _ring.SetDesc(0, 0x40000, 8, WRITE, 0);
        _ring.SetUsedEvent(1); // interrupt only once used passes index 1
        for (int i = 0; i < 3; i++)
        {
            _ring.Publish(0);
            Assert.True(q.TryPop(out var c, out _));
            Assert.Equal((ushort)(i + 1), _ring.AvailEvent);
            q.AddUsed(c.Head, 8);
            bool irq = q.ShouldInterrupt();
            Assert.Equal(i == 1, irq); // used idx goes 1, 2, 3: only the step to 2 crosses used_event+1
        }
    }

    [Fact]
    public void Without_event_idx_the_no_interrupt_flag_is_honoured()
    {
        var q = Create();
        _ring.SetDesc(0, 0x40000, 8, WRITE, 0);
        _ring.Publish(0);
        Assert.True(q.TryPop(out var c, out _));
        q.AddUsed(c.Head, 8);
        Assert.True(q.ShouldInterrupt());
        _memory.WriteObj(new GuestAddress(AvailAddr), (ushort)1); // VIRTQ_AVAIL_F_NO_INTERRUPT
        _ring.Publish(0);
        Assert.True(q.TryPop(out c, out _));
        q.AddUsed(c.Head, 8);
        Assert.False(q.ShouldInterrupt());
    }

    [Theory]
    [InlineData(0, QueueError.SizeNotPowerOfTwo)]
    [InlineData(12, QueueError.SizeNotPowerOfTwo)]
    public void Bad_sizes_are_refused(ushort size, QueueError expected)
    {
        var s = _ring.State() with { Size = size };
        Assert.False(SplitQueue.TryCreate(_memory, s, out _, out var e));
        Assert.Equal(expected, e);
    }

    [Theory]
    [InlineData(0x10008, AvailAddr, UsedAddr, QueueError.RingMisaligned)]
    [InlineData(DescAddr, 0x20001, UsedAddr, QueueError.RingMisaligned)]
    [InlineData(DescAddr, AvailAddr, 0x30002, QueueError.RingMisaligned)]
    [InlineData(0xfff10, AvailAddr, UsedAddr, QueueError.RingOutsideMemory)]
    [InlineData(DescAddr, 0x200000, UsedAddr, QueueError.RingOutsideMemory)]
    [InlineData(DescAddr, AvailAddr, 0xffffffff_fffffff0, QueueError.RingOutsideMemory)]
    public void Rings_out_of_place_are_refused(ulong desc, ulong avail, ulong used, QueueError expected)
    {
        var s = _ring.State() with { DescTable = desc, AvailRing = avail, UsedRing = used };
        Assert.False(SplitQueue.TryCreate(_memory, s, out _, out var e));
        Assert.Equal(expected, e);
    }

    [Fact]
    public void Avail_index_jumping_past_the_queue_size_is_an_error()
    {
        var q = Create();
        _ring.SetAvailIdx(17);
        Assert.Equal(QueueError.AvailIndexJumped, PopError(q));
    }

    [Fact]
    public void Head_out_of_range()
    {
        var q = Create();
        _ring.Publish(16);
        Assert.Equal(QueueError.HeadOutOfRange, PopError(q));
    }

    [Fact]
    public void Next_out_of_range()
    {
        var q = Create();
        _ring.SetDesc(0, 0x40000, 8, NEXT, 99);
        _ring.Publish(0);
        Assert.Equal(QueueError.NextOutOfRange, PopError(q));
    }

    [Fact]
    public void A_descriptor_loop_is_caught()
    {
        var q = Create();
        _ring.SetDesc(0, 0x40000, 8, NEXT, 1);
        _ring.SetDesc(1, 0x40000, 8, NEXT, 0);
        _ring.Publish(0);
        Assert.Equal(QueueError.ChainTooLong, PopError(q));
    }

    [Theory]
    [InlineData(0x200000UL, 8U)]              // past the end of RAM
    [InlineData(0xffff0UL, 0x100U)]           // runs off the end
    [InlineData(0xffffffff_ffffff00UL, 0x200U)] // address + length wraps
    public void Buffers_outside_memory_are_refused(ulong addr, uint len)
    {
        var q = Create();
        _ring.SetDesc(0, addr, len, 0, 0);
        _ring.Publish(0);
        Assert.Equal(QueueError.BufferOutsideMemory, PopError(q));
    }

    [Fact]
    public void A_readable_buffer_after_a_writable_one_is_refused()
    {
        var q = Create();
        _ring.SetDesc(0, 0x40000, 8, NEXT | WRITE, 1);
        _ring.SetDesc(1, 0x41000, 8, 0, 0);
        _ring.Publish(0);
        Assert.Equal(QueueError.WriteBeforeRead, PopError(q));
    }

    [Fact]
    public void Indirect_rules_are_enforced()
    {
        var q = Create(indirect: false);
        _ring.SetDesc(0, 0x50000, 16, INDIRECT, 0);
        _ring.Publish(0);
        Assert.Equal(QueueError.IndirectNotNegotiated, PopError(q));

        q = Create();
        _ring.SetAvailIdx(0);
        _ring.SetDesc(0, 0x50000, 16, INDIRECT | NEXT, 1);
        _ring.Publish(0);
        Assert.Equal(QueueError.IndirectWithNext, PopError(q));

        foreach (var (addr, len) in new[] { (0x50000UL, 0U), (0x50000UL, 20U), (0x50008UL, 16U), (0xffff0UL, 32U) })
        {
            q = Create();
            _ring.SetAvailIdx(0);
            _ring.SetDesc(0, addr, len, INDIRECT, 0);
            _ring.Publish(0);
            Assert.Equal(QueueError.IndirectTableInvalid, PopError(q));
        }

        q = Create();
        _ring.SetAvailIdx(0);
        _ring.SetDesc(0, 0x50000, 16, INDIRECT, 0);
        _ring.SetDesc(0, 0x50000, 16, INDIRECT, 0, table: 0x50000);
        _ring.Publish(0);
        Assert.Equal(QueueError.IndirectNested, PopError(q));
    }
    private ushort UsedFlags => _memory.ReadObj<ushort>(new GuestAddress(UsedAddr));

    [Fact]
    public void Notifications_are_suppressed_with_the_used_flag_and_resumed()
    {
        var q = Create();
        Assert.Equal(0, UsedFlags);
        q.SetNotification(false);
        Assert.Equal(1, UsedFlags); // VIRTQ_USED_F_NO_NOTIFY
        Assert.False(q.HasAvailable);
        _ring.SetDesc(0, 0x40000, 16, 0, 0);
        _ring.Publish(0);
        // The driver added a chain without notifying: after resuming, the device must look again.
        q.SetNotification(true);
        Assert.Equal(0, UsedFlags);
        Assert.True(q.HasAvailable);
        Assert.True(q.TryPop(out _, out _));
        Assert.False(q.HasAvailable);
    }

    [Fact]
    public void With_event_idx_a_suppressed_queue_leaves_avail_event_behind()
    {
        var q = Create(eventIdx: true);
        _ring.SetDesc(0, 0x40000, 16, 0, 0);
        _ring.Publish(0);
        Assert.True(q.TryPop(out _, out _));
        Assert.Equal(1, _ring.AvailEvent);
        q.SetNotification(false);
        _ring.Publish(0);
        Assert.True(q.TryPop(out _, out _));
        Assert.Equal(1, _ring.AvailEvent);   // not advanced: the driver's next avail index passes it and does not kick
        Assert.Equal(0, UsedFlags);           // the flag is not used when EVENT_IDX is negotiated
        q.SetNotification(true);
        Assert.Equal(2, _ring.AvailEvent);   // the next chain notifies
    }
}
