using System.Text.Json.Serialization;

namespace Vireo.Vmm.Snapshot;

/// <summary>
/// The snapshot's JSON sections (the config and the devices), source-generated: no reflection, and
/// strict on reading (an unknown or missing member is an error, as in the API's bodies).
/// </summary>
[JsonSourceGenerationOptions(
    UseStringEnumConverter = true,
    UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    RespectRequiredConstructorParameters = true,
    RespectNullableAnnotations = true,
    IncludeFields = true,
    MaxDepth = 16)]
[JsonSerializable(typeof(VmConfig))]
[JsonSerializable(typeof(DevicesState))]
internal sealed partial class SnapshotJson : JsonSerializerContext;
