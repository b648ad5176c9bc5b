using Vireo.Interop;
using Vireo.Memory;

namespace Vireo.Vmm.Snapshot;

/// <summary>
/// Guest RAM in a file, as the snapshot's layout puts it: the regions one after another, pages
/// that were never touched or hold only zeros left as holes (the file is sparse; they read back
/// as zeros). A restore maps it copy-on-write, so nothing is read until the guest touches it.
/// </summary>
public static class MemoryFile
{
    private const int Page = 4096;
    private const ulong Chunk = 2UL << 20;

    /// <summary>Writes all of <paramref name="memory"/> to <paramref name="path"/> (created or replaced); returns the bytes of data written.</summary>
    public static long WriteFull(GuestMemory memory, string path)
    {
        int fd = Libc.Open(path, Libc.O_WRONLY | Libc.O_CREAT | Libc.O_TRUNC | Libc.O_CLOEXEC, 0x180); // 0600: a guest's RAM is private
        if (fd < 0)
        {
            throw new SnapshotException($"mem_file_path {path}: cannot create it: {Libc.StrError(Libc.LastErrno)}");
        }
        using var file = new FileDescriptor(fd);
        try
        {
            Check.Io(Libc.Ftruncate(fd, (long)memory.Size), "ftruncate");
            long written = 0;
            foreach (var region in memory.Regions)
            {
                for (ulong at = 0; at < region.Size; at += Chunk)
                {
                    ulong length = Math.Min(Chunk, region.Size - at);
                    if (!memory.MayHoldData(region, at, length))
                    {
                        continue; // never touched: zeros, and a hole in the file
                    }
                    var span = memory.GetSpan(region.Start.Add(at), length);
                    written += WriteNonZeroPages(fd, span, (long)(region.FileOffset + at));
                }
            }
            return written;
        }
        catch (SysError e)
        {
            throw new SnapshotException($"mem_file_path {path}: {e.Message}");
        }
    }

    /// <summary>
    /// Writes the pages <paramref name="dirty"/> marks (a bitmap a region, as
    /// <see cref="DirtyTracker.Collect"/> gives) to <paramref name="path"/>, each where the layout
    /// puts it. <paramref name="existing"/>: the file is a memory file of this RAM already (the
    /// previous snapshot's), and the pages land in it, so it holds all of RAM as of now; else the
    /// file is created of RAM's size, holding only those pages (a diff layer: the rest are holes).
    /// Returns the bytes written.
    /// </summary>
    public static long WriteDirty(GuestMemory memory, IReadOnlyList<ulong[]> dirty, string path, bool existing)
    {
        int flags = existing ? Libc.O_WRONLY | Libc.O_CLOEXEC | Libc.O_NOCTTY | Libc.O_NONBLOCK : Libc.O_WRONLY | Libc.O_CREAT | Libc.O_TRUNC | Libc.O_CLOEXEC;
        int fd = Libc.Open(path, flags, 0x180);
        if (fd < 0)
        {
            throw new SnapshotException($"mem_file_path {path}: cannot {(existing ? "open" : "create")} it: {Libc.StrError(Libc.LastErrno)}");
        }
        using var file = new FileDescriptor(fd);
        try
        {
            if (existing)
            {
                var stat = Libc.StatOf(fd);
                if (stat.Kind != FileKind.Regular || (ulong)stat.Size != memory.Size)
                {
                    throw new SnapshotException(stat.Kind != FileKind.Regular
                        ? $"mem_file_path {path} is {stat.Described}, not a regular file"
                        : $"mem_file_path {path} is {stat.Size} bytes, not a memory file of this VM's {memory.Size} bytes of RAM; a Diff snapshot writes onto the previous snapshot's memory file, or to a new file");
                }
            }
            else
            {
                Check.Io(Libc.Ftruncate(fd, (long)memory.Size), "ftruncate");
            }
            long written = 0;
            for (int i = 0; i < memory.Regions.Count; i++)
            {
                var region = memory.Regions[i];
                var bits = dirty[i];
                ulong page = 0;
                while (DirtyBitmap.NextRun(bits, region.Size / Page, ref page, Chunk / Page, out ulong run, out ulong count))
                {
                    ulong at = run * Page, length = count * Page;
                    Libc.PwriteFully(fd, memory.GetSpan(region.Start.Add(at), length), (long)(region.FileOffset + at));
                    written += (long)length;
                }
            }
            return written;
        }
        catch (SysError e)
        {
            throw new SnapshotException($"mem_file_path {path}: {e.Message}");
        }
    }

    /// <summary>Opens a memory file for a restore, checking it is a regular file of exactly the RAM's size.</summary>
    public static FileDescriptor OpenForRestore(string path, ulong ramBytes)
    {
        int fd = VmFiles.OpenToRead(path, Libc.O_CLOEXEC | Libc.O_NONBLOCK | Libc.O_NOCTTY, out int errno);
        if (fd < 0)
        {
            throw new SnapshotException($"mem_backend {path}: cannot open it: {Libc.StrError(errno)}");
        }
        var file = new FileDescriptor(fd);
        var stat = Libc.StatOf(fd);
        if (stat.Kind != FileKind.Regular || (ulong)stat.Size != ramBytes)
        {
            file.Dispose();
            throw new SnapshotException(stat.Kind != FileKind.Regular
                ? $"mem_backend {path} is {stat.Described}, not a regular file"
                : $"mem_backend {path} is {stat.Size} bytes; the snapshot's RAM is {ramBytes} bytes (is it the memory file of this snapshot?)");
        }
        return file;
    }

    private static long WriteNonZeroPages(int fd, Span<byte> span, long fileOffset)
    {
        long written = 0;
        int at = 0;
        while (ZeroPages.NextNonZeroRun(span, ref at, out int start, out int length))
        {
            Libc.PwriteFully(fd, span.Slice(start, length), fileOffset + start);
            written += length;
        }
        return written;
    }
}
