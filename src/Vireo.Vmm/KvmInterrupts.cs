using Vireo.Devices.Pci;
using Vireo.Kvm;

namespace Vireo.Vmm;

/// <summary>MSI-X messages injected with KVM_SIGNAL_MSI.</summary>
internal sealed class KvmMsiTarget(KvmVm vm) : IMsiTarget
{
    public void Signal(ulong address, uint data) => vm.SignalMsi(address, data);
}

/// <summary>A level-triggered GSI driven with KVM_IRQ_LINE (PCI INTx).</summary>
internal sealed class KvmLevelLine(KvmVm vm, uint gsi) : ILevelInterrupt
{
    public void Set(bool asserted) => vm.SetIrqLine(gsi, asserted);
}
