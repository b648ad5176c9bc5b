namespace Vireo.Memory;

/// <summary>
/// One bit a 4 KiB page of a region, set by the VMM's own writes to guest RAM (a device filling a
/// buffer, a used ring, a status byte). KVM's dirty log sees only what the guest's vCPUs write;
/// a snapshot or a migration round needs both, so every device write marks its pages here after
/// it lands. Safe from any thread: bits are set and taken with atomic operations, so a page
/// marked while a round takes the bitmap is either in that round or in the next, never lost.
/// </summary>
public sealed class DirtyBitmap
{
    public const int PageShift = 12;
    private readonly ulong[] _words;

    public DirtyBitmap(ulong bytes)
    {
        Pages = (bytes + (1UL << PageShift) - 1) >> PageShift;
        _words = new ulong[(Pages + 63) / 64];
    }

    public ulong Pages { get; }

    /// <summary>Words of 64 pages each: the length of a bitmap <see cref="TakeInto"/> fills.</summary>
    public int Words => _words.Length;

    /// <summary>Marks the pages under [offset, offset+length) of the region.</summary>
    public void Mark(ulong offset, ulong length)
    {
        if (length == 0)
        {
            return;
        }
        ulong first = offset >> PageShift, last = Math.Min((offset + length - 1) >> PageShift, Pages - 1);
        for (ulong page = first; page <= last; page++)
        {
            ulong bit = 1UL << (int)(page & 63);
            ref ulong word = ref _words[page >> 6];
            if ((Volatile.Read(ref word) & bit) == 0)
            {
                Interlocked.Or(ref word, bit);
            }
        }
    }

    /// <summary>
    /// The next run of set bits of <paramref name="bitmap"/> (one a page, <paramref name="pages"/>
    /// of them) at or after <paramref name="from"/>, at most <paramref name="maxPages"/> long;
    /// <paramref name="from"/> moves past it. False when there is none: what a diff snapshot
    /// writes and a migration round sends, run by run.
    /// </summary>
    public static bool NextRun(ReadOnlySpan<ulong> bitmap, ulong pages, ref ulong from, ulong maxPages, out ulong first, out ulong count)
    {
        ulong page = from;
        while (page < pages)
        {
            ulong word = bitmap[(int)(page >> 6)] >> (int)(page & 63);
            if (word == 0)
            {
                page = (page | 63) + 1; // the rest of this word is clear
                continue;
            }
            page += (ulong)System.Numerics.BitOperations.TrailingZeroCount(word);
            if (page >= pages)
            {
                break;
            }
            first = page;
            while (page < pages && page - first < maxPages && (bitmap[(int)(page >> 6)] & (1UL << (int)(page & 63))) != 0)
            {
                page++;
            }
            count = page - first;
            from = page;
            return true;
        }
        from = pages;
        first = count = 0;
        return false;
    }

    /// <summary>ORs every marked page into <paramref name="bitmap"/> and clears the marks.</summary>
    public void TakeInto(Span<ulong> bitmap)
    {
        for (int i = 0; i < _words.Length && i < bitmap.Length; i++)
        {
            if (Volatile.Read(ref _words[i]) != 0)
            {
                bitmap[i] |= Interlocked.Exchange(ref _words[i], 0);
            }
        }
    }
}
