namespace Vireo.Interop;

/// <summary>The host's physical RAM (MemTotal in /proc/meminfo): a VM larger than it is refused up front.</summary>
public static class HostMemory
{
    private static readonly Lazy<ulong?> Total = new(Read);

    /// <summary>MemTotal in bytes; null when /proc/meminfo cannot be read (then no VM is refused for its size).</summary>
    public static ulong? TotalBytes => Total.Value;

    public const string ShmemHugePagesPath = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";

    /// <summary>
    /// True when a MAP_SHARED memfd mapping that asks for transparent huge pages (MADV_HUGEPAGE)
    /// gets them: the host's shmem policy is advise, within_size, always or force (the bracketed
    /// word of shmem_enabled). Read afresh each time: the control plane may change it.
    /// </summary>
    public static bool ShmemHugePages
    {
        get
        {
            try
            {
                string policy = File.ReadAllText(ShmemHugePagesPath);
                int open = policy.IndexOf('['), close = policy.IndexOf(']');
                return open >= 0 && close > open && policy[(open + 1)..close] is "advise" or "within_size" or "always" or "force";
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return false;
            }
        }
    }

    private static ulong? Read()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/meminfo"))
            {
                // "MemTotal:       24684084 kB"
                if (line.StartsWith("MemTotal:", StringComparison.Ordinal)
                    && ulong.TryParse(line["MemTotal:".Length..].Trim().Split(' ')[0], out ulong kib))
                {
                    return kib << 10;
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
        return null;
    }
}
