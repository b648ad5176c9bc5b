namespace Vireo.Interop;

/// <summary>The host's physical RAM (MemTotal in /proc/meminfo): a VM larger than it is refused up front.</summary>
public static class HostMemory
{
    private static readonly Lazy<ulong?> Total = new(Read);

    /// <summary>MemTotal in bytes; null when /proc/meminfo cannot be read (then no VM is refused for its size).</summary>
    public static ulong? TotalBytes => Total.Value;

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
