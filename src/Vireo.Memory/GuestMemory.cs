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

    public IReadOnlyList<GuestRegion> Regions => _regions;

    /// <summary>Total bytes of RAM.</summary>
    public ulong Size { get; }

    // Start-up paths use plain loops: LINQ over Vireo's own structs is JIT-compiled at start.
    public GuestMemory(IEnumerable<GuestRegion> regions)
    {
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

    /// <summary>Allocates <paramref name="ramSize"/> bytes laid out around the PCI hole.</summary>
    public static GuestMemory Create(ulong ramSize)
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
        var regions = new List<GuestRegion>();
        try
        {
            foreach (var range in MemoryLayout.RamRegions(ramSize))
            {
                regions.Add(GuestRegion.Allocate(range.Start, range.Size));
            }
        }
        catch
        {
            regions.ForEach(r => r.Dispose());
            throw;
        }
        return new GuestMemory(regions);
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

    public void Write(GuestAddress address, ReadOnlySpan<byte> data) => data.CopyTo(GetSpan(address, (ulong)data.Length));

    public void Read(GuestAddress address, Span<byte> data) => GetSpan(address, (ulong)data.Length).CopyTo(data);

    public T ReadObj<T>(GuestAddress address) where T : unmanaged =>
        MemoryMarshal.Read<T>(GetSpan(address, (ulong)Unsafe.SizeOf<T>()));

    public void WriteObj<T>(GuestAddress address, in T value) where T : unmanaged =>
        MemoryMarshal.Write(GetSpan(address, (ulong)Unsafe.SizeOf<T>()), in value);

    public void Dispose()
    {
        foreach (var r in _regions)
        {
            r.Dispose();
        }
    }
}
