using Vireo.Devices.Pci;
using Vireo.Interop;
using Vireo.Kvm;

namespace Vireo.Vmm;

/// <summary>
/// The VM's MSI routes: every MSI-X vector of every PCI function gets a GSI from 24 up and an
/// irqfd on it, so an interrupt is one eventfd write; the guest's table writes update KVM's
/// routing table (KVM_SET_GSI_ROUTING, which keeps the default irqchip routes).
/// </summary>
internal sealed class MsiRouter(KvmVm vm) : IDisposable
{
    private const uint FirstMsiGsi = 24;
    private readonly Lock _lock = new();
    private readonly List<KvmVm.MsiRoute> _routes = [];
    private readonly List<EventFd> _eventFds = [];

    /// <summary>A function's vectors, each with its own GSI and irqfd.</summary>
    public IMsiTarget CreateTarget(int vectors)
    {
        var target = new Target(this, new uint[vectors], new EventFd[vectors]);
        lock (_lock)
        {
            for (int v = 0; v < vectors; v++)
            {
                uint gsi = FirstMsiGsi + (uint)_eventFds.Count;
                var fd = new EventFd();
                _eventFds.Add(fd);
                target.Gsis[v] = gsi;
                target.Doorbells[v] = fd;
                vm.RegisterIrqfd(fd, gsi);
            }
        }
        return target;
    }

    private void Route(uint gsi, ulong address, uint data)
    {
        lock (_lock)
        {
            _routes.RemoveAll(r => r.Gsi == gsi);
            _routes.Add(new KvmVm.MsiRoute(gsi, address, data));
            vm.SetGsiRouting(_routes.ToArray());
        }
    }

    public void Dispose()
    {
        foreach (var fd in _eventFds)
        {
            fd.Dispose();
        }
    }

    private sealed class Target(MsiRouter router, uint[] gsis, EventFd[] doorbells) : IMsiTarget
    {
        public uint[] Gsis { get; } = gsis;
        public EventFd[] Doorbells { get; } = doorbells;

        public void Route(int vector, ulong address, uint data) => router.Route(Gsis[vector], address, data);

        public void Signal(int vector) => Doorbells[vector].Signal();
    }
}

/// <summary>A level-triggered GSI driven with KVM_IRQ_LINE (PCI INTx).</summary>
internal sealed class KvmLevelLine(KvmVm vm, uint gsi) : ILevelInterrupt
{
    public void Set(bool asserted) => vm.SetIrqLine(gsi, asserted);
}
