using Vireo.Virtio.Queue;

namespace Vireo.Virtio.Transport;

/// <summary>A virtio-mmio window's registers as plain data, with each queue as the driver set it up.</summary>
public sealed record MmioTransportState(
    uint Status,
    uint DeviceFeaturesSel,
    uint DriverFeaturesSel,
    uint QueueSel,
    uint InterruptStatus,
    ulong DriverFeatures,
    QueueState[] Queues);
