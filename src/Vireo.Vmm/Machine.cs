using Vireo.Boot;
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

namespace Vireo.Vmm;

/// <summary>
/// One VM: guest memory, the KVM VM and its vCPUs, the legacy devices, and the lifecycle that
/// starts the vCPU threads and stops them all on the first exit that ends the run.
/// </summary>
public sealed class Machine : IDisposable
{
    private readonly Kvm.Kvm _kvm;
    private readonly KvmVm _vm;
    private readonly List<KvmVcpu> _vcpus = [];
    private readonly List<VcpuRunner> _runners = [];
    private readonly List<IDisposable> _owned = [];
    private readonly ManualResetEventSlim _stopped = new();
    private readonly List<VirtioDevice> _virtio = [];
    private EventLoop? _eventLoop;
    private VmOutcome? _outcome;
    private volatile bool _stopping;

    public VmConfig Config { get; }
    public GuestMemory Memory { get; }
    public Bus Pio { get; } = new();
    public Bus Mmio { get; } = new();
    public Serial16550 Serial { get; }
    public PostCodePort PostCode { get; } = new();

    /// <summary>The virtio devices, in the order of their MMIO windows.</summary>
    public IReadOnlyList<VirtioDevice> VirtioDevices => _virtio;

    /// <summary>PCI: BARs from here, 64 KiB a slot; ECAM for bus 0 at <see cref="PciEcamBase"/>; INTx on GSIs 16..23.</summary>
    public const ulong PciBarBase = 0xc000_0000;
    public const ulong PciEcamBase = 0xe000_0000;
    public const uint PciFirstGsi = 16;

    /// <summary>virtio-mmio windows: 4 KiB each from here, one GSI each from <see cref="VirtioFirstGsi"/>.</summary>
    public const ulong VirtioMmioBase = 0xd000_0000;
    public const uint VirtioFirstGsi = 5;
    public bool IsStopping => _stopping;

    /// <summary>Exits to userspace so far, over all vCPUs.</summary>
    public long Exits => _runners.Sum(r => r.Exits);

    /// <summary>Managed bytes the vCPU threads allocated while running.</summary>
    internal long VcpuAllocatedBytes => _runners.Sum(r => r.AllocatedBytes);

    private Machine(VmConfig config, Kvm.Kvm kvm, KvmVm vm, GuestMemory memory, Action<byte> serialOut)
    {
        Config = config;
        _kvm = kvm;
        _vm = vm;
        Memory = memory;
        var com1Irq = new IrqfdLine(vm, Serial16550.Com1Irq);
        _owned.Add(com1Irq);
        Serial = new Serial16550(serialOut, com1Irq);
    }

    /// <summary>
    /// Builds a VM ready to run: validates the config, loads the kernel (nothing is created if the
    /// image is bad), then creates the VM, its memory, devices and vCPUs.
    /// </summary>
    public static Machine Create(VmConfig config, Action<byte> serialOut)
    {
        config.Validate();
        byte[] kernel = ReadFile(config.KernelPath, "kernel");
        var image = KernelImage.Parse(kernel); // a malformed image fails before any KVM object exists
        var devices = CreateVirtioDevices(config, serialOut);
        var source = new BootSource(
            kernel,
            config.InitrdPath is null ? null : ReadFile(config.InitrdPath, "initrd"),
            config.Cmdline + (config.Transport == VirtioTransportKind.Mmio ? VirtioCmdline(devices.Count) : ""),
            config.Vcpus);

        Kvm.Kvm kvm;
        try
        {
            kvm = Kvm.Kvm.Open();
        }
        catch
        {
            DisposeAll(devices);
            throw;
        }
        KvmVm? vm = null;
        GuestMemory? memory = null;
        try
        {
            if (config.Vcpus > kvm.MaxVcpus)
            {
                throw new VmConfigException($"vcpus: {config.Vcpus} exceeds this host's KVM limit of {kvm.MaxVcpus}");
            }
            vm = kvm.CreateVm();
            vm.SetIdentityMapAddress(MemoryLayout.KvmIdentityMapAddr);
            vm.SetTssAddress(MemoryLayout.KvmTssAddr);
            vm.CreateIrqchip();
            vm.CreatePit2();
            memory = GuestMemory.Create(config.MemoryBytes);
            var boot = BootLoader.Load(memory, image, source);
            vm.RegisterMemory(memory);
            var machine = new Machine(config, kvm, vm, memory, serialOut);
            machine.AddLegacyDevices();
            machine.AddVirtioDevices(devices);
            machine.CreateVcpus(boot);
            return machine;
        }
        catch
        {
            DisposeAll(devices);
            memory?.Dispose();
            vm?.Dispose();
            kvm.Dispose();
            throw;
        }
    }

    /// <summary>Opens what the devices need (disk files) before anything of KVM exists.</summary>
    private static List<VirtioDevice> CreateVirtioDevices(VmConfig config, Action<byte> serialOut)
    {
        var devices = new List<VirtioDevice>();
        try
        {
            foreach (var disk in config.Disks)
            {
                try
                {
                    devices.Add(new VirtioBlock(disk));
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
            return devices;
        }
        catch
        {
            DisposeAll(devices);
            throw;
        }
    }

    private static string VirtioCmdline(int count)
    {
        var s = new System.Text.StringBuilder();
        for (int i = 0; i < count; i++)
        {
            s.Append($" virtio_mmio.device=4K@0x{VirtioMmioBase + (ulong)i * MmioTransport.WindowSize:x}:{VirtioFirstGsi + i}");
        }
        return s.ToString();
    }

    private static void DisposeAll(List<VirtioDevice> devices)
    {
        foreach (var d in devices)
        {
            (d as IDisposable)?.Dispose();
        }
    }

    /// <summary>
    /// Each device gets a 4 KiB MMIO window, an irqfd on its GSI, and one ioeventfd a queue on
    /// the QueueNotify register, whose doorbell runs the device's work on the event loop.
    /// </summary>
    private void AddVirtioDevices(List<VirtioDevice> devices)
    {
        if (devices.Count == 0)
        {
            return;
        }
        _eventLoop = new EventLoop(e => RequestStop(new VmOutcome(StopReason.HostError, Message: $"device thread: {e.Message}")));
        PciRoot? pci = null;
        if (Config.Transport == VirtioTransportKind.Pci)
        {
            pci = new PciRoot();
            Pio.Insert(pci.PortDevice, PciRoot.ConfigAddressPort, 8);
            Mmio.Insert(pci.EcamDevice, PciEcamBase, PciRoot.EcamSize);
        }
        for (int i = 0; i < devices.Count; i++)
        {
            var device = devices[i];
            device.Log = message => Console.Error.WriteLine($"vireo: {message}");
            if (device is IDisposable disposable)
            {
                _owned.Add(disposable);
            }
            _virtio.Add(device);
            var doorbells = new EventFd[device.QueueCount];
            for (int q = 0; q < doorbells.Length; q++)
            {
                doorbells[q] = new EventFd();
                int queue = q;
                _eventLoop.Add(doorbells[q], () => device.NotifyQueue(queue));
            }
            if (pci is null)
            {
                AddMmioTransport(device, i, doorbells);
            }
            else
            {
                AddPciTransport(device, pci, doorbells);
            }
            if (device is VirtioNet net)
            {
                _eventLoop.AddReady(net.BackendFd, net.OnBackendReady);
            }
        }
    }

    private void AddMmioTransport(VirtioDevice device, int index, EventFd[] doorbells)
    {
        ulong window = VirtioMmioBase + (ulong)index * MmioTransport.WindowSize;
        var irq = new IrqfdLine(_vm, VirtioFirstGsi + (uint)index);
        _owned.Add(irq);
        Mmio.Insert(new MmioTransport(device, Memory, irq), window, MmioTransport.WindowSize);
        for (int q = 0; q < doorbells.Length; q++)
        {
            _vm.RegisterIoeventfd(doorbells[q], window + MmioTransport.QueueNotifyOffset, 4, pio: false, dataMatch: (ulong)q);
        }
    }

    private void AddPciTransport(VirtioDevice device, PciRoot pci, EventFd[] doorbells)
    {
        // The slot is known only once added; the transport needs its BAR first, so predict it.
        int slot = _virtio.Count; // 00:00.0 is the host bridge; devices take slots 1, 2, ...
        ulong bar = PciBarBase + (ulong)slot * PciTransport.BarSize;
        uint gsi = PciFirstGsi + (uint)(slot % 8);
        var transport = new PciTransport(device, Memory, new KvmMsiTarget(_vm), new KvmLevelLine(_vm, gsi), bar, (byte)gsi);
        if (pci.Add(transport) != slot)
        {
            throw new InvalidOperationException("PCI slot assignment out of step");
        }
        // Firmware leaves BARs assigned and decoding on; the guest may move them.
        transport.WriteConfig(0x04, [0x06, 0x00]);
        void Map(ulong address, bool on)
        {
            for (int q = 0; q < doorbells.Length; q++)
            {
                ulong notify = address + PciTransport.NotifyOffset + (ulong)q * PciTransport.NotifyMultiplier;
                _vm.RegisterIoeventfd(doorbells[q], notify, 0, pio: false, deassign: !on);
            }
            if (on)
            {
                Mmio.Insert(transport, address, PciTransport.BarSize);
            }
            else
            {
                Mmio.Remove(address);
            }
        }
        Map(bar, on: true);
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
    }

    /// <summary>Host console input: to the virtio console when there is one, else to COM1. Returns how many bytes fit.</summary>
    public int EnqueueConsoleInput(ReadOnlySpan<byte> input)
    {
        foreach (var d in _virtio)
        {
            if (d is VirtioConsole console)
            {
                return console.Enqueue(input);
            }
        }
        return Serial.Enqueue(input);
    }

    private static byte[] ReadFile(string path, string what)
    {
        try
        {
            return File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new VmConfigException($"{what}: cannot read {path}: {e.Message}");
        }
    }

    private void AddLegacyDevices()
    {
        Pio.Insert(Serial, Serial16550.Com1Base, 8);
        Pio.Insert(new I8042(() => RequestStop(new VmOutcome(StopReason.Reset, Message: "i8042 reset"))), I8042.Base, I8042.Length);
        ulong low = Memory.LowRamEnd;
        Pio.Insert(new CmosRtc(low, Memory.Size - low), CmosRtc.Base, CmosRtc.Length);
        Pio.Insert(PostCode, PostCodePort.Port, 1);
        if (Config.DebugExit)
        {
            Pio.Insert(new DebugExitPort(code => RequestStop(new VmOutcome(StopReason.DebugExit, code))), DebugExitPort.Port, DebugExitPort.Length);
        }
    }

    private void CreateVcpus(BootCpuState boot)
    {
        var supported = _kvm.GetSupportedCpuid();
        for (int id = 0; id < Config.Vcpus; id++)
        {
            var vcpu = _vm.CreateVcpu(id);
            _vcpus.Add(vcpu);
            vcpu.SetCpuid(CpuidTemplate.For(supported, id, Config.Vcpus));
            vcpu.SetMsrs([new kvm_msr_entry { index = 0x1a0, data = 1 }]); // IA32_MISC_ENABLE: fast strings
            var fpu = vcpu.GetFpu();
            fpu.fcw = 0x37f;
            fpu.mxcsr = 0x1f80;
            vcpu.SetFpu(fpu);
            Lapic.ConfigureLint(vcpu);
            if (id == 0)
            {
                var sregs = vcpu.GetSregs();
                boot.ApplyTo(ref sregs);
                vcpu.SetSregs(sregs);
                vcpu.SetRegs(boot.Regs);
            }
            // Application processors wait in KVM for the guest's INIT/SIPI.
            _runners.Add(new VcpuRunner(vcpu, Pio, Mmio, this));
        }
    }

    /// <summary>Runs the VM until it stops or <paramref name="timeout"/> passes, and says why it stopped.</summary>
    public VmOutcome Run(TimeSpan? timeout = null)
    {
        _ = Signals.KickSignal; // install the kick handler before any vCPU thread exists
        _eventLoop?.Start();
        foreach (var runner in _runners)
        {
            runner.Start();
        }
        if (!_stopped.Wait(timeout ?? Timeout.InfiniteTimeSpan))
        {
            RequestStop(new VmOutcome(StopReason.Timeout, Message: $"no exit within {timeout!.Value.TotalSeconds:0.#} s"));
        }
        foreach (var runner in _runners)
        {
            runner.Join();
        }
        if (_outcome!.Reason == StopReason.Timeout)
        {
            // A guest that never exits is usually stuck somewhere worth seeing.
            _outcome = _outcome with { RegisterDump = string.Join(Environment.NewLine, _vcpus.Select(RegisterDump.Format)) };
        }
        return _outcome;
    }

    /// <summary>Ends the run; the first outcome wins. Safe from any thread.</summary>
    public void RequestStop(VmOutcome outcome)
    {
        if (Interlocked.CompareExchange(ref _outcome, outcome, null) != null)
        {
            return;
        }
        _stopping = true;
        foreach (var runner in _runners)
        {
            runner.Kick();
        }
        _stopped.Set();
    }

    public void Dispose()
    {
        _eventLoop?.Dispose();
        foreach (var vcpu in _vcpus)
        {
            vcpu.Dispose();
        }
        foreach (var d in _owned)
        {
            d.Dispose();
        }
        _vm.Dispose();
        Memory.Dispose();
        _kvm.Dispose();
    }
}
