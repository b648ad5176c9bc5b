using System.Buffers.Binary;
using Vireo.Memory;
using Vireo.Virtio.Queue;

namespace Vireo.Virtio.Tests;

/// <summary>The driver's side of a split queue, laid out in guest memory as a guest driver would.</summary>
internal sealed class DriverRing
{
    public const ulong DescAddr = 0x10000, AvailAddr = 0x20000, UsedAddr = 0x30000;
    public const ushort NEXT = 1, WRITE = 2, INDIRECT = 4;

    private readonly GuestMemory _memory;
    private ushort _availIdx;

    public ushort Size { get; }

    public DriverRing(GuestMemory memory, ushort size = 16)
    {
        _memory = memory;
        Size = size;
    }

    public QueueState State(bool eventIdx = false, bool indirect = true) =>
        new(Size, true, DescAddr, AvailAddr, UsedAddr, 0, 0, eventIdx, indirect);

    public void SetDesc(int index, ulong addr, uint len, ushort flags, ushort next, ulong table = DescAddr)
    {
        var d = _memory.GetSpan(new GuestAddress(table + (ulong)index * 16), 16);
        BinaryPrimitives.WriteUInt64LittleEndian(d, addr);
        BinaryPrimitives.WriteUInt32LittleEndian(d[8..], len);
        BinaryPrimitives.WriteUInt16LittleEndian(d[12..], flags);
        BinaryPrimitives.WriteUInt16LittleEndian(d[14..], next);
    }

    /// <summary>Makes chain <paramref name="head"/> available and returns the new avail index.</summary>
    public ushort Publish(ushort head)
    {
        _memory.WriteObj(new GuestAddress(AvailAddr + 4 + 2UL * (ushort)(_availIdx % Size)), head);
        _availIdx++;
        _memory.WriteObj(new GuestAddress(AvailAddr + 2), _availIdx);
        return _availIdx;
    }

    public void SetAvailIdx(ushort idx)
    {
        _availIdx = idx;
        _memory.WriteObj(new GuestAddress(AvailAddr + 2), idx);
    }

    public ushort UsedIdx => _memory.ReadObj<ushort>(new GuestAddress(UsedAddr + 2));

    public (uint Id, uint Len) Used(int slot) =>
        (_memory.ReadObj<uint>(new GuestAddress(UsedAddr + 4 + 8UL * (ulong)slot)),
         _memory.ReadObj<uint>(new GuestAddress(UsedAddr + 8 + 8UL * (ulong)slot)));

    public void SetUsedEvent(ushort value) => _memory.WriteObj(new GuestAddress(AvailAddr + 4 + 2UL * Size), value);

    public ushort AvailEvent => _memory.ReadObj<ushort>(new GuestAddress(UsedAddr + 4 + 8UL * Size));

    public static GuestMemory NewMemory() => new([GuestRegion.Allocate(new GuestAddress(0), 1 << 20)]);
}
