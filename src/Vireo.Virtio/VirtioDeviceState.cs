using Vireo.Virtio.Queue;

namespace Vireo.Virtio;

/// <summary>
/// What a virtio device holds beyond its transport's registers, as plain data: the features the
/// driver acked, whether it is running, each live queue with the device's place in it, and the
/// bytes the device keeps for the guest. Backends (fds, sockets) are never part of it.
/// </summary>
/// <param name="FailureReason">Set when the device is in NEEDS_RESET.</param>
/// <param name="Queues">The live queues, null where the driver left one unready; empty when not activated.</param>
/// <param name="PendingInput">Host input the guest has not taken yet (the console's).</param>
public sealed record VirtioDeviceState(
    uint DeviceType,
    ulong AckedFeatures,
    bool Activated,
    string? FailureReason,
    QueueState?[] Queues,
    byte[]? PendingInput);
