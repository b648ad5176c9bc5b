namespace Vireo.Vmm.Snapshot;

/// <summary>A snapshot (or a migration stream) that cannot be taken or restored; the message says what, in a user's words.</summary>
public sealed class SnapshotException(string message) : Exception(message);
