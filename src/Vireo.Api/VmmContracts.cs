using System.Text.Json.Serialization;

namespace Vireo.Api;

// The per-VM VMM process's REST API (vireo-vmm --api-sock PATH), in Firecracker's shape:
// PUT the pieces of the machine, then PUT /actions InstanceStart. Field names are snake_case.

/// <summary>PUT /boot-source: the kernel, its initrd and command line.</summary>
public sealed record BootSource(
    [property: JsonRequired] string KernelImagePath,
    string? InitrdPath = null,
    string? BootArgs = null);

/// <summary>
/// PUT /machine-config: vCPUs and RAM. With restart_on_reboot false, a guest reboot ends the
/// process (status "Reset") and the supervisor applies its on_reboot policy. track_dirty_pages
/// (Firecracker's) records the pages written from start-up on, for Diff snapshots.
/// memory_backing: Memfd puts RAM on a memfd, which a local migration hands over instead of
/// copying (Cloud Hypervisor's shared=on); Anonymous, plain private memory; Auto (the default)
/// picks the memfd only where the host gives shared memory huge pages.
/// </summary>
public sealed record MachineConfig(
    [property: JsonRequired] int VcpuCount,
    [property: JsonRequired] long MemSizeMib,
    bool Acpi = true,
    bool RestartOnReboot = true,
    bool TrackDirtyPages = false,
    string MemoryBacking = MachineConfig.Auto)
{
    public const string Auto = "Auto", Memfd = "Memfd", Anonymous = "Anonymous";
}

/// <summary>PUT /drives/{drive_id}: a virtio-blk disk.</summary>
public sealed record Drive(
    [property: JsonRequired] string DriveId,
    [property: JsonRequired] string PathOnHost,
    bool IsReadOnly = false,
    bool Direct = false);

/// <summary>PUT /network-interfaces/{iface_id}: a virtio-net interface on a TAP device.</summary>
public sealed record NetworkInterface(
    [property: JsonRequired] string IfaceId,
    [property: JsonRequired] string HostDevName,
    string? GuestMac = null);

/// <summary>PUT /vsock: the virtio-vsock device and the host's Unix socket for it.</summary>
public sealed record Vsock(
    [property: JsonRequired] ulong GuestCid,
    [property: JsonRequired] string UdsPath);

/// <summary>PUT /actions.</summary>
public sealed record InstanceAction([property: JsonRequired] string ActionType)
{
    public const string InstanceStart = "InstanceStart", Pause = "Pause", Resume = "Resume",
        Shutdown = "Shutdown", Reset = "Reset", Stop = "Stop";
    public static readonly string[] All = [InstanceStart, Pause, Resume, Shutdown, Reset, Stop];
}

/// <summary>PATCH /vm (Firecracker's): pause or resume the whole VM.</summary>
public sealed record VmStatePatch([property: JsonRequired] string State)
{
    public const string Paused = "Paused", Resumed = "Resumed";
}

/// <summary>PUT /snapshot/create (Firecracker's): the VM must be paused; its state goes to snapshot_path, its RAM to mem_file_path.</summary>
public sealed record SnapshotCreateParams(
    [property: JsonRequired] string SnapshotPath,
    [property: JsonRequired] string MemFilePath,
    string SnapshotType = SnapshotCreateParams.Full)
{
    public const string Full = "Full", Diff = "Diff";
}

/// <summary>Where a restored VM's RAM comes from: backend_type File (the memory file, mapped copy-on-write).</summary>
public sealed record MemoryBackend(
    [property: JsonRequired] string BackendType,
    [property: JsonRequired] string BackendPath)
{
    public const string File = "File", Uffd = "Uffd";
}

/// <summary>
/// PUT /snapshot/load (Firecracker's), on a vireo-vmm that has not started a VM: mem_backend, or
/// the older mem_file_path; resume_vm runs it at once, else it waits paused for PATCH /vm.
/// </summary>
public sealed record SnapshotLoadParams(
    [property: JsonRequired] string SnapshotPath,
    MemoryBackend? MemBackend = null,
    string? MemFilePath = null,
    bool ResumeVm = false,
    bool EnableDiffSnapshots = false,
    bool TrackDirtyPages = false);

/// <summary>PUT /migration/receive (Cloud Hypervisor's receive-migration), on a vireo-vmm that has not started a VM: where to wait for the source.</summary>
public sealed record MigrationReceiveParams([property: JsonRequired] string ReceiverUrl);

/// <summary>
/// PUT /migration/send (Cloud Hypervisor's send-migration): where to, the pause the guest can bear
/// at the end (downtime_ms), how long pre-copy may take (timeout_s) and what then
/// (timeout_strategy: cancel, the VM goes on here; force, it stops and copies what is left).
/// local: a unix: destination on this host takes the RAM's memfd instead of a copy.
/// </summary>
public sealed record MigrationSendParams(
    [property: JsonRequired] string DestinationUrl,
    long DowntimeMs = 300,
    long TimeoutS = 3600,
    string TimeoutStrategy = MigrationSendParams.Cancel,
    bool Local = false)
{
    public const string Cancel = "cancel", Force = "force";
}

/// <summary>
/// GET /migration: where a migration is. state None, Receiving, Connecting, Copying,
/// StopAndCopy, Completed or Failed; round, the pages left to send and the rate measured;
/// expected_downtime_ms at that rate; downtime_ms once the source stopped and copied.
/// </summary>
public sealed record MigrationInfo(
    string State,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? Url,
    int Round,
    long PagesTotal,
    long PagesLeft,
    long BytesSent,
    double RateMibS,
    double ExpectedDowntimeMs,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] double? DowntimeMs,
    double ElapsedMs,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? Error);

/// <summary>GET /vm: where the VM is, what it is made of, and its counters.</summary>
public sealed record VmInfo(
    string State,
    int VcpuCount,
    long MemSizeMib,
    string? KernelImagePath,
    int Boots,
    long Exits,
    string? LastOutcome);

/// <summary>Every 4xx/5xx body: the reason, and for a refused definition every field at fault.</summary>
public sealed record ApiError(string FaultMessage, Definitions.SchemaError[]? Errors = null);

/// <summary>
/// The VM's states as GET /vm reports them. Starting: InstanceStart is opening the VM's files and
/// building it; the configuration is fixed, and it ends in Running, or back in NotStarted if refused.
/// </summary>
public static class VmState
{
    public const string NotStarted = "NotStarted", Starting = "Starting", Running = "Running", Paused = "Paused", Stopped = "Stopped",
        Receiving = "Receiving", Migrated = "Migrated";
}

/// <summary>System.Text.Json metadata made at build time: no reflection, unknown fields refused.</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(BootSource))]
[JsonSerializable(typeof(MachineConfig))]
[JsonSerializable(typeof(Drive))]
[JsonSerializable(typeof(NetworkInterface))]
[JsonSerializable(typeof(Vsock))]
[JsonSerializable(typeof(InstanceAction))]
[JsonSerializable(typeof(VmInfo))]
[JsonSerializable(typeof(ApiError))]
[JsonSerializable(typeof(VmStatePatch))]
[JsonSerializable(typeof(SnapshotCreateParams))]
[JsonSerializable(typeof(SnapshotLoadParams))]
[JsonSerializable(typeof(MigrationReceiveParams))]
[JsonSerializable(typeof(MigrationSendParams))]
[JsonSerializable(typeof(MigrationInfo))]
public sealed partial class VmmJson : JsonSerializerContext;
