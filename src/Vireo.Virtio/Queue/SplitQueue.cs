using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Vireo.Memory;

namespace Vireo.Virtio.Queue;

/// <summary>
/// The device side of a virtio 1.2 split virtqueue (§2.7), with indirect descriptors and
/// EVENT_IDX. Everything read from the guest is checked: ring placement once in
/// <see cref="TryCreate"/>, and every chain in <see cref="TryPop"/>. A bad value is a
/// <see cref="QueueError"/>, never an exception and never an access outside guest RAM.
/// One thread drives a queue; popping and completing allocate nothing.
/// </summary>
public sealed class SplitQueue
{
    public const ushort MaxSize = 32768;
    private const ushort DescNext = 1, DescWrite = 2, DescIndirect = 4;
    private const ushort AvailNoInterrupt = 1, UsedNoNotify = 1;
    private const int DescSize = 16;

    private readonly GuestMemory _memory;
    private QueueState _state;
    private readonly Buffer[] _buffers;
    private ushort _signalledUsed;
    private bool _notifySuppressed;

    public QueueState State => _state;
    public ushort Size => _state.Size;

    private SplitQueue(GuestMemory memory, in QueueState state)
    {
        _memory = memory;
        _state = state;
        _signalledUsed = state.NextUsed;
        // A chain visits at most Size direct descriptors, one of which may be an indirect table
        // of at most MaxSize entries.
        _buffers = new Buffer[state.Indirect ? state.Size + MaxSize : state.Size];
    }

    /// <summary>Validates the driver's configuration and builds the runtime queue.</summary>
    public static bool TryCreate(GuestMemory memory, in QueueState state, out SplitQueue? queue, out QueueError error)
    {
        queue = null;
        error = Validate(memory, state);
        if (error != QueueError.None)
        {
            return false;
        }
        queue = new SplitQueue(memory, state);
        return true;
    }

    private static QueueError Validate(GuestMemory memory, in QueueState s)
    {
        if (s.Size == 0 || (s.Size & (s.Size - 1)) != 0)
        {
            return QueueError.SizeNotPowerOfTwo;
        }
        if (s.Size > MaxSize)
        {
            return QueueError.SizeTooLarge;
        }
        if (s.DescTable % 16 != 0 || s.AvailRing % 2 != 0 || s.UsedRing % 4 != 0)
        {
            return QueueError.RingMisaligned;
        }
        ulong eventWord = s.EventIdx ? 2UL : 0;
        if (!memory.IsValidRange(new GuestAddress(s.DescTable), (ulong)s.Size * DescSize)
            || !memory.IsValidRange(new GuestAddress(s.AvailRing), 4 + 2UL * s.Size + eventWord)
            || !memory.IsValidRange(new GuestAddress(s.UsedRing), 4 + 8UL * s.Size + eventWord))
        {
            return QueueError.RingOutsideMemory;
        }
        return QueueError.None;
    }

    /// <summary>
    /// Takes the next available chain. False with <see cref="QueueError.None"/> when the ring is
    /// empty; false with an error when the guest's ring or chain is invalid.
    /// </summary>
    public bool TryPop(out DescriptorChain chain, out QueueError error)
    {
        chain = default;
        ushort availIdx = ReadVolatileU16(_state.AvailRing + 2);
        ushort pending = (ushort)(availIdx - _state.NextAvail);
        if (pending == 0)
        {
            error = QueueError.None;
            return false;
        }
        if (pending > _state.Size)
        {
            error = QueueError.AvailIndexJumped;
            return false;
        }
        ushort head = ReadU16(_state.AvailRing + 4 + 2UL * (ushort)(_state.NextAvail % _state.Size));
        if (head >= _state.Size)
        {
            error = QueueError.HeadOutOfRange;
            return false;
        }
        error = WalkChain(head, out int count);
        if (error != QueueError.None)
        {
            return false;
        }
        _state.NextAvail++;
        if (_state.EventIdx && !_notifySuppressed)
        {
            // avail_event: tell the driver it need not notify until it passes this index.
            WriteVolatileU16(_state.UsedRing + 4 + 8UL * _state.Size, _state.NextAvail);
        }
        chain = new DescriptorChain(head, _buffers.AsSpan(0, count));
        return true;
    }

    private QueueError WalkChain(ushort head, out int count)
    {
        count = 0;
        ulong table = _state.DescTable;
        uint tableSize = _state.Size;
        bool inIndirect = false, sawWritable = false;
        uint index = head;
        int visited = 0;
        while (true)
        {
            if (++visited > tableSize)
            {
                return QueueError.ChainTooLong;
            }
            var d = _memory.GetSpan(new GuestAddress(table + index * DescSize), DescSize);
            ulong addr = BinaryPrimitives.ReadUInt64LittleEndian(d);
            uint len = BinaryPrimitives.ReadUInt32LittleEndian(d[8..]);
            ushort flags = BinaryPrimitives.ReadUInt16LittleEndian(d[12..]);
            ushort next = BinaryPrimitives.ReadUInt16LittleEndian(d[14..]);

            if ((flags & DescIndirect) != 0)
            {
                if (!_state.Indirect)
                {
                    return QueueError.IndirectNotNegotiated;
                }
                if (inIndirect)
                {
                    return QueueError.IndirectNested;
                }
                if ((flags & DescNext) != 0)
                {
                    return QueueError.IndirectWithNext;
                }
                if (len == 0 || len % DescSize != 0 || len / DescSize > MaxSize || addr % 16 != 0
                    || !_memory.IsValidRange(new GuestAddress(addr), len))
                {
                    return QueueError.IndirectTableInvalid;
                }
                inIndirect = true;
                table = addr;
                tableSize = len / DescSize;
                index = 0;
                visited = 0;
                continue;
            }

            if (!_memory.IsValidRange(new GuestAddress(addr), len))
            {
                return QueueError.BufferOutsideMemory;
            }
            bool writable = (flags & DescWrite) != 0;
            if (!writable && sawWritable)
            {
                return QueueError.WriteBeforeRead;
            }
            sawWritable |= writable;
            _buffers[count++] = new Buffer(addr, len, writable);

            if ((flags & DescNext) == 0)
            {
                return QueueError.None;
            }
            if (next >= tableSize)
            {
                return QueueError.NextOutOfRange;
            }
            index = next;
        }
    }

    /// <summary>True when the driver has made a chain available that has not been popped yet.</summary>
    public bool HasAvailable
    {
        get
        {
            Interlocked.MemoryBarrier(); // a change to notifications is visible before the index is read again
            return ReadVolatileU16(_state.AvailRing + 2) != _state.NextAvail;
        }
    }

    /// <summary>
    /// Asks the driver to stop (false) or resume (true) notifying this queue, as QEMU and Linux's
    /// vhost do while a device is busy or has buffers in hand (§2.7.10): VIRTQ_USED_F_NO_NOTIFY,
    /// or with EVENT_IDX an avail_event left behind. After resuming, the caller checks
    /// <see cref="HasAvailable"/> again: the driver may have added a chain without notifying.
    /// </summary>
    public void SetNotification(bool enabled)
    {
        if (_notifySuppressed != enabled)
        {
            return;
        }
        _notifySuppressed = !enabled;
        if (_state.EventIdx)
        {
            if (enabled)
            {
                WriteVolatileU16(_state.UsedRing + 4 + 8UL * _state.Size, _state.NextAvail);
            }
            return;
        }
        WriteVolatileU16(_state.UsedRing, enabled ? (ushort)0 : UsedNoNotify);
    }

    /// <summary>Returns a chain to the driver with the number of bytes written into it.</summary>
    public void AddUsed(ushort head, uint writtenLength)
    {
        ulong slot = _state.UsedRing + 4 + 8UL * (ushort)(_state.NextUsed % _state.Size);
        var e = _memory.GetSpan(new GuestAddress(slot), 8);
        BinaryPrimitives.WriteUInt32LittleEndian(e, head);
        BinaryPrimitives.WriteUInt32LittleEndian(e[4..], writtenLength);
        _memory.MarkDirty(new GuestAddress(slot), 8);
        _state.NextUsed++;
        // The entry must be visible before the index that publishes it.
        WriteVolatileU16(_state.UsedRing + 2, _state.NextUsed);
    }

    /// <summary>True when the driver wants an interrupt for the chains completed since the last one.</summary>
    public bool ShouldInterrupt()
    {
        Interlocked.MemoryBarrier(); // the used index is published before reading the driver's wish
        bool notify;
        if (_state.EventIdx)
        {
            ushort usedEvent = ReadVolatileU16(_state.AvailRing + 4 + 2UL * _state.Size);
            notify = (ushort)(_state.NextUsed - usedEvent - 1) < (ushort)(_state.NextUsed - _signalledUsed);
        }
        else
        {
            notify = (ReadVolatileU16(_state.AvailRing) & AvailNoInterrupt) == 0 && _state.NextUsed != _signalledUsed;
        }
        _signalledUsed = _state.NextUsed;
        return notify;
    }

    private ushort ReadU16(ulong address) =>
        BinaryPrimitives.ReadUInt16LittleEndian(_memory.GetSpan(new GuestAddress(address), 2));

    private ushort ReadVolatileU16(ulong address) =>
        Volatile.Read(ref Unsafe.As<byte, ushort>(ref MemoryMarshal.GetReference(_memory.GetSpan(new GuestAddress(address), 2))));

    private void WriteVolatileU16(ulong address, ushort value)
    {
        Volatile.Write(ref Unsafe.As<byte, ushort>(ref MemoryMarshal.GetReference(_memory.GetSpan(new GuestAddress(address), 2))), value);
        _memory.MarkDirty(new GuestAddress(address), 2);
    }
}
