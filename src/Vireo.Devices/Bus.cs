namespace Vireo.Devices;

/// <summary>
/// Sorted, non-overlapping address ranges mapped to devices. Inserting replaces the array
/// wholesale, so the lookup on the vCPU exit path is a lock-free binary search.
/// </summary>
public sealed class Bus
{
    public readonly record struct Range(ulong Base, ulong Length, IBusDevice Device)
    {
        public ulong End => Base + Length;
    }

    private Range[] _ranges = [];
    private readonly Lock _writeLock = new();

    public IReadOnlyList<Range> Ranges => Volatile.Read(ref _ranges);

    /// <summary>Adds a device at [base, base+length); throws if it overlaps another.</summary>
    public void Insert(IBusDevice device, ulong @base, ulong length)
    {
        if (length == 0 || @base + length < @base)
        {
            throw new ArgumentException($"invalid bus range 0x{@base:x}+0x{length:x}");
        }
        lock (_writeLock)
        {
            var current = _ranges;
            foreach (var r in current)
            {
                if (@base < r.End && r.Base < @base + length)
                {
                    throw new InvalidOperationException($"bus range 0x{@base:x}+0x{length:x} overlaps 0x{r.Base:x}+0x{r.Length:x}");
                }
            }
            // Insert in order by hand: a generic sort over Range would be JIT-compiled at start-up.
            var next = new Range[current.Length + 1];
            int at = 0;
            while (at < current.Length && current[at].Base < @base)
            {
                next[at] = current[at];
                at++;
            }
            next[at] = new Range(@base, length, device);
            for (int i = at; i < current.Length; i++)
            {
                next[i + 1] = current[i];
            }
            Volatile.Write(ref _ranges, next);
        }
    }

    /// <summary>Removes the range that starts at <paramref name="base"/>; false when there is none.</summary>
    public bool Remove(ulong @base)
    {
        lock (_writeLock)
        {
            var current = _ranges;
            int at = Array.FindIndex(current, r => r.Base == @base);
            if (at < 0)
            {
                return false;
            }
            var next = new Range[current.Length - 1];
            Array.Copy(current, 0, next, 0, at);
            Array.Copy(current, at + 1, next, at, current.Length - at - 1);
            Volatile.Write(ref _ranges, next);
            return true;
        }
    }

    /// <summary>Finds the device and offset for an access of <paramref name="size"/> bytes at <paramref name="address"/>.</summary>
    public bool TryResolve(ulong address, int size, out IBusDevice device, out ulong offset)
    {
        var ranges = Volatile.Read(ref _ranges);
        int lo = 0, hi = ranges.Length - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            ref readonly var r = ref ranges[mid];
            if (address < r.Base)
            {
                hi = mid - 1;
            }
            else if (address >= r.End)
            {
                lo = mid + 1;
            }
            else
            {
                // The whole access must stay inside the range.
                if ((ulong)size > r.End - address)
                {
                    break;
                }
                device = r.Device;
                offset = address - r.Base;
                return true;
            }
        }
        device = null!;
        offset = 0;
        return false;
    }

    /// <summary>A read; unclaimed addresses read as all ones, as on real hardware. False when unclaimed.</summary>
    public bool Read(ulong address, Span<byte> data)
    {
        if (TryResolve(address, data.Length, out var device, out ulong offset))
        {
            device.Read(offset, data);
            return true;
        }
        data.Fill(0xff);
        return false;
    }

    /// <summary>A write; writes to unclaimed addresses are dropped. False when unclaimed.</summary>
    public bool Write(ulong address, ReadOnlySpan<byte> data)
    {
        if (TryResolve(address, data.Length, out var device, out ulong offset))
        {
            device.Write(offset, data);
            return true;
        }
        return false;
    }
}
