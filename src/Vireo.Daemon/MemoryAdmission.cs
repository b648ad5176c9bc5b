namespace Vireo.Daemon;

/// <summary>
/// Whether a VM's memory fits the host: a pure function of measured numbers (the host's MemTotal,
/// what running VMs were started with), so a test can feed it any. No overcommit: guest RAM is
/// counted in full. The memory/overcommit manager will replace this policy (balloons, reclaim).
/// </summary>
internal static class MemoryAdmission
{
    /// <summary>At define: a VM larger than the whole host can never start. Null when it may.</summary>
    public static string? CheckDefine(long askMib, long hostMib) =>
        askMib > hostMib ? $"{askMib} MiB is more than this host's {hostMib} MiB of RAM (MemTotal)" : null;

    /// <summary>At start: running VMs plus this one must fit the host. Null when it fits, else why not.</summary>
    public static string? CheckStart(string name, long askMib, long committedMib, long hostMib) =>
        committedMib + askMib > hostMib
            ? $"memory_mib: '{name}' asks for {askMib} MiB, but {committedMib} MiB are committed to running VMs and this host has {hostMib} MiB of RAM (MemTotal): " +
              $"{committedMib + askMib} MiB would not fit"
            : null;

    /// <summary>MemTotal from /proc/meminfo, in MiB.</summary>
    public static long? HostMib() => Vireo.Interop.HostMemory.TotalBytes is ulong bytes ? (long)(bytes >> 20) : null;
}
