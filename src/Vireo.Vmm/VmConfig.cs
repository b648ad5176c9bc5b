using Vireo.Virtio.Block;
using Vireo.Virtio.Net;
using Vireo.Virtio.Vsock;

namespace Vireo.Vmm;

/// <summary>How virtio devices appear to the guest.</summary>
public enum VirtioTransportKind
{
    /// <summary>virtio-pci modern: what stock Linux distributions bind to (the default).</summary>
    Pci,
    /// <summary>virtio-mmio windows announced on the command line (virtio_mmio.device=), as Firecracker does.</summary>
    Mmio,
}

/// <summary>What guest RAM lives in.</summary>
public enum MemoryBacking
{
    /// <summary>A memfd where the host gives shared memory huge pages (shmem_enabled advise or more), else anonymous memory.</summary>
    Auto,
    /// <summary>A memfd: the file is the RAM, so a snapshot reads it in place and a new VMM on this host can take it over by fd.</summary>
    Memfd,
    /// <summary>Anonymous memory: transparent huge pages whatever the shmem policy, and the only kind KSM merges.</summary>
    Anonymous,
}

/// <summary>What a VM is made of: the boot source and the machine size. Validated by <see cref="Validate"/>.</summary>
public sealed record VmConfig
{
    public required string KernelPath { get; init; }
    public string? InitrdPath { get; init; }
    public string Cmdline { get; init; } = "console=ttyS0 reboot=k panic=1";
    public ulong MemoryBytes { get; init; } = 256UL << 20;
    public int Vcpus { get; init; } = 1;

    /// <summary>Adds the isa-debug-exit style port 0xf4 that test guests use to report a status.</summary>
    public bool DebugExit { get; init; }

    /// <summary>virtio-blk disks, in the order the guest sees them.</summary>
    public IReadOnlyList<BlockConfig> Disks { get; init; } = [];

    /// <summary>virtio-net interfaces, in the order the guest sees them.</summary>
    public IReadOnlyList<NetConfig> Nets { get; init; } = [];

    /// <summary>A virtio-vsock device, host side on a Unix socket (CONNECT port).</summary>
    public VsockConfig? Vsock { get; init; }

    /// <summary>Adds a virtio-rng fed by the host's getrandom.</summary>
    public bool Rng { get; init; }

    /// <summary>Puts the console on virtio-console (hvc0) as well as COM1; host input goes to it.</summary>
    public bool VirtioConsole { get; init; }

    public VirtioTransportKind Transport { get; init; } = VirtioTransportKind.Pci;

    public MemoryBacking MemoryBacking { get; init; } = MemoryBacking.Auto;

    /// <summary>
    /// Records the pages written to RAM from start-up on (KVM's dirty log and the devices'), so
    /// that a Diff snapshot can write only those (Firecracker's track_dirty_pages). It costs the
    /// guest some speed: KVM maps its RAM in 4 KiB pages and takes a fault on each page's first
    /// write after every snapshot.
    /// </summary>
    public bool TrackDirtyPages { get; init; }

    /// <summary>
    /// What <see cref="MemoryBacking"/> means on this host now. Auto is a memfd only where the
    /// host's shmem policy gives it huge pages: without them, a guest that touches all its RAM
    /// took 5 times longer on this nested host (memtest over 3.25 GiB: 42 s against 8 s).
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public MemoryBacking ResolvedMemoryBacking => MemoryBacking switch
    {
        MemoryBacking.Auto => Interop.HostMemory.ShmemHugePages ? MemoryBacking.Memfd : MemoryBacking.Anonymous,
        var b => b,
    };

    /// <summary>ACPI tables and power registers (poweroff and reboot from the guest); without them the guest has only the MP table.</summary>
    public bool Acpi { get; init; } = true;

    /// <summary>virtio devices this config asks for.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int VirtioDeviceCount => Disks.Count + Nets.Count + (Rng ? 1 : 0) + (VirtioConsole ? 1 : 0) + (Vsock is null ? 0 : 1);

    public const int MaxVirtioDevices = 16;

    public const int MaxVcpus = 254;

    /// <summary>Throws <see cref="VmConfigException"/> naming the first field that is wrong.</summary>
    public void Validate()
    {
        ValidateSettings();
        if (!Path.Exists(KernelPath))
        {
            throw new VmConfigException($"kernel: no such file: {KernelPath}");
        }
        if (InitrdPath is not null && !Path.Exists(InitrdPath))
        {
            throw new VmConfigException($"initrd: no such file: {InitrdPath}");
        }
        foreach (var disk in Disks)
        {
            if (!File.Exists(disk.Path) && !Path.Exists(disk.Path))
            {
                throw new VmConfigException($"disk: no such file: {disk.Path}");
            }
        }
    }

    /// <summary>
    /// Everything but the paths: what a reboot checks, building from the files opened at the first
    /// boot (<see cref="VmFiles"/>), when the paths may be gone.
    /// </summary>
    internal void ValidateSettings()
    {
        if (Vcpus < 1 || Vcpus > MaxVcpus)
        {
            throw new VmConfigException($"vcpus: {Vcpus} is outside 1..{MaxVcpus}");
        }
        if (MemoryBytes < Memory.MemoryLayout.MinRam || MemoryBytes > Memory.MemoryLayout.MaxRam)
        {
            throw new VmConfigException($"memory: {MemoryBytes >> 20} MiB is outside {Memory.MemoryLayout.MinRam >> 20} MiB..{Memory.MemoryLayout.MaxRam >> 30} GiB");
        }
        if (Interop.HostMemory.TotalBytes is { } host && MemoryBytes > host)
        {
            throw new VmConfigException($"memory: {MemoryBytes >> 20} MiB is more than this host's RAM ({host >> 20} MiB)");
        }
        if (MemoryBytes % 4096 != 0)
        {
            throw new VmConfigException("memory: must be a multiple of 4 KiB");
        }
        if (VirtioDeviceCount > MaxVirtioDevices)
        {
            throw new VmConfigException($"devices: {VirtioDeviceCount} virtio devices; at most {MaxVirtioDevices}");
        }
    }

    /// <summary>Parses sizes like 256M, 1G, 512MiB, 1T or a plain number of MiB.</summary>
    public static ulong ParseSize(string text)
    {
        string t = text.Trim();
        ulong multiplier = 1UL << 20;
        string digits = t;
        string[] suffixes = ["TiB", "GiB", "MiB", "KiB", "T", "G", "M", "K"];
        int[] shifts = [40, 30, 20, 10, 40, 30, 20, 10];
        for (int i = 0; i < suffixes.Length; i++)
        {
            if (t.EndsWith(suffixes[i], StringComparison.OrdinalIgnoreCase))
            {
                multiplier = 1UL << shifts[i];
                digits = t[..^suffixes[i].Length];
                break;
            }
        }
        if (!ulong.TryParse(digits, out ulong n) || n == 0 || n > ulong.MaxValue / multiplier)
        {
            throw new VmConfigException($"memory: '{text}' is not a size (examples: 256M, 2G)");
        }
        return n * multiplier;
    }
}

public sealed class VmConfigException(string message) : Exception(message);
