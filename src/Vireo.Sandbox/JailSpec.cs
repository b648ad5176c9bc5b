namespace Vireo.Sandbox;

/// <summary>
/// One VMM's sandbox, as its launcher (vireod, or `vireo run --sandbox`) asks for it.
/// </summary>
/// <param name="Name">the VM's name: the jail's host name</param>
/// <param name="Uid">the VMM's own user id, from the host's range for VMs (never 0)</param>
/// <param name="Gid">its own group id (never 0)</param>
/// <param name="VmmPath">the vireo-vmm executable on the host; it is bound read-only at /vireo-vmm in the jail</param>
/// <param name="RootMount">an empty host directory the jail's tmpfs root is mounted on (only inside the jail's mount namespace)</param>
/// <param name="VmDir">the VM's directory on the host (API socket, status, snapshots), bound read-write at the same path in the jail and given to the VM's uid</param>
/// <param name="MaxFiles">RLIMIT_NOFILE</param>
/// <param name="MaxProcesses">RLIMIT_NPROC: threads count, since they are tasks of the VM's uid</param>
public sealed record JailSpec(
    string Name,
    uint Uid,
    uint Gid,
    string VmmPath,
    string RootMount,
    string VmDir,
    ulong MaxFiles = 1024,
    ulong MaxProcesses = 256)
{
    /// <summary>Where the VMM's executable is inside the jail.</summary>
    public const string VmmInJail = "/vireo-vmm";

    /// <summary>What is wrong with this spec, in words, or null.</summary>
    public string? Problem() =>
        Uid == 0 || Gid == 0 ? "a sandboxed VMM never runs as uid or gid 0"
        : !Path.IsPathFullyQualified(VmmPath) || !File.Exists(VmmPath) ? $"the VMM executable {VmmPath} does not exist"
        : !Path.IsPathFullyQualified(VmDir) || !Directory.Exists(VmDir) ? $"the VM directory {VmDir} does not exist"
        : !Path.IsPathFullyQualified(RootMount) || !Directory.Exists(RootMount) ? $"the jail's mount point {RootMount} does not exist"
        : MaxFiles < 64 ? "at least 64 open files are needed"
        : MaxProcesses < 8 ? "at least 8 threads are needed"
        : null;
}
