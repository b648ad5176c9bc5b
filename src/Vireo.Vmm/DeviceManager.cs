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
/// Every device of one VM, each registered under its id in the <see cref="DeviceMap"/>, and what
/// connects them to KVM: the buses, ioeventfd doorbells and backend fds on the device event loop,
/// irqfd or MSI for interrupts. Virtio backends are opened (disks from the VM's files, sockets,
/// TAPs) before the VM exists, so that a bad device path fails early; the rest is built by
/// <see cref="Attach"/> once the VM and its memory exist. Nothing reaches a device by a type test:
/// it is found by its id and its kind.
/// </summary>
public sealed class DeviceManager : IDisposable
{
    private readonly Dictionary<string, VirtioDevice> _virtio = [];
    private readonly Dictionary<string, IBusDevice> _transports = [];
    private readonly List<VirtioDevice> _ordered = [];
    private readonly List<IDisposable> _owned = [];
    private EventLoop? _eventLoop;

    public DeviceMap Map { get; }
    public Serial16550 Serial { get; private set; } = null!;
    public I8042 I8042 { get; private set; } = null!;
    public CmosRtc Rtc { get; private set; } = null!;
    public PostCodePort PostCode { get; } = new();

    /// <summary>The ACPI power-management registers; null when the VM has no ACPI.</summary>
    public AcpiPm? AcpiPm { get; private set; }

    /// <summary>PCI bus 0; null for the MMIO transport.</summary>
    public PciRoot? PciRoot { get; private set; }

    /// <summary>The virtio devices, in the order the guest sees them.</summary>
    public IReadOnlyList<VirtioDevice> VirtioDevices => _ordered;

    /// <summary>The virtio device registered under <paramref name="id"/>.</summary>
    public VirtioDevice Virtio(string id) => _virtio[id];

    /// <summary>The transport (a <see cref="PciTransport"/> or an <see cref="MmioTransport"/>) of the virtio device <paramref name="id"/>.</summary>
    public IBusDevice Transport(string id) => _transports[id];

    private DeviceManager(DeviceMap map) => Map = map;

    /// <summary>Lays out the VM and opens every virtio device's backend; throws <see cref="VmConfigException"/> naming the one that failed.</summary>
    public static DeviceManager Open(VmConfig config, VmFiles files, Action<byte> serialOut)
    {
        var manager = new DeviceManager(DeviceMap.For(config));
        try
        {
            foreach (var slot in manager.Map.Virtio)
            {
                var device = OpenVirtio(slot, config, files, serialOut);
                device.Log = message => Console.Error.WriteLine($"vireo: {message}");
                if (device is IDisposable disposable)
                {
                    manager._owned.Add(disposable);
                }
                manager._virtio.Add(slot.Id, device);
                manager._ordered.Add(device);
            }
            return manager;
        }
        catch
        {
            manager.Dispose();
            throw;
        }
    }

    private static VirtioDevice OpenVirtio(DeviceSlot slot, VmConfig config, VmFiles files, Action<byte> serialOut)
    {
        int i = slot.ConfigIndex;
        switch (slot.Kind)
        {
            case DeviceKind.Block:
                try
                {
                    return new VirtioBlock(config.Disks[i], files.DupDisk(i)); // the disk was opened once, with the VM's files
                }
                catch (Exception e) when (e is SysError or InvalidDataException or IOException)
                {
                    throw new VmConfigException($"disk: {e.Message}");
                }
            case DeviceKind.Net:
                var net = config.Nets[i];
                try
                {
                    INetBackend backend = net.Tap is not null ? new TapBackend(net.Tap, files.DupTap(i)) : new UnixDatagramBackend(net.UnixPath!, net.UnixPeer!);
                    return new VirtioNet(net, backend);
                }
                catch (Exception e) when (e is SysError or System.Net.Sockets.SocketException or IOException or UnauthorizedAccessException)
                {
                    throw new VmConfigException($"net: {e.Message}");
                }
            case DeviceKind.Vsock:
                var vsock = config.Vsock!;
                try
                {
                    return new VirtioVsock(vsock);
                }
                catch (Exception e) when (e is System.Net.Sockets.SocketException or IOException or UnauthorizedAccessException)
                {
                    throw new VmConfigException($"vsock: {vsock.SocketPath}: {e.Message}");
                }
            case DeviceKind.Rng:
                return new VirtioRng();
            case DeviceKind.Console:
                return new VirtioConsole(bytes =>
                {
                    foreach (byte b in bytes)
                    {
                        serialOut(b);
                    }
                });
            default:
                throw new InvalidOperationException($"device '{slot.Id}' is not a virtio device");
        }
    }

    /// <summary>
    /// Builds the legacy devices, the PCI root and every virtio transport where the map puts them,
    /// and puts doorbells and backends on the event loop.
    /// </summary>
    /// <param name="stop">Ends the run (power-off, reset, a debug exit).</param>
    public void Attach(KvmVm vm, GuestMemory memory, Bus pio, Bus mmio, Action<byte> serialOut, Action<VmOutcome> stop, Action<Exception> onDeviceThreadError)
    {
        MsiRouter? msi = null;
        foreach (var slot in Map.Slots)
        {
            switch (slot.Kind)
            {
                case DeviceKind.Serial:
                    var com1Irq = new IrqfdLine(vm, slot.Gsi!.Value);
                    _owned.Add(com1Irq);
                    Serial = new Serial16550(serialOut, com1Irq);
                    pio.Insert(Serial, slot.PioBase, slot.PioLength);
                    break;
                case DeviceKind.I8042:
                    I8042 = new I8042(() => stop(new VmOutcome(StopReason.Reset, Message: "i8042 reset")));
                    pio.Insert(I8042, slot.PioBase, slot.PioLength);
                    break;
                case DeviceKind.Rtc:
                    ulong low = memory.LowRamEnd;
                    Rtc = new CmosRtc(low, memory.Size - low);
                    pio.Insert(Rtc, slot.PioBase, slot.PioLength);
                    break;
                case DeviceKind.PostCode:
                    pio.Insert(PostCode, slot.PioBase, slot.PioLength);
                    break;
                case DeviceKind.DebugExit:
                    pio.Insert(new DebugExitPort(code => stop(new VmOutcome(StopReason.DebugExit, code))), slot.PioBase, slot.PioLength);
                    break;
                case DeviceKind.AcpiPm:
                    AcpiPm = new AcpiPm(
                        () => stop(new VmOutcome(StopReason.PowerOff, Message: "ACPI S5")),
                        () => stop(new VmOutcome(StopReason.Reset, Message: "ACPI reset register")),
                        new KvmLevelLine(vm, slot.Gsi!.Value));
                    pio.Insert(AcpiPm, slot.PioBase, slot.PioLength);
                    break;
                case DeviceKind.PciRoot:
                    PciRoot = new PciRoot();
                    pio.Insert(PciRoot.PortDevice, slot.PioBase, slot.PioLength);
                    mmio.Insert(PciRoot.EcamDevice, slot.MmioBase, slot.MmioLength);
                    msi = new MsiRouter(vm);
                    _owned.Add(msi);
                    break;
                default:
                    _eventLoop ??= new EventLoop(onDeviceThreadError);
                    AttachVirtio(vm, memory, mmio, msi, slot);
                    break;
            }
        }
    }

    private void AttachVirtio(KvmVm vm, GuestMemory memory, Bus mmio, MsiRouter? msi, DeviceSlot slot)
    {
        var device = _virtio[slot.Id];
        var doorbells = new EventFd[device.QueueCount];
        for (int q = 0; q < doorbells.Length; q++)
        {
            doorbells[q] = new EventFd(); // the event loop owns it
            int queue = q;
            _eventLoop!.Add(doorbells[q], () => device.NotifyQueue(queue));
        }
        if (slot.PciSlot is null)
        {
            AttachMmio(vm, memory, mmio, device, slot, doorbells);
        }
        else
        {
            AttachPci(vm, memory, mmio, msi!, device, slot, doorbells);
        }
        switch (slot.Kind)
        {
            case DeviceKind.Net:
                var net = (VirtioNet)device;
                net.WatchWritable = _eventLoop!.AddReady(net.BackendFd, net.OnBackendReady);
                break;
            case DeviceKind.Block when ((VirtioBlock)device).CompletionFd >= 0:
                var blk = (VirtioBlock)device;
                _eventLoop!.AddReady(blk.CompletionFd, blk.OnCompletions);
                break;
            case DeviceKind.Vsock:
                ((VirtioVsock)device).Start(_eventLoop!);
                break;
        }
    }

    private void AttachMmio(KvmVm vm, GuestMemory memory, Bus mmio, VirtioDevice device, DeviceSlot slot, EventFd[] doorbells)
    {
        var irq = new IrqfdLine(vm, slot.Gsi!.Value);
        _owned.Add(irq);
        var transport = new MmioTransport(device, memory, irq);
        _transports.Add(slot.Id, transport);
        mmio.Insert(transport, slot.MmioBase, slot.MmioLength);
        for (int q = 0; q < doorbells.Length; q++)
        {
            vm.RegisterIoeventfd(doorbells[q], slot.MmioBase + MmioTransport.QueueNotifyOffset, 4, pio: false, dataMatch: (ulong)q);
        }
    }

    private void AttachPci(KvmVm vm, GuestMemory memory, Bus mmio, MsiRouter msi, VirtioDevice device, DeviceSlot slot, EventFd[] doorbells)
    {
        int pciSlot = slot.PciSlot!.Value;
        uint gsi = slot.Gsi!.Value;
        var transport = new PciTransport(device, memory, msi.CreateTarget(device.QueueCount + 1), new KvmLevelLine(vm, gsi), slot.MmioBase, (byte)gsi);
        _transports.Add(slot.Id, transport);
        if (PciRoot!.Add(transport) != pciSlot)
        {
            throw new InvalidOperationException("PCI slot assignment out of step with the device map");
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
            catch (Exception e) when (e is InvalidOperationException or ArgumentException or SysError)
            {
                // A BAR placed over another device's range (or so high that its window wraps) stays unmapped until moved again.
                Console.Error.WriteLine($"vireo: PCI slot {pciSlot}: BAR at 0x{newAddress:x} not mapped: {e.Message}");
            }
        };
        transport.WriteConfig(0x04, [0x06, 0x00]); // memory decoding and bus mastering on: maps the BAR
    }

    /// <summary>
    /// Host console input: to the virtio console when there is one, else to COM1. Returns how many
    /// bytes fit: none while the devices are quiesced for a snapshot (the caller tries again).
    /// </summary>
    public int EnqueueConsoleInput(ReadOnlySpan<byte> input)
    {
        lock (_inputLock)
        {
            if (_quiet)
            {
                return 0;
            }
            return Map.Find("console") is { Kind: DeviceKind.Console } slot ? ((VirtioConsole)_virtio[slot.Id]).Enqueue(input) : Serial.Enqueue(input);
        }
    }

    private readonly Lock _inputLock = new();
    private bool _quiet;

    public void Start() => _eventLoop?.Start();

    /// <summary>Starts the event loop parked, handling nothing until <see cref="Unquiesce"/>.</summary>
    public void StartParked() => _eventLoop?.StartParked();

    /// <summary>
    /// Makes every device quiet enough to be saved, with the vCPUs already paused: waits (the
    /// event loop still running) until no device has work in flight, then parks the event loop and
    /// has each device hand back what it holds half-done. False when work is still in flight after
    /// <paramref name="timeout"/>; the loop then runs on.
    /// </summary>
    public bool Quiesce(TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            lock (_inputLock)
            {
                _quiet = true; // host input waits too: it would write the guest's RAM
            }
            _eventLoop?.Pause();
            // Checked once all is parked: checked before, the loop could still take a notification
            // the guest sent just before its vCPUs stopped and start a disk request nobody reaps.
            if (!_ordered.Exists(d => d.HasWorkInFlight))
            {
                break;
            }
            Unquiesce(); // the loop reaps what the kernel finishes
            if (DateTime.UtcNow > deadline)
            {
                return false;
            }
            Thread.Sleep(1);
        }
        foreach (var d in _ordered)
        {
            d.Settle();
        }
        return true;
    }

    /// <summary>Lets the event loop and host input run again after <see cref="Quiesce"/>.</summary>
    public void Unquiesce()
    {
        _eventLoop?.Resume();
        lock (_inputLock)
        {
            _quiet = false;
        }
    }

    /// <summary>Every device's state; taken between <see cref="Quiesce"/> and <see cref="Unquiesce"/>.</summary>
    public Snapshot.DevicesState SaveState()
    {
        var virtio = new List<Snapshot.VirtioSlotState>();
        foreach (var slot in Map.Virtio)
        {
            var transport = _transports[slot.Id];
            virtio.Add(new Snapshot.VirtioSlotState(slot.Id,
                (transport as PciTransport)?.SaveState(),
                (transport as MmioTransport)?.SaveState(),
                _virtio[slot.Id].SaveState()));
        }
        return new Snapshot.DevicesState(Serial.SaveState(), I8042.SaveState(), Rtc.SaveState(), AcpiPm?.SaveState(), PciRoot?.SaveState(), [.. virtio]);
    }

    /// <summary>
    /// Puts saved state (untrusted) into the devices just built from the same map. Throws
    /// <see cref="Snapshot.SnapshotException"/> naming the device and what does not fit.
    /// </summary>
    public void Restore(Snapshot.DevicesState state)
    {
        static void Fail(string id, string? why) => throw new Snapshot.SnapshotException($"device '{id}': {why}");
        if (state.Serial is null || state.I8042 is null || state.Rtc is null || state.Virtio is null)
        {
            throw new Snapshot.SnapshotException("devices: the serial port, i8042, RTC or virtio list is missing");
        }
        if (!Serial.TryRestore(state.Serial, out var error))
        {
            Fail("com1", error);
        }
        I8042.Restore(state.I8042);
        if (!Rtc.TryRestore(state.Rtc, out error))
        {
            Fail("rtc", error);
        }
        if ((state.AcpiPm is null) != (AcpiPm is null))
        {
            Fail("acpi-pm", AcpiPm is null ? "saved, but this machine has no ACPI" : "missing, but this machine has ACPI");
        }
        if (state.AcpiPm is not null)
        {
            AcpiPm!.Restore(state.AcpiPm);
        }
        if ((state.PciRoot is null) != (PciRoot is null))
        {
            Fail("pci-root", PciRoot is null ? "saved, but this machine has no PCI bus" : "missing, but this machine has a PCI bus");
        }
        if (state.PciRoot is not null)
        {
            PciRoot!.Restore(state.PciRoot);
        }
        var slots = Map.Virtio.ToArray();
        if (state.Virtio.Length != slots.Length)
        {
            throw new Snapshot.SnapshotException($"devices: {state.Virtio.Length} virtio devices saved; this machine has {slots.Length}");
        }
        for (int i = 0; i < slots.Length; i++)
        {
            var saved = state.Virtio[i];
            string id = slots[i].Id;
            if (saved is null || saved.Id != id || saved.Device is null)
            {
                throw new Snapshot.SnapshotException(saved?.Id == id
                    ? $"device '{id}': its state is missing"
                    : $"devices: virtio device {i} is {(saved is null ? "missing" : $"'{saved.Id}'")} in the snapshot, '{id}' here");
            }
            bool ok = _transports[id] switch
            {
                PciTransport pci when saved.Pci is not null => pci.TryRestore(saved.Pci, saved.Device, out error),
                MmioTransport mmio when saved.Mmio is not null => mmio.TryRestore(saved.Mmio, saved.Device, out error),
                _ => WrongTransport(out error),
            };
            if (!ok)
            {
                Fail(id, error);
            }
        }
    }

    private static bool WrongTransport(out string? error)
    {
        error = "its transport's state is missing or of the other transport";
        return false;
    }

    /// <summary>After a restore, once the event loop runs: each virtio device serves what the guest queued and interrupts once per queue.</summary>
    public void KickAll()
    {
        foreach (var d in _ordered)
        {
            d.KickAll();
        }
    }

    public void Dispose()
    {
        _eventLoop?.Dispose();
        foreach (var d in _owned)
        {
            d.Dispose();
        }
    }
}
