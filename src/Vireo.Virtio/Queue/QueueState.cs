namespace Vireo.Virtio.Queue;

/// <summary>
/// A split virtqueue as plain data: what the driver configured plus the device's position.
/// Runtime queues are built from this (and snapshots will be made of it), never the other way round.
/// </summary>
public record struct QueueState(
    ushort Size,
    bool Ready,
    ulong DescTable,
    ulong AvailRing,
    ulong UsedRing,
    ushort NextAvail,
    ushort NextUsed,
    bool EventIdx,
    bool Indirect);
