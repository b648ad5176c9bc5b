using Vireo.Memory;

namespace Vireo.Virtio.Queue;

/// <summary>A run of a chain's bytes in guest memory.</summary>
public readonly record struct Piece(ulong Address, ulong Length);

/// <summary>Copies between host spans and the readable or writable buffers of a validated chain.</summary>
public static class ChainIo
{
    /// <summary>Total bytes of the device-writable (or device-readable) buffers.</summary>
    public static ulong Length(ReadOnlySpan<Buffer> buffers, bool writable)
    {
        ulong n = 0;
        foreach (var b in buffers)
        {
            if (b.DeviceWritable == writable)
            {
                n += b.Length;
            }
        }
        return n;
    }

    /// <summary>
    /// The device-writable (or device-readable) bytes of a chain from offset <paramref name="skip"/>,
    /// at most <paramref name="length"/> of them, as runs of guest memory in chain order.
    /// </summary>
    public static PieceEnumerator Pieces(ReadOnlySpan<Buffer> buffers, bool writable, ulong skip, ulong length) =>
        new(buffers, writable, skip, length);

    /// <summary>Copies device-readable bytes, skipping the first <paramref name="skip"/>, into <paramref name="dest"/>; returns the count.</summary>
    public static int Read(GuestMemory memory, ReadOnlySpan<Buffer> buffers, ulong skip, Span<byte> dest)
    {
        int copied = 0;
        foreach (var p in Pieces(buffers, writable: false, skip, (ulong)dest.Length))
        {
            memory.GetSpan(new GuestAddress(p.Address), p.Length).CopyTo(dest[copied..]);
            copied += (int)p.Length;
        }
        return copied;
    }

    /// <summary>Copies <paramref name="src"/> into the device-writable bytes after skipping <paramref name="skip"/> of them; returns the count.</summary>
    public static int Write(GuestMemory memory, ReadOnlySpan<Buffer> buffers, ulong skip, ReadOnlySpan<byte> src)
    {
        int copied = 0;
        foreach (var p in Pieces(buffers, writable: true, skip, (ulong)src.Length))
        {
            src.Slice(copied, (int)p.Length).CopyTo(memory.GetSpan(new GuestAddress(p.Address), p.Length));
            memory.MarkDirty(new GuestAddress(p.Address), p.Length);
            copied += (int)p.Length;
        }
        return copied;
    }

    /// <summary>Walks the buffers of one direction, skipping and limiting as asked; allocates nothing.</summary>
    public ref struct PieceEnumerator
    {
        private readonly ReadOnlySpan<Buffer> _buffers;
        private readonly bool _writable;
        private ulong _skip, _left;
        private int _index;

        internal PieceEnumerator(ReadOnlySpan<Buffer> buffers, bool writable, ulong skip, ulong length)
        {
            _buffers = buffers;
            _writable = writable;
            _skip = skip;
            _left = length;
            _index = -1;
        }

        public Piece Current { get; private set; }

        public readonly PieceEnumerator GetEnumerator() => this;

        public bool MoveNext()
        {
            while (_left > 0 && ++_index < _buffers.Length)
            {
                var b = _buffers[_index];
                if (b.DeviceWritable != _writable)
                {
                    continue;
                }
                if (_skip >= b.Length)
                {
                    _skip -= b.Length;   // also passes over empty buffers
                    continue;
                }
                ulong take = Math.Min(b.Length - _skip, _left);
                Current = new Piece(b.Address + _skip, take);
                _skip = 0;
                _left -= take;
                return true;
            }
            return false;
        }
    }
}
