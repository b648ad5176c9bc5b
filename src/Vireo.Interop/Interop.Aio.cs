using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Vireo.Interop;

// The structs keep their C names, as the KVM binding does, so that the ABI test can name them.
#pragma warning disable CS8981

/// <summary>struct iocb of &lt;linux/aio_abi.h&gt; (little-endian layout).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct iocb
{
    public ulong aio_data;
    public uint aio_key;
    public int aio_rw_flags;
    public ushort aio_lio_opcode;
    public short aio_reqprio;
    public uint aio_fildes;
    public ulong aio_buf;
    public ulong aio_nbytes;
    public long aio_offset;
    public ulong aio_reserved2;
    public uint aio_flags;
    public uint aio_resfd;
}

/// <summary>struct io_event of &lt;linux/aio_abi.h&gt;.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct io_event
{
    public ulong data;
    public ulong obj;
    public long res;
    public long res2;
}

/// <summary>struct iovec of &lt;sys/uio.h&gt;.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct iovec
{
    public nint iov_base;
    public nuint iov_len;
}

#pragma warning restore CS8981

/// <summary>The Linux native AIO system calls (io_setup, io_submit, io_getevents, io_destroy) and their constants.</summary>
public static unsafe partial class Aio
{
    public const ushort IOCB_CMD_FDSYNC = 3, IOCB_CMD_PREADV = 7, IOCB_CMD_PWRITEV = 8;
    public const uint IOCB_FLAG_RESFD = 1;
    private const long SysIoSetup = 206, SysIoDestroy = 207, SysIoGetEvents = 208, SysIoSubmit = 209;

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial long Syscall(long number, long a, long b, long c, long d, long e);

    public static long Setup(uint events, out ulong context)
    {
        ulong ctx = 0;
        long r = Syscall(SysIoSetup, events, (long)&ctx, 0, 0, 0);
        context = ctx;
        return r;
    }

    public static long Destroy(ulong context) => Syscall(SysIoDestroy, (long)context, 0, 0, 0, 0);

    public static long Submit(ulong context, long count, iocb** iocbs) => Syscall(SysIoSubmit, (long)context, count, (long)iocbs, 0, 0);

    /// <summary>Takes up to events.Length completions without waiting.</summary>
    public static long GetEvents(ulong context, Span<io_event> events)
    {
        long* timeout = stackalloc long[2] { 0, 0 };
        fixed (io_event* e = events)
        {
            return Syscall(SysIoGetEvents, (long)context, 0, events.Length, (long)e, (long)timeout);
        }
    }
}

/// <summary>A finished request: its slot and the kernel's result (bytes moved, or -errno).</summary>
public readonly record struct AioCompletion(int Slot, long Result);

/// <summary>
/// A native AIO context with a fixed number of request slots, each with its own iocb and a
/// vector of up to <c>maxSegments</c> buffers, and an eventfd that becomes readable when
/// requests finish (for an epoll loop). Requests are prepared into slots, queued, and sent to
/// the kernel in one io_submit. Buffers handed to <see cref="SetSegment"/> must be native
/// memory that outlives the request (guest RAM, an <see cref="AlignedBuffer"/>), never a
/// managed array. Dispose waits for requests in flight (io_destroy does).
/// </summary>
public sealed unsafe class AioContext : IDisposable
{
    private readonly ulong _context;
    private readonly iocb* _iocbs;
    private readonly iovec* _vectors;
    private readonly iocb** _pending;
    private readonly EventFd _completions = new(nonBlocking: true);
    private int _pendingCount;
    private bool _disposed;

    public int Slots { get; }
    public int MaxSegments { get; }
    public int CompletionFd => _completions.Fd;

    public AioContext(int slots, int maxSegments)
    {
        Slots = slots;
        MaxSegments = maxSegments;
        if (Aio.Setup((uint)slots, out _context) < 0)
        {
            int errno = Libc.LastErrno;
            _completions.Dispose();
            throw new SysError("io_setup", errno);
        }
        _iocbs = (iocb*)NativeMemory.AllocZeroed((nuint)slots, (nuint)sizeof(iocb));
        _vectors = (iovec*)NativeMemory.AllocZeroed((nuint)(slots * maxSegments), (nuint)sizeof(iovec));
        _pending = (iocb**)NativeMemory.AllocZeroed((nuint)slots, (nuint)sizeof(nint));
    }

    /// <summary>Points segment <paramref name="segment"/> of <paramref name="slot"/> at <paramref name="buffer"/> (native memory).</summary>
    public void SetSegment(int slot, int segment, Span<byte> buffer)
    {
        CheckSlot(slot);
        if ((uint)segment >= (uint)MaxSegments)
        {
            throw new ArgumentOutOfRangeException(nameof(segment));
        }
        ref var v = ref _vectors[slot * MaxSegments + segment];
        v.iov_base = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(buffer));
        v.iov_len = (nuint)buffer.Length;
    }

    /// <summary>Segment <paramref name="segment"/> of <paramref name="slot"/>, as <see cref="SetSegment"/> left it: its host address and length.</summary>
    public (nint Address, ulong Length) Segment(int slot, int segment)
    {
        CheckSlot(slot);
        if ((uint)segment >= (uint)MaxSegments)
        {
            throw new ArgumentOutOfRangeException(nameof(segment));
        }
        ref var v = ref _vectors[slot * MaxSegments + segment];
        return (v.iov_base, v.iov_len);
    }

    /// <summary>Fills the slot's iocb: a vectored read or write of its first <paramref name="segments"/> segments, or an fdatasync.</summary>
    public void Prepare(int slot, ushort opcode, int fd, int segments, long offset)
    {
        CheckSlot(slot);
        ref var cb = ref _iocbs[slot];
        cb = default;
        cb.aio_data = (ulong)slot;
        cb.aio_lio_opcode = opcode;
        cb.aio_fildes = (uint)fd;
        if (opcode != Aio.IOCB_CMD_FDSYNC)
        {
            cb.aio_buf = (ulong)(nint)(_vectors + slot * MaxSegments);
            cb.aio_nbytes = (ulong)segments;
            cb.aio_offset = offset;
        }
        cb.aio_flags = Aio.IOCB_FLAG_RESFD;
        cb.aio_resfd = (uint)_completions.Fd;
        _pending[_pendingCount++] = _iocbs + slot;
    }

    /// <summary>
    /// Sends every prepared request to the kernel. A request the kernel refuses is reported to
    /// <paramref name="refused"/> with its errno (and is not in flight); the rest are.
    /// </summary>
    public void Submit(Action<int, int> refused)
    {
        int done = 0;
        while (done < _pendingCount)
        {
            long n = Aio.Submit(_context, _pendingCount - done, _pending + done);
            if (n > 0)
            {
                done += (int)n;
                continue;
            }
            int errno = n < 0 ? Libc.LastErrno : Libc.EAGAIN;
            if (errno == Libc.EINTR)
            {
                continue;
            }
            refused((int)_pending[done]->aio_data, errno);
            done++;
        }
        _pendingCount = 0;
    }

    /// <summary>Collects finished requests without waiting; returns how many were written to <paramref name="into"/>.</summary>
    public int Reap(Span<AioCompletion> into)
    {
        _completions.Consume();
        Span<io_event> events = stackalloc io_event[Math.Min(into.Length, 64)];
        int total = 0;
        while (total < into.Length)
        {
            var batch = events[..Math.Min(events.Length, into.Length - total)];
            long n = Aio.GetEvents(_context, batch);
            if (n < 0 && Libc.LastErrno == Libc.EINTR)
            {
                continue;
            }
            if (n <= 0)
            {
                break;
            }
            for (int i = 0; i < n; i++)
            {
                into[total++] = new AioCompletion((int)batch[i].data, batch[i].res);
            }
            if (n < batch.Length)
            {
                break;
            }
        }
        return total;
    }

    private void CheckSlot(int slot)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if ((uint)slot >= (uint)Slots)
        {
            throw new ArgumentOutOfRangeException(nameof(slot));
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        Aio.Destroy(_context);   // waits for requests in flight: nothing lands in freed memory
        NativeMemory.Free(_iocbs);
        NativeMemory.Free(_vectors);
        NativeMemory.Free(_pending);
        _completions.Dispose();
    }
}
