namespace Vireo.Memory;

/// <summary>
/// Runs of 4 KiB pages that hold anything but zeros: what a snapshot writes and a migration's
/// first pass sends (RAM at the other end, a sparse file or a fresh VM's, reads as zeros already).
/// </summary>
public static class ZeroPages
{
    public const int PageSize = 4096;

    /// <summary>
    /// The next run of non-zero pages of <paramref name="span"/> at or after <paramref name="from"/>
    /// (a page offset, moved past the run); false when there is none.
    /// </summary>
    public static bool NextNonZeroRun(ReadOnlySpan<byte> span, ref int from, out int start, out int length)
    {
        start = -1;
        for (int page = from; page <= span.Length; page += PageSize)
        {
            bool zero = page == span.Length || !span.Slice(page, Math.Min(PageSize, span.Length - page)).ContainsAnyExcept((byte)0);
            if (!zero && start < 0)
            {
                start = page;
            }
            else if (zero && start >= 0)
            {
                length = page - start;
                from = page;
                return true;
            }
        }
        from = span.Length;
        length = 0;
        return false;
    }
}
