using Vireo.Boot;
using Vireo.Boot.Acpi;
using Vireo.Devices;
using Vireo.Devices.Pci;
using Vireo.Interop;
using Vireo.Kvm;
using Vireo.Memory;
using Vireo.Virtio;

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
    private VirtioWiring? _virtio; // only when the config has virtio devices: plain boots never load Vireo.Virtio
    private VmOutcome? _outcome;
    private volatile bool _stopping;
    private volatile bool _paused;
    private readonly Lock _pauseLock = new(); // one Pause or Resume at a time

    public VmConfig Config { get; }
    public GuestMemory Memory { get; }
    public Bus Pio { get; } = new();
    public Bus Mmio { get; } = new();
    public Serial16550 Serial { get; }
    public PostCodePort PostCode { get; } = new();

    /// <summary>The ACPI power-management registers; null when the VM has no ACPI.</summary>
    public AcpiPm? AcpiPm { get; private set; }

    /// <summary>The virtio devices, in the order the guest sees them.</summary>
    public IReadOnlyList<VirtioDevice> VirtioDevices => _virtio?.Devices ?? [];
    public bool IsStopping => _stopping;

    /// <summary>True between <see cref="Pause"/> and <see cref="Resume"/>: every vCPU has left KVM_RUN and said so.</summary>
    public bool IsPaused => _paused;

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
    /// Builds a VM ready to run from its files, opened here and closed with the machine. Whoever
    /// boots the same VM more than once opens <see cref="VmFiles"/> itself and passes them.
    /// </summary>
    public static Machine Create(VmConfig config, Action<byte> serialOut)
    {
        var files = VmFiles.Open(config);
        try
        {
            var machine = Create(config, files, serialOut);
            machine._owned.Add(files);
            return machine;
        }
        catch
        {
            files.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Builds a VM ready to run: validates the config, loads the kernel (nothing is created if the
    /// image is bad), then creates the VM, its memory, devices and vCPUs. Every file comes from
    /// <paramref name="files"/>, which stay the caller's: no path is opened again.
    /// </summary>
    public static Machine Create(VmConfig config, VmFiles files, Action<byte> serialOut)
    {
        config.ValidateSettings(); // not the paths: they were opened into files, and may be gone by now
        // The images' bytes for this boot only: unmapped when the machine is built (a reboot reads them again).
        using var kernel = files.ReadKernel();
        using var initrd = files.ReadInitrd();
        var image = KernelImage.Parse(kernel.GetSpan()); // a malformed image fails before any KVM object exists
        var virtio = config.VirtioDeviceCount > 0 ? VirtioWiring.Open(config, files, serialOut) : null;
        var source = new BootSource(
            kernel.Memory,
            initrd?.Memory,
            config.Cmdline + (virtio?.CmdlineSuffix ?? ""),
            config.Vcpus,
            config.Acpi ? AcpiPlatformFor(config) : null);

        Kvm.Kvm kvm;
        try
        {
            kvm = Kvm.Kvm.Open();
        }
        catch
        {
            virtio?.Dispose();
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
            memory = GuestMemory.Create(config.MemoryBytes);
            // Guest RAM is registered before the in-kernel irqchip exists, as Firecracker does: once
            // it does, KVM makes a memory-slot change wait for its readers, 4 to 11 ms on this host
            // against 0.1 ms before (the largest single cost between exec and the guest's first instruction).
            vm.RegisterMemory(memory);
            vm.CreateIrqchip();
            vm.CreatePit2();
            var boot = BootLoader.Load(memory, image, source);
            var machine = new Machine(config, kvm, vm, memory, serialOut);
            machine.AddLegacyDevices();
            var pci = machine.AddPciRoot();
            if (virtio is not null)
            {
                machine._virtio = virtio;
                virtio.Attach(vm, memory, machine.Mmio, pci,
                    e => machine.RequestStop(new VmOutcome(StopReason.HostError, Message: $"device thread: {e.Message}")));
            }
            machine.CreateVcpus(boot);
            return machine;
        }
        catch
        {
            virtio?.Dispose();
            memory?.Dispose();
            vm?.Dispose();
            kvm.Dispose();
            throw;
        }
    }

    /// <summary>Host console input: to the virtio console when there is one, else to COM1. Returns how many bytes fit.</summary>
    public int EnqueueConsoleInput(ReadOnlySpan<byte> input) =>
        _virtio?.TryEnqueueConsoleInput(input) ?? Serial.Enqueue(input);

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
        if (Config.Acpi)
        {
            AcpiPm = new AcpiPm(
                () => RequestStop(new VmOutcome(StopReason.PowerOff, Message: "ACPI S5")),
                () => RequestStop(new VmOutcome(StopReason.Reset, Message: "ACPI reset register")),
                new KvmLevelLine(_vm, AcpiPm.SciIrq));
            Pio.Insert(AcpiPm, AcpiPm.Base, AcpiPm.Length);
        }
    }

    /// <summary>PCI bus 0 for the PCI transport, present even with no devices so that the guest's probe finds a host bridge.</summary>
    private PciRoot? AddPciRoot()
    {
        if (Config.Transport != VirtioTransportKind.Pci)
        {
            return null;
        }
        var pci = new PciRoot();
        Pio.Insert(pci.PortDevice, PciRoot.ConfigAddressPort, 8);
        Mmio.Insert(pci.EcamDevice, VirtioWiring.PciEcamBase, PciRoot.EcamSize);
        return pci;
    }

    /// <summary>What the ACPI tables describe: the vCPUs, the PCI host bridge, and the fixed registers of <see cref="AcpiPm"/>.</summary>
    private static AcpiPlatform AcpiPlatformFor(VmConfig config) => new(
        config.Vcpus,
        config.Transport == VirtioTransportKind.Pci
            ? new AcpiPci(VirtioWiring.PciEcamBase, PciRoot.EcamSize, (uint)VirtioWiring.PciBarBase, (uint)VirtioWiring.PciBarWindowEnd, VirtioWiring.PciGsiForSlot)
            : null,
        AcpiPm.Base,
        AcpiPm.ResetPort,
        AcpiPm.ResetValue,
        AcpiPm.SciIrq,
        AcpiPm.S5SleepType,
        MpTable.IoApicAddr,
        IoApicId: (byte)config.Vcpus, // as in the MP table: the first id after the vCPUs
        MpTable.LapicAddr);

    private void CreateVcpus(BootCpuState boot)
    {
        var supported = _kvm.GetSupportedCpuid();
        bool tscDeadline = _kvm.CheckExtension(KvmAbi.KVM_CAP_TSC_DEADLINE_TIMER) > 0;
        for (int id = 0; id < Config.Vcpus; id++)
        {
            var vcpu = _vm.CreateVcpu(id);
            _vcpus.Add(vcpu);
            vcpu.SetCpuid(CpuidTemplate.For(supported, id, Config.Vcpus, tscDeadline));
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
        _virtio?.Start();
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

    /// <summary>
    /// Parks every vCPU outside KVM_RUN and returns once each has answered that it is parked (or
    /// has ended: the VM stopped). Devices keep serving what the guest already queued. Safe from
    /// any thread but a vCPU's.
    /// </summary>
    public void Pause()
    {
        lock (_pauseLock)
        {
            if (_paused || _stopping)
            {
                return;
            }
            Ask(VcpuRequest.Pause, VcpuResponse.Paused);
            _paused = !_stopping;
        }
    }

    /// <summary>Lets the parked vCPUs run on, once each has answered that it does.</summary>
    public void Resume()
    {
        lock (_pauseLock)
        {
            if (!_paused)
            {
                return;
            }
            Ask(VcpuRequest.Resume, VcpuResponse.Resumed);
            _paused = false;
        }
    }

    /// <summary>Sends every vCPU the request, then waits for each one's answer (or its end).</summary>
    private void Ask(VcpuRequest request, VcpuResponse answer)
    {
        foreach (var runner in _runners)
        {
            runner.Send(request);
        }
        foreach (var runner in _runners)
        {
            // A vCPU answers once it is out of KVM_RUN; one that is not started yet answers when it starts.
            while (!runner.TakeResponse(TimeSpan.FromMilliseconds(100), out var response) || (response != answer && response != VcpuResponse.Exited))
            {
                if (_stopping && !runner.IsStarted)
                {
                    break; // stopped before it ran: it never will
                }
            }
        }
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
            runner.Send(VcpuRequest.Stop); // a parked vCPU takes it too
        }
        _stopped.Set();
    }

    public void Dispose()
    {
        _virtio?.Dispose();
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
