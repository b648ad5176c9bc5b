using Vireo.Virtio.Queue;

namespace Vireo.Virtio.Transport;

/// <summary>
/// A virtio-pci function's registers as plain data: the configuration space (of which a restore
/// takes only what the guest may write: command, BAR, interrupt line, MSI-X control), the common
/// configuration, each queue as the driver set it up, and the MSI-X table.
/// </summary>
public sealed record PciTransportState(
    byte[] Config,
    uint DeviceFeatureSelect,
    uint DriverFeatureSelect,
    ulong DriverFeatures,
    byte Status,
    ushort QueueSelect,
    ushort ConfigVector,
    int Isr,
    QueueState[] Queues,
    ushort[] QueueVectors,
    ulong[] MsixAddress,
    uint[] MsixData,
    bool[] MsixMasked,
    bool[] MsixPending);
