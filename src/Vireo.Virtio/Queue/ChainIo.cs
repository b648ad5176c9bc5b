using Vireo.Memory;

namespace Vireo.Virtio.Queue;

/// <summary>Copies between host spans and the readable or writable buffers of a validated chain.</summary>
public static class ChainIo
{
    /// <summary>Copies device-readable bytes, skipping the first <paramref name="skip"/>, into <paramref name="dest"/>; returns the count.</summary>
    public static int Read(GuestMemory memory, ReadOnlySpan<Buffer> buffers, ulong skip, Span<byte> dest)
    {
        int copied = 0;
        foreach (var b in buffers)
        {
            if (b.DeviceWritable || copied == dest.Length)
            {
                continue;
            }
            if (skip >= b.Length)
            {
                skip -= b.Length;
                continue;
            }
            var src = memory.GetSpan(new GuestAddress(b.Address + skip), b.Length - skip);
            skip = 0;
            int n = Math.Min(src.Length, dest.Length - copied);
            src[..n].CopyTo(dest[copied..]);
            copied += n;
        }
        return copied;
    }

    /// <summary>Copies <paramref name="src"/> into the device-writable buffers after skipping <paramref name="skip"/> of them; returns the count.</summary>
    public static int Write(GuestMemory memory, ReadOnlySpan<Buffer> buffers, ulong skip, ReadOnlySpan<byte> src)
    {
        int copied = 0;
        foreach (var b in buffers)
        {
            if (!b.DeviceWritable || copied == src.Length)
            {
                continue;
            }
            if (skip >= b.Length)
            {
                skip -= b.Length;
                continue;
            }
            var dest = memory.GetSpan(new GuestAddress(b.Address + skip), b.Length - skip);
            skip = 0;
            int n = Math.Min(dest.Length, src.Length - copied);
            src.Slice(copied, n).CopyTo(dest);
            copied += n;
        }
        return copied;
    }
}
