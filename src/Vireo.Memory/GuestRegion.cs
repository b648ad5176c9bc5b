using Vireo.Interop;

namespace Vireo.Memory;

/// <summary>
/// One contiguous run of guest RAM: a host mapping, anonymous or of a file (the VM's memfd, or a
/// snapshot's memory file) at <see cref="FileOffset"/>.
/// </summary>
public sealed unsafe class GuestRegion : IDisposable
{
    private nint _host;

    public GuestAddress Start { get; }
    public ulong Size { get; }
    public GuestAddress End => Start.Add(Size);

    /// <summary>
    /// Where this region's bytes sit in the memory's backing file, or for anonymous RAM where
    /// they would sit in a memory file of it (the regions one after another, as a snapshot writes them).
    /// </summary>
    public ulong FileOffset { get; }

    /// <summary>The host virtual address of the mapping (for KVM_SET_USER_MEMORY_REGION).</summary>
    public nint HostAddress => _host != 0 ? _host : throw new ObjectDisposedException(nameof(GuestRegion));

    private GuestRegion(GuestAddress start, ulong size, nint host, ulong fileOffset = 0)
    {
        Start = start;
        Size = size;
        _host = host;
        FileOffset = fileOffset;
    }

    /// <summary>Maps <paramref name="size"/> bytes, MAP_NORESERVE so untouched RAM costs nothing.</summary>
    public static GuestRegion Allocate(GuestAddress start, ulong size, ulong fileOffset = 0)
    {
        if (size == 0 || size % 4096 != 0)
        {
            throw new ArgumentException($"region size {size} is not a positive multiple of 4 KiB", nameof(size));
        }
        nint host = Libc.Mmap(0, (nuint)size, Libc.PROT_READ | Libc.PROT_WRITE,
            Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_NORESERVE, -1, 0);
        if (host == Libc.MAP_FAILED)
        {
            throw new SysError($"mmap({size} bytes of guest RAM)", Libc.LastErrno);
        }
        Advise(host, size);
        return new GuestRegion(start, size, host, fileOffset);
    }

    /// <summary>
    /// Maps <paramref name="size"/> bytes of <paramref name="fd"/> from <paramref name="fileOffset"/>:
    /// shared (the file is the RAM: a memfd) or private (copy-on-write over a snapshot's memory
    /// file: pages are read on first touch, and the guest's writes never reach the file).
    /// </summary>
    public static GuestRegion MapFile(GuestAddress start, ulong size, int fd, ulong fileOffset, bool shared)
    {
        if (size == 0 || size % 4096 != 0 || fileOffset % 4096 != 0)
        {
            throw new ArgumentException($"region size {size} at file offset {fileOffset} is not page-aligned", nameof(size));
        }
        nint host = Libc.Mmap(0, (nuint)size, Libc.PROT_READ | Libc.PROT_WRITE,
            (shared ? Libc.MAP_SHARED : Libc.MAP_PRIVATE) | Libc.MAP_NORESERVE, fd, (nint)fileOffset);
        if (host == Libc.MAP_FAILED)
        {
            throw new SysError($"mmap({size} bytes of guest RAM from a file)", Libc.LastErrno);
        }
        Advise(host, size);
        return new GuestRegion(start, size, host, fileOffset);
    }

    private static void Advise(nint host, ulong size)
    {
        // Guest RAM is never inherited by a forked helper.
        _ = Libc.Madvise(host, (nuint)size, Libc.MADV_DONTFORK);
        // Transparent huge pages where the host offers them (as QEMU asks too): fewer nested page
        // walks for the guest, and O_DIRECT pins one page per 2 MiB instead of 512.
        // On a memfd they need the host's shmem_enabled to allow them (it says never by default).
        _ = Libc.Madvise(host, (nuint)size, Libc.MADV_HUGEPAGE);
    }

    /// <summary>The VMM's own writes to this region, while <see cref="GuestMemory.TrackDirty"/> is on; null otherwise.</summary>
    public DirtyBitmap? Dirty { get; internal set; }

    public bool Contains(GuestAddress address) => address.Value >= Start.Value && address.Value - Start.Value < Size;

    /// <summary>A span over [address, address+length) when it lies wholly in this region.</summary>
    public bool TryGetSpan(GuestAddress address, ulong length, out Span<byte> span)
    {
        span = default;
        if (!Contains(address) || length > Size - (address.Value - Start.Value) || length > int.MaxValue)
        {
            return false;
        }
        // SAFETY: the range was checked to lie inside this live mapping of Size bytes.
        span = new Span<byte>((byte*)HostAddress + (address.Value - Start.Value), (int)length);
        return true;
    }

    public void Dispose()
    {
        nint host = Interlocked.Exchange(ref _host, 0);
        if (host != 0)
        {
            _ = Libc.Munmap(host, (nuint)Size);
        }
    }
}
