using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;
using Vireo.Interop;
using Vireo.Memory;
using Vireo.Virtio.Queue;

namespace Vireo.Virtio.Block;

/// <summary>
/// virtio-blk (§5.2) on a raw file or block device: read, write, flush (fdatasync before the
/// guest sees completion), discard, write-zeroes, get-id, read-only, O_DIRECT, several queues.
/// Requests are checked against the capacity; a request the driver malformed (no header, no
/// status byte) puts the device in NEEDS_RESET, one that is merely out of range gets IOERR.
/// With the page cache, requests are served at once on the event loop (a copy is faster than a
/// thread hop). With O_DIRECT, reads, writes and flushes go to the kernel through Linux native
/// AIO (as QEMU's aio=native): everything the guest made available is submitted in one
/// io_submit, straight from guest memory, and completions come back on an eventfd the event
/// loop watches. A request whose buffers are not sector-aligned is served at once through an
/// aligned bounce buffer instead.
/// </summary>
public sealed class VirtioBlock : VirtioDevice, IDisposable
{
    public const int SectorSize = 512;
    private const int FeatureSegMax = 2, FeatureRo = 5, FeatureBlkSize = 6, FeatureFlush = 9, FeatureMq = 12,
        FeatureDiscard = 13, FeatureWriteZeroes = 14;
    private const uint TypeIn = 0, TypeOut = 1, TypeFlush = 4, TypeGetId = 8, TypeDiscard = 11, TypeWriteZeroes = 13;
    private const byte StatusOk = 0, StatusIoErr = 1, StatusUnsupported = 2;
    private const int HeaderSize = 16, SegmentSize = 16, IdSize = 20;
    private const int BounceSize = 1 << 20;
    private const uint MaxSegments = 128;

    private readonly SafeFileHandle _file;
    private readonly byte[] _config = new byte[60];
    private readonly byte[] _id = new byte[IdSize];

    // O_DIRECT: the AIO context, what each slot's request needs at completion, and free slots.
    private readonly AioContext? _aio;
    private readonly AlignedBuffer? _bounce;
    private readonly InFlight[] _inFlight = [];
    private readonly Stack<int> _freeSlots = new();
    private readonly Lock _slotLock = new();
    private bool _syncFlushOnly;
    private readonly Action<int, int> _refused;

    /// <summary>A request at the kernel: where its status goes, its AIO opcode and the bytes it should move.</summary>
    private record struct InFlight(int Generation, int Queue, ushort Head, GuestAddress Status, ushort Opcode, long Expected, int Segments);

    /// <summary>A request's header, and the data bytes the chain carries out (after it) and in (before the status byte).</summary>
    private readonly record struct Header(uint Type, ulong Sector, ulong DataOut, ulong DataIn);

    public BlockConfig Config { get; }
    public ulong CapacitySectors { get; }

    public VirtioBlock(BlockConfig config) : this(config, OpenFile(config))
    {
    }

    /// <summary>
    /// A disk on a file the caller opened (with O_DIRECT if <c>config.Direct</c>, read-only if
    /// <c>config.ReadOnly</c>); the device owns <paramref name="file"/> from here. A VMM opens each
    /// disk once and hands each boot a dup, so a reboot never goes back to the path.
    /// </summary>
    public VirtioBlock(BlockConfig config, SafeFileHandle file)
    {
        Config = config;
        _file = file;
        long length = RandomAccess.GetLength(_file);
        if (length < SectorSize)
        {
            _file.Dispose();
            throw new InvalidDataException($"disk {config.Path}: {length} bytes is smaller than one 512-byte sector");
        }
        CapacitySectors = (ulong)length / SectorSize;
        _refused = Refused; // one delegate, not one per notification
        if (config.Direct)
        {
            // A slot per descriptor of every queue: a driver cannot have more requests in flight.
            int slots = config.Queues * MaxQueueSize;
            try
            {
                _aio = new AioContext(slots, (int)MaxSegments);
            }
            catch (SysError)
            {
                _file.Dispose();
                throw;
            }
            _bounce = new AlignedBuffer(BounceSize);
            _inFlight = new InFlight[slots];
            for (int i = slots - 1; i >= 0; i--)
            {
                _freeSlots.Push(i);
            }
        }
        var id = Encoding.ASCII.GetBytes(config.Id ?? Path.GetFileName(config.Path));
        id.AsSpan(0, Math.Min(id.Length, IdSize)).CopyTo(_id);

        var c = _config.AsSpan();
        BinaryPrimitives.WriteUInt64LittleEndian(c, CapacitySectors);
        BinaryPrimitives.WriteUInt32LittleEndian(c[12..], MaxSegments);                 // seg_max
        BinaryPrimitives.WriteUInt32LittleEndian(c[20..], SectorSize);                  // blk_size
        BinaryPrimitives.WriteUInt16LittleEndian(c[34..], (ushort)config.Queues);       // num_queues
        BinaryPrimitives.WriteUInt32LittleEndian(c[36..], uint.MaxValue);               // max_discard_sectors
        BinaryPrimitives.WriteUInt32LittleEndian(c[40..], MaxSegments);                 // max_discard_seg
        BinaryPrimitives.WriteUInt32LittleEndian(c[44..], 1);                           // discard_sector_alignment
        BinaryPrimitives.WriteUInt32LittleEndian(c[48..], uint.MaxValue);               // max_write_zeroes_sectors
        BinaryPrimitives.WriteUInt32LittleEndian(c[52..], MaxSegments);                 // max_write_zeroes_seg
        c[56] = 1;                                                                      // write_zeroes_may_unmap
    }

    private static SafeFileHandle OpenFile(BlockConfig config)
    {
        int flags = (config.ReadOnly ? Libc.O_RDONLY : Libc.O_RDWR) | Libc.O_CLOEXEC | (config.Direct ? Libc.O_DIRECT : 0);
        int fd = Libc.Open(config.Path, flags, 0);
        if (fd < 0)
        {
            throw new SysError($"open({config.Path})", Libc.LastErrno);
        }
        return new SafeFileHandle(fd, ownsHandle: true);
    }

    public override uint DeviceType => VirtioConstants.DeviceBlock;

    protected override ulong DeviceFeatures =>
        VirtioConstants.Bit(FeatureSegMax) | VirtioConstants.Bit(FeatureBlkSize) | VirtioConstants.Bit(FeatureFlush)
        | (Config.Queues > 1 ? VirtioConstants.Bit(FeatureMq) : 0)
        | (Config.ReadOnly ? VirtioConstants.Bit(FeatureRo) : VirtioConstants.Bit(FeatureDiscard) | VirtioConstants.Bit(FeatureWriteZeroes));

    public override int QueueCount => Config.Queues;

    public override void ReadConfig(ulong offset, Span<byte> data)
    {
        ReadFrom(_config, offset, data);
    }

    /// <summary>The eventfd that signals finished O_DIRECT requests (-1 without O_DIRECT); the event loop watches it.</summary>
    public int CompletionFd => _aio?.CompletionFd ?? -1;

    public override bool HasWorkInFlight
    {
        get
        {
            lock (_slotLock)
            {
                return _freeSlots.Count != _inFlight.Length;
            }
        }
    }

    protected override void ProcessQueue(int index, SplitQueue queue)
    {
        QueueError error;
        while (queue.TryPop(out var chain, out error))
        {
            if (!TryReadHeader(chain.Buffers, out var header, out string? malformed))
            {
                Fail(malformed!);
                break;
            }
            if (_aio is not null && TrySubmit(index, chain, header))
            {
                continue;
            }
            queue.AddUsed(chain.Head, Serve(chain.Buffers, header, _bounce));
        }
        _aio?.Submit(_refused);
        if (error != QueueError.None)
        {
            Fail(error.ToString());
        }
    }

    /// <summary>Reads the header; false (and why) when the driver sent no header or no status byte.</summary>
    private bool TryReadHeader(ReadOnlySpan<Queue.Buffer> buffers, out Header header, out string? malformed)
    {
        header = default;
        malformed = null;
        Span<byte> bytes = stackalloc byte[HeaderSize];
        if (ChainIo.Read(Memory!, buffers, 0, bytes) < HeaderSize)
        {
            malformed = "request without a 16-byte header";
            return false;
        }
        ulong writable = ChainIo.Length(buffers, writable: true);
        if (writable == 0)
        {
            malformed = "request without a status byte";
            return false;
        }
        header = new Header(BinaryPrimitives.ReadUInt32LittleEndian(bytes), BinaryPrimitives.ReadUInt64LittleEndian(bytes[8..]),
            ChainIo.Length(buffers, writable: false) - HeaderSize, writable - 1);
        return true;
    }

    /// <summary>True when <paramref name="length"/> bytes at <paramref name="sector"/> are whole sectors within the disk.</summary>
    private bool InRange(ulong sector, ulong length) =>
        length % SectorSize == 0 && sector <= CapacitySectors && length / SectorSize <= CapacitySectors - sector;

    /// <summary>
    /// Prepares a read, write or flush for the kernel (sent by the next Submit). False when the
    /// request is served at once instead: other types, an out-of-range request (its error comes
    /// from <see cref="Serve"/>), unaligned buffers, or no free slot.
    /// </summary>
    private bool TrySubmit(int queueIndex, DescriptorChain chain, Header h)
    {
        ushort opcode;
        ulong length;
        switch (h.Type)
        {
            case TypeIn:
                (opcode, length) = (Aio.IOCB_CMD_PREADV, h.DataIn);
                break;
            case TypeOut when !Config.ReadOnly:
                (opcode, length) = (Aio.IOCB_CMD_PWRITEV, h.DataOut);
                break;
            case TypeFlush when !_syncFlushOnly:
                (opcode, length) = (Aio.IOCB_CMD_FDSYNC, 0);
                break;
            default:
                return false;
        }
        if (!InRange(h.Sector, length))
        {
            return false;
        }
        int slot;
        lock (_slotLock)
        {
            if (!_freeSlots.TryPop(out slot))
            {
                return false;
            }
        }
        int segments = 0;
        if (opcode != Aio.IOCB_CMD_FDSYNC && !TryMapSegments(chain.Buffers, slot, toGuest: h.Type == TypeIn, length, out segments))
        {
            FreeSlot(slot);
            return false;
        }
        _inFlight[slot] = new InFlight(Generation, queueIndex, chain.Head, StatusAddress(chain.Buffers), opcode, (long)length, segments);
        _aio!.Prepare(slot, opcode, (int)_file.DangerousGetHandle(), segments, (long)(h.Sector * SectorSize));
        return true;
    }

    /// <summary>The request's data, skipping the header of an outgoing one.</summary>
    private static ChainIo.PieceEnumerator Data(ReadOnlySpan<Queue.Buffer> buffers, bool toGuest, ulong length) =>
        ChainIo.Pieces(buffers, writable: toGuest, skip: toGuest ? 0UL : HeaderSize, length);

    /// <summary>Points the slot's vector at the request's data in guest memory; false if a piece is not sector-aligned or there are too many.</summary>
    private bool TryMapSegments(ReadOnlySpan<Queue.Buffer> buffers, int slot, bool toGuest, ulong length, out int segments)
    {
        segments = 0;
        foreach (var p in Data(buffers, toGuest, length))
        {
            var span = Memory!.GetSpan(new GuestAddress(p.Address), p.Length);
            if (segments == (int)MaxSegments || !Aligned(span))
            {
                return false;
            }
            _aio!.SetSegment(slot, segments++, span);
        }
        return true;
    }

    /// <summary>The status byte is the last writable byte of the chain.</summary>
    private static GuestAddress StatusAddress(ReadOnlySpan<Queue.Buffer> buffers)
    {
        for (int i = buffers.Length - 1; i >= 0; i--)
        {
            if (buffers[i].DeviceWritable && buffers[i].Length > 0)
            {
                return new GuestAddress(buffers[i].Address + buffers[i].Length - 1);
            }
        }
        throw new InvalidOperationException("a chain checked to have writable bytes has none");
    }

    /// <summary>The kernel refused a request at submission: a flush it cannot do asynchronously is done here, anything else fails with IOERR.</summary>
    private void Refused(int slot, int errno)
    {
        var r = _inFlight[slot];
        byte status = StatusIoErr;
        if (r.Opcode == Aio.IOCB_CMD_FDSYNC && errno == Libc.EINVAL)
        {
            _syncFlushOnly = true; // this file system has no asynchronous fdatasync: flush in line from now on
            status = Libc.FdataSync((int)_file.DangerousGetHandle()) == 0 ? StatusOk : StatusIoErr;
        }
        Finish(slot, status);
    }

    /// <summary>Called by the event loop when <see cref="CompletionFd"/> is readable: returns finished requests to the guest.</summary>
    public void OnCompletions()
    {
        if (_aio is null)
        {
            return;
        }
        Span<AioCompletion> done = stackalloc AioCompletion[64];
        int n;
        do
        {
            n = _aio.Reap(done);
            foreach (var c in done[..n])
            {
                Finish(c.Slot, c.Result == _inFlight[c.Slot].Expected ? StatusOk : StatusIoErr);
            }
        } while (n == done.Length);
    }

    private void Finish(int slot, byte status)
    {
        var r = _inFlight[slot];
        if (r.Opcode == Aio.IOCB_CMD_PREADV)
        {
            for (int i = 0; i < r.Segments; i++) // the kernel wrote guest RAM behind KVM's back
            {
                var (host, length) = _aio!.Segment(slot, i);
                Memory!.MarkDirtyHost(host, length);
            }
        }
        FreeSlot(slot);
        if (r.Generation != Generation)
        {
            return; // the driver reset the device meanwhile: its memory may be reused
        }
        Memory!.Write(r.Status, [status]);
        uint dataWritten = status == StatusOk && r.Opcode == Aio.IOCB_CMD_PREADV ? (uint)r.Expected : 0;
        Complete(r.Generation, r.Queue, r.Head, dataWritten + 1);
    }

    private void FreeSlot(int slot)
    {
        lock (_slotLock)
        {
            _freeSlots.Push(slot);
        }
    }

    /// <summary>Serves a request at once; returns the bytes written into the chain (data and status).</summary>
    private uint Serve(ReadOnlySpan<Queue.Buffer> buffers, Header h, AlignedBuffer? bounce)
    {
        byte status;
        uint dataWritten = 0;
        switch (h.Type)
        {
            case TypeIn:
                status = Transfer(buffers, bounce, h.Sector, h.DataIn, toGuest: true);
                if (status == StatusOk)
                {
                    dataWritten = (uint)h.DataIn;
                }
                break;
            case TypeOut:
                status = Config.ReadOnly ? StatusIoErr : Transfer(buffers, bounce, h.Sector, h.DataOut, toGuest: false);
                break;
            case TypeFlush:
                status = Config.ReadOnly || Libc.FdataSync((int)_file.DangerousGetHandle()) == 0 ? StatusOk : StatusIoErr;
                break;
            case TypeGetId:
                dataWritten = (uint)ChainIo.Write(Memory!, buffers, 0, _id.AsSpan(0, (int)Math.Min((ulong)IdSize, h.DataIn)));
                status = StatusOk;
                break;
            case TypeDiscard:
            case TypeWriteZeroes:
                status = Config.ReadOnly ? StatusIoErr : DiscardOrZero(buffers, bounce, h.DataOut, h.Type == TypeDiscard);
                break;
            default:
                status = StatusUnsupported;
                break;
        }
        // The status byte is the last writable byte of the chain.
        ChainIo.Write(Memory!, buffers, h.DataIn, [status]);
        return dataWritten + 1;
    }

    private byte Transfer(ReadOnlySpan<Queue.Buffer> buffers, AlignedBuffer? bounce, ulong sector, ulong length, bool toGuest)
    {
        if (!InRange(sector, length))
        {
            return StatusIoErr;
        }
        long offset = (long)(sector * SectorSize);
        try
        {
            foreach (var p in Data(buffers, toGuest, length))
            {
                var span = Memory!.GetSpan(new GuestAddress(p.Address), p.Length);
                if (toGuest)
                {
                    ReadFile(span, offset, bounce);
                    Memory.MarkDirty(new GuestAddress(p.Address), p.Length);
                }
                else
                {
                    WriteFile(span, offset, bounce);
                }
                offset += (long)p.Length;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return StatusIoErr;
        }
        return StatusOk;
    }

    /// <summary>O_DIRECT can use guest memory as it is when address and length are sector-aligned.</summary>
    private static bool Aligned(ReadOnlySpan<byte> span) => AlignedBuffer.IsAligned(span, SectorSize);

    private void ReadFile(Span<byte> dest, long offset, AlignedBuffer? bounce)
    {
        if (bounce == null || Aligned(dest))
        {
            if (RandomAccess.Read(_file, dest, offset) < dest.Length)
            {
                throw new IOException("short read");
            }
            return;
        }
        // O_DIRECT needs aligned host buffers: go through the aligned bounce buffer.
        for (int done = 0; done < dest.Length;)
        {
            int n = Math.Min(BounceSize, dest.Length - done);
            var aligned = bounce.Span[..((n + SectorSize - 1) / SectorSize * SectorSize)];
            if (RandomAccess.Read(_file, aligned, offset + done) < n)
            {
                throw new IOException("short read");
            }
            aligned[..n].CopyTo(dest[done..]);
            done += n;
        }
    }

    private void WriteFile(ReadOnlySpan<byte> src, long offset, AlignedBuffer? bounce)
    {
        if (bounce == null || Aligned(src))
        {
            RandomAccess.Write(_file, src, offset);
            return;
        }
        for (int done = 0; done < src.Length;)
        {
            int n = Math.Min(BounceSize, src.Length - done);
            var aligned = bounce.Span[..n];
            src.Slice(done, n).CopyTo(aligned);
            RandomAccess.Write(_file, (ReadOnlySpan<byte>)aligned, offset + done);
            done += n;
        }
    }

    private byte DiscardOrZero(ReadOnlySpan<Queue.Buffer> buffers, AlignedBuffer? bounce, ulong length, bool discard)
    {
        if (length == 0 || length % SegmentSize != 0 || length / SegmentSize > MaxSegments)
        {
            return StatusIoErr;
        }
        Span<byte> seg = stackalloc byte[SegmentSize];
        for (ulong i = 0; i < length / SegmentSize; i++)
        {
            ChainIo.Read(Memory!, buffers, HeaderSize + i * SegmentSize, seg);
            ulong sector = BinaryPrimitives.ReadUInt64LittleEndian(seg);
            uint count = BinaryPrimitives.ReadUInt32LittleEndian(seg[8..]);
            if (sector > CapacitySectors || count > CapacitySectors - sector)
            {
                return StatusIoErr;
            }
            long offset = (long)(sector * SectorSize), bytes = (long)count * SectorSize;
            int fd = (int)_file.DangerousGetHandle();
            int mode = discard
                ? Libc.FALLOC_FL_PUNCH_HOLE | Libc.FALLOC_FL_KEEP_SIZE
                : Libc.FALLOC_FL_ZERO_RANGE | Libc.FALLOC_FL_KEEP_SIZE;
            if (Libc.Fallocate(fd, mode, offset, bytes) != 0)
            {
                if (discard)
                {
                    continue; // discard is advisory: a file system that cannot punch holes keeps the data
                }
                if (!WriteZeroes(offset, bytes, bounce))
                {
                    return StatusIoErr;
                }
            }
        }
        return StatusOk;
    }

    private bool WriteZeroes(long offset, long bytes, AlignedBuffer? bounce)
    {
        var zeros = new byte[Math.Min(bytes, BounceSize)];
        try
        {
            for (long done = 0; done < bytes;)
            {
                int n = (int)Math.Min(zeros.Length, bytes - done);
                WriteFile(zeros.AsSpan(0, n), offset + done, bounce);
                done += n;
            }
            return true;
        }
        catch (IOException)
        {
            return false;
        }
    }

    public void Dispose()
    {
        _aio?.Dispose();    // waits for requests in flight
        _bounce?.Dispose();
        _file.Dispose();
    }
}
