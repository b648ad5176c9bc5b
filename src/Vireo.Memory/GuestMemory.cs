using Vireo.Interop;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Vireo.Memory;

/// <summary>
/// The whole of a VM's RAM: sorted, non-overlapping regions with bounds-checked access.
/// Every guest-supplied address goes through here; nothing outside a region is reachable.
/// </summary>
public sealed class GuestMemory : IDisposable
{
    private readonly GuestRegion[] _regions;
    private readonly FileDescriptor? _backing;

    public IReadOnlyList<GuestRegion> Regions => _regions;

    /// <summary>Total bytes of RAM.</summary>
    public ulong Size { get; }

    /// <summary>
    /// The file the RAM lives in, each region at its <see cref="GuestRegion.FileOffset"/>: the VM's
    /// memfd (<see cref="IsShared"/>: the file is the RAM, so it can be handed to another process),
    /// or a snapshot's memory file mapped copy-on-write. Null for anonymous RAM.
    /// </summary>
    public FileDescriptor? Backing => _backing;

    /// <summary>True when the RAM is the backing file's pages themselves (MAP_SHARED on the memfd).</summary>
    public bool IsShared { get; }

    // Start-up paths use plain loops: LINQ over Vireo's own structs is JIT-compiled at start.
    public GuestMemory(IEnumerable<GuestRegion> regions) : this(regions, null, false)
    {
    }

    private GuestMemory(IEnumerable<GuestRegion> regions, FileDescriptor? backing, bool shared)
    {
        _backing = backing;
        IsShared = shared;
        var sorted = new List<GuestRegion>(regions);
        sorted.Sort(static (a, b) => a.Start.Value.CompareTo(b.Start.Value));
        _regions = sorted.ToArray();
        for (int i = 0; i < _regions.Length; i++)
        {
            if (i > 0 && _regions[i].Start.Value < _regions[i - 1].End.Value)
            {
                throw new ArgumentException($"guest regions overlap at {_regions[i].Start}");
            }
            Size += _regions[i].Size;
        }
    }

    /// <summary>
    /// Allocates <paramref name="ramSize"/> bytes laid out around the PCI hole, on a memfd of that
    /// size (the regions one after another in it, the hole left out): one backing that serves a
    /// snapshot (the file is the RAM), a handover to a new VMM on the same host (the fd), and
    /// later vhost-user. Untouched pages cost nothing.
    /// </summary>
    public static GuestMemory Create(ulong ramSize)
    {
        CheckSize(ramSize);
        int fd = Libc.MemfdCreate("vireo-guest-ram", Libc.MFD_CLOEXEC);
        if (fd < 0)
        {
            throw new SysError("memfd_create(guest RAM)", Libc.LastErrno);
        }
        var memfd = new FileDescriptor(fd);
        try
        {
            if (Libc.Ftruncate(fd, (long)ramSize) != 0)
            {
                throw new SysError($"ftruncate(guest RAM, {ramSize})", Libc.LastErrno);
            }
            return FromFile(memfd, ramSize, shared: true);
        }
        catch
        {
            memfd.Dispose();
            throw;
        }
    }

    /// <summary>
    /// RAM of <paramref name="ramSize"/> bytes over <paramref name="file"/> (laid out as
    /// <see cref="Create"/> lays out its memfd), which the memory then owns: shared (it is the RAM)
    /// or private (copy-on-write over a snapshot's memory file: nothing is read until the guest touches it).
    /// The caller has checked that the file holds <paramref name="ramSize"/> bytes.
    /// </summary>
    public static GuestMemory FromFile(FileDescriptor file, ulong ramSize, bool shared)
    {
        CheckSize(ramSize);
        var regions = new List<GuestRegion>();
        try
        {
            ulong offset = 0;
            foreach (var range in MemoryLayout.RamRegions(ramSize))
            {
                regions.Add(GuestRegion.MapFile(range.Start, range.Size, file.Fd, offset, shared));
                offset += range.Size;
            }
        }
        catch
        {
            regions.ForEach(r => r.Dispose());
            throw;
        }
        return new GuestMemory(regions, file, shared);
    }

    /// <summary>Anonymous RAM (no file behind it): what a test VM or a page-sharing VM (KSM merges only anonymous pages) uses.</summary>
    public static GuestMemory CreateAnonymous(ulong ramSize)
    {
        CheckSize(ramSize);
        var regions = new List<GuestRegion>();
        ulong offset = 0;
        try
        {
            foreach (var range in MemoryLayout.RamRegions(ramSize))
            {
                regions.Add(GuestRegion.Allocate(range.Start, range.Size, offset));
                offset += range.Size;
            }
        }
        catch
        {
            regions.ForEach(r => r.Dispose());
            throw;
        }
        return new GuestMemory(regions);
    }

    private static void CheckSize(ulong ramSize)
    {
        if (ramSize < MemoryLayout.MinRam || ramSize > MemoryLayout.MaxRam)
        {
            throw new ArgumentOutOfRangeException(nameof(ramSize),
                $"memory must be between {MemoryLayout.MinRam / MemoryLayout.MiB} MiB and {MemoryLayout.MaxRam / MemoryLayout.GiB} GiB");
        }
        if (ramSize % 4096 != 0)
        {
            throw new ArgumentException("memory size must be a multiple of 4 KiB", nameof(ramSize));
        }
    }

    /// <summary>Highest RAM address + 1 below 4 GiB.</summary>
    public ulong LowRamEnd
    {
        get
        {
            ulong end = 0;
            foreach (var r in _regions)
            {
                if (r.Start.Value < MemoryLayout.PciHoleStart)
                {
                    end = Math.Max(end, r.End.Value);
                }
            }
            return end;
        }
    }

    public GuestRegion? FindRegion(GuestAddress address)
    {
        int lo = 0, hi = _regions.Length - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            var r = _regions[mid];
            if (address.Value < r.Start.Value)
            {
                hi = mid - 1;
            }
            else if (address.Value >= r.End.Value)
            {
                lo = mid + 1;
            }
            else
            {
                return r;
            }
        }
        return null;
    }

    /// <summary>True when [address, address+length) is wholly RAM inside one region.</summary>
    public bool IsValidRange(GuestAddress address, ulong length) =>
        FindRegion(address) is { } r && length <= r.End.Value - address.Value;

    /// <summary>A host span for a guest range that lies inside one region; false otherwise.</summary>
    public bool TryGetSpan(GuestAddress address, ulong length, out Span<byte> span)
    {
        span = default;
        return FindRegion(address) is { } r && r.TryGetSpan(address, length, out span);
    }

    /// <summary>A span for a range the caller must have validated; throws on a bad range.</summary>
    public Span<byte> GetSpan(GuestAddress address, ulong length) =>
        TryGetSpan(address, length, out var span)
            ? span
            : throw new ArgumentOutOfRangeException(nameof(address), $"guest range {address}+0x{length:x} is not RAM");

    public void Write(GuestAddress address, ReadOnlySpan<byte> data)
    {
        data.CopyTo(GetSpan(address, (ulong)data.Length));
        MarkDirty(address, (ulong)data.Length);
    }

    /// <summary>
    /// True while the VMM's own writes to RAM are recorded (a diff snapshot or a migration needs
    /// them beside KVM's dirty log). Turning it on starts every region's <see cref="DirtyBitmap"/>
    /// empty; turning it off drops them.
    /// </summary>
    public bool TrackDirty
    {
        get => _regions.Length > 0 && _regions[0].Dirty is not null;
        set
        {
            foreach (var r in _regions)
            {
                r.Dirty = value ? new DirtyBitmap(r.Size) : null;
            }
        }
    }

    /// <summary>
    /// Records that the VMM wrote [address, address+length): called by every device write to
    /// guest RAM once the bytes have landed (marking earlier could let a migration round take the
    /// mark before the write, and send the old bytes). Costs one load when tracking is off.
    /// </summary>
    public void MarkDirty(GuestAddress address, ulong length)
    {
        if (_regions.Length == 0 || _regions[0].Dirty is null)
        {
            return;
        }
        while (length > 0 && FindRegion(address) is { Dirty: { } bits } r)
        {
            ulong offset = address.Value - r.Start.Value, n = Math.Min(length, r.Size - offset);
            bits.Mark(offset, n);
            address = address.Add(n);
            length -= n;
        }
    }

    public void Read(GuestAddress address, Span<byte> data) => GetSpan(address, (ulong)data.Length).CopyTo(data);

    public T ReadObj<T>(GuestAddress address) where T : unmanaged =>
        MemoryMarshal.Read<T>(GetSpan(address, (ulong)Unsafe.SizeOf<T>()));

    public void WriteObj<T>(GuestAddress address, in T value) where T : unmanaged
    {
        MemoryMarshal.Write(GetSpan(address, (ulong)Unsafe.SizeOf<T>()), in value);
        MarkDirty(address, (ulong)Unsafe.SizeOf<T>());
    }

    /// <summary>
    /// False when [offset, offset+length) of <paramref name="region"/> surely reads as zeros without
    /// being read: no data in the backing file there, and (unless the RAM is the file itself) no page
    /// of this process's mapping ever populated (pagemap: neither present nor swapped). A snapshot
    /// and a migration skip such ranges, so their cost follows the RAM the guest used, not its size.
    /// </summary>
    public bool MayHoldData(GuestRegion region, ulong offset, ulong length)
    {
        if (_backing is { } file)
        {
            long at = (long)(region.FileOffset + offset);
            long data = Libc.Lseek(file.Fd, at, Libc.SEEK_DATA);
            if (data >= 0 && data < at + (long)length)
            {
                return true; // -1 (ENXIO): no data from here to the end
            }
            if (IsShared)
            {
                return false; // shared: whatever the guest wrote is in the file
            }
        }
        return PageMap.AnyPopulated(region.HostAddress + (nint)offset, length);
    }

    /// <summary>
    /// <see cref="MarkDirty"/> for a range given by its host address (a vector handed to the
    /// kernel for an asynchronous read lands there). Host ranges outside guest RAM are ignored.
    /// </summary>
    public unsafe void MarkDirtyHost(nint host, ulong length)
    {
        if (_regions.Length == 0 || _regions[0].Dirty is null)
        {
            return;
        }
        foreach (var r in _regions)
        {
            ulong offset = (ulong)(host - r.HostAddress);
            if (host >= r.HostAddress && offset < r.Size)
            {
                r.Dirty?.Mark(offset, Math.Min(length, r.Size - offset));
                return;
            }
        }
    }

    public void Dispose()
    {
        foreach (var r in _regions)
        {
            r.Dispose();
        }
        _backing?.Dispose();
    }
}
