namespace Vireo.Interop;

/// <summary>
/// /proc/self/pagemap: for each 4 KiB page of this process, whether it is present in RAM or in
/// swap. A page that is neither was never written (anonymous memory reads as zeros there), so a
/// snapshot or a migration skips it without reading it — and without faulting it in.
/// </summary>
public static class PageMap
{
    private const ulong Present = 1UL << 63, Swapped = 1UL << 62;
    private static readonly Lazy<FileDescriptor?> File = new(() =>
    {
        int fd = Libc.Open("/proc/self/pagemap", Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
        return fd < 0 ? null : new FileDescriptor(fd);
    });

    /// <summary>
    /// True when any page of [<paramref name="address"/>, +<paramref name="length"/>) is present or
    /// swapped (and when pagemap cannot be read: then nothing is skipped).
    /// </summary>
    public static bool AnyPopulated(nint address, ulong length)
    {
        if (File.Value is not { } file)
        {
            return true;
        }
        Span<ulong> entries = stackalloc ulong[512];
        ulong first = (ulong)address / 4096, pages = (length + 4095) / 4096;
        for (ulong done = 0; done < pages;)
        {
            int n = (int)Math.Min((ulong)entries.Length, pages - done);
            var bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(entries[..n]);
            if (Libc.PreadFully(file.Fd, bytes, (long)((first + done) * 8)) != bytes.Length)
            {
                return true;
            }
            foreach (ulong e in entries[..n])
            {
                if ((e & (Present | Swapped)) != 0)
                {
                    return true;
                }
            }
            done += (ulong)n;
        }
        return false;
    }
}
