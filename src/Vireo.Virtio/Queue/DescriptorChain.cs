namespace Vireo.Virtio.Queue;

/// <summary>One buffer of a chain: a guest address and length, readable or writable by the device.</summary>
public readonly record struct Buffer(ulong Address, uint Length, bool DeviceWritable);

/// <summary>
/// A validated descriptor chain: its head index (for the used ring) and its buffers, device-readable
/// ones first, as the spec requires. Buffers live in a reusable array owned by the queue.
/// </summary>
public readonly ref struct DescriptorChain
{
    public ushort Head { get; }
    public ReadOnlySpan<Buffer> Buffers { get; }

    internal DescriptorChain(ushort head, ReadOnlySpan<Buffer> buffers)
    {
        Head = head;
        Buffers = buffers;
    }

    /// <summary>Total bytes of the device-readable buffers.</summary>
    public ulong ReadableLength => ChainIo.Length(Buffers, writable: false);

    /// <summary>Total bytes of the device-writable buffers.</summary>
    public ulong WritableLength => ChainIo.Length(Buffers, writable: true);
}
