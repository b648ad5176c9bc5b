using Vireo.Devices;
using Vireo.Devices.Pci;
using Vireo.Kvm;
using Vireo.Virtio;
using Vireo.Virtio.Transport;

namespace Vireo.Vmm.Snapshot;

/// <summary>One virtio device's state: its transport's registers (PCI or MMIO, whichever the map gives it) and its own.</summary>
public sealed record VirtioSlotState(string Id, PciTransportState? Pci, MmioTransportState? Mmio, VirtioDeviceState Device);

/// <summary>Every device's state, the legacy ones by name, the virtio ones by id in the device map's order.</summary>
public sealed record DevicesState(
    Serial16550State Serial,
    I8042State I8042,
    CmosRtcState Rtc,
    AcpiPmState? AcpiPm,
    PciRootState? PciRoot,
    VirtioSlotState[] Virtio);

/// <summary>
/// A whole machine as plain data: what it is made of (the config, from which the device map
/// follows), KVM's VM-wide state, each vCPU, and each device. Guest RAM is not in it: it goes to
/// its own file. Built by <see cref="Machine.SaveState"/>; restored by <see cref="MachineBuilder.Restore"/>.
/// </summary>
public sealed record MachineState(VmConfig Config, KvmVmState Vm, VcpuState[] Vcpus, DevicesState Devices);
