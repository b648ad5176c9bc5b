using System.Text.Json.Serialization;

namespace Vireo.Api;

// The daemon's API (vireod --socket PATH): VMs by name, defined once, started many times.

/// <summary>What to do when the guest powers off, reboots, or its VMM process dies (xl's on_*).</summary>
public static class LifecyclePolicy
{
    public const string Destroy = "destroy", Restart = "restart", Preserve = "preserve";
    public static readonly string[] All = [Destroy, Restart, Preserve];
}

/// <summary>
/// POST /vms, PUT /vms/{name}: a VM definition, in JSON or YAML (left out when null: the schema has no nulls;
/// every answer vireod gives keeps each key, null when empty). Its schema is
/// Definitions/vm-definition.schema.json, served at GET /schemas/vm-definition.
/// </summary>
public sealed record VmDefinition(
    [property: JsonRequired] string Name,
    [property: JsonRequired] string Kernel,
    int Vcpus = 1,
    long MemoryMib = 256,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Initrd = null,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Cmdline = null,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] DiskDefinition[]? Disks = null,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] NetDefinition[]? Nets = null,
    bool Acpi = true,
    string OnPoweroff = LifecyclePolicy.Destroy,
    string OnReboot = LifecyclePolicy.Restart,
    string OnCrash = LifecyclePolicy.Destroy,
    bool Autostart = false);

/// <summary>A virtio-blk disk backed by a host file.</summary>
public sealed record DiskDefinition([property: JsonRequired] string Path, bool ReadOnly = false);

/// <summary>A virtio-net interface on an existing host TAP device.</summary>
public sealed record NetDefinition([property: JsonRequired] string Tap,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Mac = null);

/// <summary>One VM as GET /vms/{name} reports it.</summary>
public sealed record VmSummary(
    string Name,
    int Id,
    string State,
    int Vcpus,
    long MemoryMib,
    int? Pid,
    double? UptimeSeconds,
    string? LastExit,
    VmDefinition Definition,
    string? SavedTo = null,
    string Tenant = Tenants.Default);

/// <summary>
/// One row of GET /vms and of `vireo list --json`: a stable, documented shape (docs/cli.md).
/// Every field is always present (null when it does not apply); fields are only ever added, never renamed or removed.
/// </summary>
public sealed record VmListEntry(
    string Name,
    int Id,
    string State,
    int Vcpus,
    long MemoryMib,
    double? UptimeSeconds,
    int? Pid,
    string? SavedTo = null,
    string Tenant = Tenants.Default);

/// <summary>POST /vms/{name}/shutdown: how long the guest gets to power off before it is destroyed.</summary>
public sealed record ShutdownRequest(int TimeoutSeconds = 60);

/// <summary>POST /vms/{name}/rename.</summary>
public sealed record RenameRequest([property: JsonRequired] string NewName);

/// <summary>
/// POST /vms/{name}/save and POST /restore: a save file, an absolute path on the daemon's host. A save
/// is two files: FILE, the VM's state (small), and FILE.mem beside it, its RAM (sparse: the guest's
/// untouched pages take no space).
/// </summary>
public sealed record SaveRequest([property: JsonRequired] string File)
{
    /// <summary>Where a save's RAM goes: beside its state file.</summary>
    public static string MemoryFileOf(string file) => file + ".mem";
}

/// <summary>POST /vms/{name}/snapshots: the snapshot's name (letters, digits, '.', '_', '-'); a UTC timestamp when left out.</summary>
public sealed record SnapshotRequest(string? Name = null);

/// <summary>One snapshot of GET /vms/{name}/snapshots and of `vireo snapshot list --json`: every field always present.</summary>
public sealed record SnapshotInfo(string Name, DateTime CreatedAt, long SizeBytes, long MemoryMib);

/// <summary>
/// GET /vms/{name}/progress: the save, snapshot or migration under way, if any (operation null when none).
/// bytes_written is what the RAM file holds so far; bytes_total is the guest's RAM, an upper bound
/// (pages the guest never wrote are not written), so a save can end below it.
/// During a migration (operation "migrate"), bytes_written is what was sent so far (RAM pages sent
/// again in later rounds count again), bytes_total the guest's RAM, and migration the source VMM's
/// GET /migration; migration is null for a save or snapshot, and when there is no operation.
/// </summary>
public sealed record OperationProgress(string? Operation, long BytesWritten, long BytesTotal,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] MigrationInfo? Migration = null);

/// <summary>
/// POST /vms/{name}/migrate: move a running VM to another vireod (xl migrate). destination is that
/// vireod's API socket on this host (unix:PATH, or a bare absolute path); downtime_ms, timeout_s and
/// timeout_strategy are the VMM's migration/send's (cancel: the VM runs on here; force: it stops and copies what is left).
/// </summary>
public sealed record MigrateRequest(
    [property: JsonRequired] string Destination,
    long DowntimeMs = 300,
    long TimeoutS = 3600,
    string TimeoutStrategy = MigrationSendParams.Cancel);

/// <summary>The answer to POST /vms/{name}/migrate once the VM runs on the destination (it is undefined here).</summary>
public sealed record MigrationResult(
    string Name,
    string Destination,
    string State,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] int? Pid,
    double ElapsedMs,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] double? DowntimeMs,
    long BytesSent,
    int Rounds);

/// <summary>
/// POST /migrations/incoming, from one vireod to another: a VM about to arrive. definition is what it
/// is defined as (its next start); running, what its VMM runs, with the fd number each of those
/// files has in it (fds: field to number), since the VM's config names them /proc/self/fd/N.
/// </summary>
public sealed record IncomingMigration(
    [property: JsonRequired] string Name,
    [property: JsonRequired] VmDefinition Definition,
    [property: JsonRequired] VmDefinition Running,
    [property: JsonRequired] Dictionary<string, int> Fds,
    string Tenant = Tenants.Default);

/// <summary>The answer to POST /migrations/incoming: where the source's VMM is to send the VM (a unix: socket in the destination's state directory).</summary>
public sealed record IncomingMigrationAnswer(string Name, string ReceiverUrl);

/// <summary>One lifecycle change, as GET /events streams it (server-sent events) and `vireo events` prints it.</summary>
public sealed record LifecycleEvent(long Seq, DateTime Time, string Vm, string Event, string State, string? Detail = null, string Tenant = Tenants.Default);

/// <summary>
/// vireod's callers: users, each of one tenant and with one role. A tenant owns VMs and image
/// directories; its users see and touch only those. An admin sees every tenant's.
/// </summary>
public static class Tenants
{
    /// <summary>The tenant every VM defined before tenants existed belongs to; its image directories are vireod's --image-dir.</summary>
    public const string Default = "default";
}

/// <summary>What a user may do: a viewer reads, an operator also changes its tenant's VMs, an admin does anything to any tenant's and manages users and tenants.</summary>
public static class Roles
{
    public const string Viewer = "viewer", Operator = "operator", Admin = "admin";
    public static readonly string[] All = [Viewer, Operator, Admin];

    /// <summary>Whether a user of role <paramref name="role"/> holds <paramref name="needed"/>'s rights.</summary>
    public static bool Holds(string role, string needed) => Array.IndexOf(All, role) >= Array.IndexOf(All, needed);
}

/// <summary>GET /whoami: who vireod takes the caller for, and how it knew (client: "unix uid N pid P", "token from ADDR:PORT", "certificate CN from ADDR:PORT").</summary>
public sealed record WhoAmI(string User, string Tenant, string Role, string Client);

/// <summary>POST /tenants: a tenant, and the directories its VMs' kernels, initrds, disks and saves must lie beneath (STATE/tenants/NAME/images when left out).</summary>
public sealed record TenantRequest([property: JsonRequired] string Name, string[]? ImageDirs = null);

/// <summary>One tenant of GET /tenants: every field always present.</summary>
public sealed record TenantInfo(string Name, string[] ImageDirs, int Vms, int Users, DateTime? CreatedAt);

/// <summary>POST /users: a user of a tenant, with a role; uid maps a local Unix user (its SO_PEERCRED uid on vireod's socket) to it.</summary>
public sealed record UserRequest([property: JsonRequired] string Name, [property: JsonRequired] string Tenant, [property: JsonRequired] string Role, uint? Uid = null);

/// <summary>
/// One user of GET /users (token null: vireod keeps only its SHA-256), or the answer to POST /users
/// and POST /users/{name}/token, the one time the token is shown.
/// </summary>
public sealed record UserInfo(string Name, string Tenant, string Role,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] uint? Uid, DateTime CreatedAt,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? Token = null);

/// <summary>The states a VM is in, as virsh names them.</summary>
public static class DomainState
{
    public const string ShutOff = "shut off", Running = "running", Paused = "paused", Crashed = "crashed";

    /// <summary>Saved to a file (vireo save) and stopped: `vireo restore FILE` runs it again from there.</summary>
    public const string Saved = "saved";

    /// <summary>Arriving from another vireod (vireo migrate): its VMM waits for the VM's RAM and state; running once they are in.</summary>
    public const string Incoming = "incoming";
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow)]
[JsonSerializable(typeof(VmDefinition))]
[JsonSerializable(typeof(VmSummary))]
[JsonSerializable(typeof(VmListEntry[]))]
[JsonSerializable(typeof(ShutdownRequest))]
[JsonSerializable(typeof(RenameRequest))]
[JsonSerializable(typeof(LifecycleEvent))]
[JsonSerializable(typeof(SaveRequest))]
[JsonSerializable(typeof(SnapshotRequest))]
[JsonSerializable(typeof(SnapshotInfo))]
[JsonSerializable(typeof(SnapshotInfo[]))]
[JsonSerializable(typeof(OperationProgress))]
[JsonSerializable(typeof(MigrateRequest))]
[JsonSerializable(typeof(MigrationResult))]
[JsonSerializable(typeof(IncomingMigration))]
[JsonSerializable(typeof(IncomingMigrationAnswer))]
[JsonSerializable(typeof(ApiError))]
[JsonSerializable(typeof(WhoAmI))]
[JsonSerializable(typeof(TenantRequest))]
[JsonSerializable(typeof(TenantInfo))]
[JsonSerializable(typeof(TenantInfo[]))]
[JsonSerializable(typeof(UserRequest))]
[JsonSerializable(typeof(UserInfo))]
[JsonSerializable(typeof(UserInfo[]))]
// The route and query parameters' types: the OpenAPI generator describes them from this context under Native AOT.
[JsonSerializable(typeof(string))]
[JsonSerializable(typeof(long?))]
public sealed partial class DaemonJson : JsonSerializerContext;
