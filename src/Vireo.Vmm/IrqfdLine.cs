using Vireo.Devices;
using Vireo.Interop;
using Vireo.Kvm;

namespace Vireo.Vmm;

/// <summary>An interrupt line driven through KVM's irqfd: one eventfd write is one edge on the GSI.</summary>
internal sealed class IrqfdLine : IInterruptLine, IDisposable
{
    private readonly EventFd _eventFd = new();

    public IrqfdLine(KvmVm vm, uint gsi) => vm.RegisterIrqfd(_eventFd, gsi);

    public void Trigger() => _eventFd.Signal();

    public void Dispose() => _eventFd.Dispose();
}
