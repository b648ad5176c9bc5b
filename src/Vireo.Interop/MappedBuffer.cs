using System.Buffers;

namespace Vireo.Interop;

/// <summary>
/// Bytes in an anonymous mapping of their own, for data that is needed for a moment and is large:
/// a kernel or initrd read for one boot. Dispose unmaps it, so the memory goes back to the host at
/// once; from the GC heap it would stay resident until a full collection, and from malloc it
/// could stay in the process's heap.
/// </summary>
public sealed unsafe class MappedBuffer : MemoryManager<byte>
{
    private nint _p;
    private readonly int _length;

    public MappedBuffer(int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        _length = length;
        if (length > 0)
        {
            nint p = Libc.Mmap(0, (nuint)length, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS, -1, 0);
            if (p == Libc.MAP_FAILED)
            {
                throw new SysError($"mmap({length} bytes)", Libc.LastErrno);
            }
            _p = p;
        }
    }

    public int Length => _length;

    /// <summary>Unmaps the bytes (MemoryManager implements IDisposable explicitly).</summary>
    public void Dispose() => ((IDisposable)this).Dispose();

    // SAFETY: _p maps _length bytes until Dispose; an empty buffer maps nothing and is an empty span.
    public override Span<byte> GetSpan() => _length == 0 ? Span<byte>.Empty
        : _p != 0 ? new Span<byte>((void*)_p, _length) : throw new ObjectDisposedException(nameof(MappedBuffer));

    // The mapping never moves: pinning is a no-op.
    public override MemoryHandle Pin(int elementIndex = 0) =>
        new((byte*)_p + (uint)elementIndex);

    public override void Unpin()
    {
    }

    protected override void Dispose(bool disposing)
    {
        if (_p != 0)
        {
            _ = Libc.Munmap(_p, (nuint)_length);
            _p = 0;
        }
    }
}
