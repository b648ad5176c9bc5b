using System.Text.Json.Serialization;

namespace Vireo.Api;

// The daemon's API (vireod --socket PATH): VMs by name, defined once, started many times.

/// <summary>What to do when the guest powers off, reboots, or its VMM process dies (xl's on_*).</summary>
public static class LifecyclePolicy
{
    public const string Destroy = "destroy", Restart = "restart", Preserve = "preserve";
    public static readonly string[] All = [Destroy, Restart, Preserve];
}

/// <summary>POST /vms: a VM definition.</summary>
public sealed record VmDefinition(
    [property: JsonRequired] string Name,
    [property: JsonRequired] string Kernel,
    int Vcpus = 1,
    long MemoryMib = 256,
    string? Initrd = null,
    string? Cmdline = null,
    string[]? Disks = null,
    string OnPoweroff = LifecyclePolicy.Destroy,
    string OnReboot = LifecyclePolicy.Restart,
    string OnCrash = LifecyclePolicy.Destroy,
    bool Autostart = false);

/// <summary>One VM as GET /vms and GET /vms/{name} report it.</summary>
public sealed record VmSummary(
    string Name,
    int Id,
    string State,
    int Vcpus,
    long MemoryMib,
    int? Pid,
    double? UptimeSeconds,
    string? LastExit,
    VmDefinition Definition);

/// <summary>The states a VM is in, as virsh names them.</summary>
public static class DomainState
{
    public const string ShutOff = "shut off", Running = "running", Paused = "paused", Crashed = "crashed";
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(VmDefinition))]
[JsonSerializable(typeof(VmSummary))]
[JsonSerializable(typeof(VmSummary[]))]
[JsonSerializable(typeof(ApiError))]
public sealed partial class DaemonJson : JsonSerializerContext;
