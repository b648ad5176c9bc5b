using Vireo.Devices;
using Vireo.Devices.Pci;
using Vireo.Interop;
using Vireo.Kvm;
using Vireo.Memory;
using Vireo.Virtio;
using Vireo.Virtio.Block;
using Vireo.Virtio.Console;
using Vireo.Virtio.Net;
using Vireo.Virtio.Rng;
using Vireo.Virtio.Transport;
using Vireo.Virtio.Vsock;

namespace Vireo.Vmm;

/// <summary>
/// A VM's virtio devices and what connects them to KVM: transports on the buses, ioeventfd
/// doorbells and backend fds on the device event loop, irqfd or MSI for interrupts.
/// Opened (disks from the VM's files; sockets, TAPs) before the VM exists, so that a bad device path fails early.
/// </summary>
internal sealed class VirtioWiring : IDisposable
{
    /// <summary>virtio-mmio windows: 4 KiB each from here, one GSI each from <see cref="MmioFirstGsi"/>.</summary>
    public const ulong MmioBase = 0xd000_0000;
    public const uint MmioFirstGsi = 5;

    /// <summary>PCI: BARs from here, 64 KiB a slot; ECAM for bus 0 at <see cref="PciEcamBase"/>; INTx on GSIs 16..23.</summary>
    public const ulong PciBarBase = 0xc000_0000;
    public const ulong PciBarWindowEnd = 0xcfff_ffff;
    public const ulong PciEcamBase = 0xe000_0000;
    public const uint PciFirstGsi = 16;

    /// <summary>The GSI a PCI slot's INTA is wired to (what the DSDT's _PRT says).</summary>
    public static uint PciGsiForSlot(int slot) => PciFirstGsi + (uint)(slot % 8);

    private readonly VirtioTransportKind _transport;
    private readonly List<VirtioDevice> _devices;
    private readonly List<IDisposable> _owned = [];
    private EventLoop? _eventLoop;

    public IReadOnlyList<VirtioDevice> Devices => _devices;

    private VirtioWiring(VirtioTransportKind transport, List<VirtioDevice> devices)
    {
        _transport = transport;
        _devices = devices;
        foreach (var d in devices)
        {
            d.Log = message => Console.Error.WriteLine($"vireo: {message}");
            if (d is IDisposable disposable)
            {
                _owned.Add(disposable);
            }
        }
    }

    /// <summary>Opens every device's backend; throws <see cref="VmConfigException"/> naming the one that failed.</summary>
    public static VirtioWiring Open(VmConfig config, VmFiles files, Action<byte> serialOut)
    {
        var devices = new List<VirtioDevice>();
        try
        {
            for (int i = 0; i < config.Disks.Count; i++)
            {
                try
                {
                    devices.Add(new VirtioBlock(config.Disks[i], files.DupDisk(i))); // the disk was opened once, with the VM's files
                }
                catch (Exception e) when (e is SysError or InvalidDataException or IOException)
                {
                    throw new VmConfigException($"disk: {e.Message}");
                }
            }
            foreach (var net in config.Nets)
            {
                try
                {
                    INetBackend backend = net.Tap is { } tap ? new TapBackend(tap) : new UnixDatagramBackend(net.UnixPath!, net.UnixPeer!);
                    devices.Add(new VirtioNet(net, backend));
                }
                catch (Exception e) when (e is SysError or System.Net.Sockets.SocketException or IOException or UnauthorizedAccessException)
                {
                    throw new VmConfigException($"net: {e.Message}");
                }
            }
            if (config.Vsock is { } vsock)
            {
                try
                {
                    devices.Add(new VirtioVsock(vsock));
                }
                catch (Exception e) when (e is System.Net.Sockets.SocketException or IOException or UnauthorizedAccessException)
                {
                    throw new VmConfigException($"vsock: {vsock.SocketPath}: {e.Message}");
                }
            }
            if (config.Rng)
            {
                devices.Add(new VirtioRng());
            }
            if (config.VirtioConsole)
            {
                devices.Add(new VirtioConsole(bytes =>
                {
                    foreach (byte b in bytes)
                    {
                        serialOut(b);
                    }
                }));
            }
            return new VirtioWiring(config.Transport, devices);
        }
        catch
        {
            foreach (var d in devices)
            {
                (d as IDisposable)?.Dispose();
            }
            throw;
        }
    }

    /// <summary>What the kernel command line needs: the virtio-mmio windows (PCI is found by probing).</summary>
    public string CmdlineSuffix
    {
        get
        {
            if (_transport != VirtioTransportKind.Mmio)
            {
                return "";
            }
            var s = new System.Text.StringBuilder();
            for (int i = 0; i < _devices.Count; i++)
            {
                s.Append($" virtio_mmio.device=4K@0x{MmioBase + (ulong)i * MmioTransport.WindowSize:x}:{MmioFirstGsi + i}");
            }
            return s.ToString();
        }
    }

    /// <summary>Puts every device on its transport and its doorbells and backend on the event loop.</summary>
    /// <param name="pci">The PCI root the machine created; null for the MMIO transport.</param>
    public void Attach(KvmVm vm, GuestMemory memory, Bus mmio, PciRoot? pci, Action<Exception> onDeviceThreadError)
    {
        _eventLoop = new EventLoop(onDeviceThreadError);
        MsiRouter? msi = null;
        if (pci is not null)
        {
            msi = new MsiRouter(vm);
            _owned.Add(msi);
        }
        for (int i = 0; i < _devices.Count; i++)
        {
            var device = _devices[i];
            var doorbells = new EventFd[device.QueueCount];
            for (int q = 0; q < doorbells.Length; q++)
            {
                doorbells[q] = new EventFd();
                int queue = q;
                _eventLoop.Add(doorbells[q], () => device.NotifyQueue(queue));
            }
            if (pci is null)
            {
                AttachMmio(vm, memory, mmio, device, i, doorbells);
            }
            else
            {
                AttachPci(vm, memory, mmio, pci, msi!, device, i + 1, doorbells);
            }
            if (device is VirtioNet net)
            {
                net.WatchWritable = _eventLoop.AddReady(net.BackendFd, net.OnBackendReady);
            }
            if (device is VirtioBlock { CompletionFd: >= 0 } blk)
            {
                _eventLoop.AddReady(blk.CompletionFd, blk.OnCompletions);
            }
            if (device is VirtioVsock vsock)
            {
                vsock.Start(_eventLoop);
            }
        }
    }

    private void AttachMmio(KvmVm vm, GuestMemory memory, Bus mmio, VirtioDevice device, int index, EventFd[] doorbells)
    {
        ulong window = MmioBase + (ulong)index * MmioTransport.WindowSize;
        var irq = new IrqfdLine(vm, MmioFirstGsi + (uint)index);
        _owned.Add(irq);
        mmio.Insert(new MmioTransport(device, memory, irq), window, MmioTransport.WindowSize);
        for (int q = 0; q < doorbells.Length; q++)
        {
            vm.RegisterIoeventfd(doorbells[q], window + MmioTransport.QueueNotifyOffset, 4, pio: false, dataMatch: (ulong)q);
        }
    }

    private static void AttachPci(KvmVm vm, GuestMemory memory, Bus mmio, PciRoot pci, MsiRouter msi, VirtioDevice device, int slot, EventFd[] doorbells)
    {
        ulong bar = PciBarBase + (ulong)slot * PciTransport.BarSize;
        uint gsi = PciGsiForSlot(slot);
        var transport = new PciTransport(device, memory, msi.CreateTarget(device.QueueCount + 1), new KvmLevelLine(vm, gsi), bar, (byte)gsi);
        if (pci.Add(transport) != slot)
        {
            throw new InvalidOperationException("PCI slot assignment out of step");
        }
        void Map(ulong address, bool on)
        {
            for (int q = 0; q < doorbells.Length; q++)
            {
                ulong notify = address + PciTransport.NotifyOffset + (ulong)q * PciTransport.NotifyMultiplier;
                vm.RegisterIoeventfd(doorbells[q], notify, 0, pio: false, deassign: !on);
            }
            if (on)
            {
                mmio.Insert(transport, address, PciTransport.BarSize);
            }
            else
            {
                mmio.Remove(address);
            }
        }
        // Firmware leaves BARs assigned and decoding on; the guest may move them, and the mapping follows.
        transport.BarChanged = (oldAddress, newAddress) =>
        {
            try
            {
                if (oldAddress is { } o)
                {
                    Map(o, on: false);
                }
                if (newAddress is { } n)
                {
                    Map(n, on: true);
                }
            }
            catch (Exception e) when (e is InvalidOperationException or SysError)
            {
                // A BAR placed over another device's range stays unmapped until moved again.
                Console.Error.WriteLine($"vireo: PCI slot {slot}: BAR at 0x{newAddress:x} not mapped: {e.Message}");
            }
        };
        transport.WriteConfig(0x04, [0x06, 0x00]); // memory decoding and bus mastering on: maps the BAR
    }

    /// <summary>Host console input to the virtio console, or null when there is none.</summary>
    public int? TryEnqueueConsoleInput(ReadOnlySpan<byte> input)
    {
        foreach (var d in _devices)
        {
            if (d is VirtioConsole console)
            {
                return console.Enqueue(input);
            }
        }
        return null;
    }

    public void Start() => _eventLoop?.Start();

    public void Dispose()
    {
        _eventLoop?.Dispose();
        foreach (var d in _owned)
        {
            d.Dispose();
        }
    }
}
