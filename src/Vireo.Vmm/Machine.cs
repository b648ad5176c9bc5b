using Vireo.Devices;
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
    private readonly KvmVm _vm;
    private readonly List<KvmVcpu> _vcpus = [];
    private readonly List<VcpuRunner> _runners = [];
    private readonly List<IDisposable> _owned = [];
    private readonly ManualResetEventSlim _stopped = new();
    private VmOutcome? _outcome;
    private volatile bool _stopping;
    private volatile bool _paused;
    private readonly Lock _pauseLock = new(); // one Pause or Resume at a time

    public VmConfig Config { get; }
    public GuestMemory Memory { get; }
    public Bus Pio { get; } = new();
    public Bus Mmio { get; } = new();

    /// <summary>Every device, under its id in the device map.</summary>
    public DeviceManager Devices { get; }

    public Serial16550 Serial => Devices.Serial;
    public PostCodePort PostCode => Devices.PostCode;

    /// <summary>The ACPI power-management registers; null when the VM has no ACPI.</summary>
    public AcpiPm? AcpiPm => Devices.AcpiPm;

    /// <summary>The virtio devices, in the order the guest sees them.</summary>
    public IReadOnlyList<VirtioDevice> VirtioDevices => Devices.VirtioDevices;
    public bool IsStopping => _stopping;

    /// <summary>True between <see cref="Pause"/> and <see cref="Resume"/>: every vCPU has left KVM_RUN and said so.</summary>
    public bool IsPaused => _paused || (StartPaused && !_started);

    private bool _started; // Run has started the vCPUs (under _pauseLock)
    private bool _vcpusParked; // StartVcpusParked made the vCPU threads before Run (under _pauseLock)
    private bool _handedOver; // HandOver gave the machine away: it never runs or wakes its devices again

    /// <summary>Exits to userspace so far, over all vCPUs.</summary>
    public long Exits => _runners.Sum(r => r.Exits);

    /// <summary>The vCPU threads' ids (0 for one not started).</summary>
    internal IEnumerable<int> VcpuThreadIds => _runners.Select(r => r.ThreadId);

    /// <summary>Managed bytes the vCPU threads allocated while running.</summary>
    internal long VcpuAllocatedBytes => _runners.Sum(r => r.AllocatedBytes);

    /// <summary>Set by a restore: the vCPUs start parked (resume_vm false) and the devices are kicked once they run.</summary>
    internal bool StartPaused { get; set; }
    internal bool Restored { get; set; }

    internal KvmVm Vm => _vm;
    internal IReadOnlyList<KvmVcpu> Vcpus => _vcpus;

    internal Machine(VmConfig config, KvmVm vm, GuestMemory memory, DeviceManager devices)
    {
        Config = config;
        _vm = vm;
        Memory = memory;
        Devices = devices;
        Dirty = config.TrackDirtyPages ? new DirtyTracker(vm, memory) : null;
    }

    /// <summary>What was written to RAM since the last snapshot (or start), when <see cref="VmConfig.TrackDirtyPages"/> is on.</summary>
    public DirtyTracker? Dirty { get; }

    /// <summary>
    /// A tracker of RAM writes from now on for a migration: the machine's own when it tracks
    /// dirty pages (<paramref name="owned"/> false), else a new one the caller disposes.
    /// </summary>
    internal DirtyTracker TrackWrites(out bool owned)
    {
        owned = Dirty is null;
        return Dirty ?? new DirtyTracker(_vm, Memory);
    }

    /// <summary>
    /// Builds a VM ready to run from its files, opened here and closed with the machine. Whoever
    /// boots the same VM more than once opens <see cref="VmFiles"/> itself and uses <see cref="MachineBuilder.Boot"/>.
    /// </summary>
    public static Machine Create(VmConfig config, Action<byte> serialOut)
    {
        var files = VmFiles.Open(config);
        try
        {
            var machine = MachineBuilder.Boot(config, files, serialOut);
            machine.Own(files);
            return machine;
        }
        catch
        {
            files.Dispose();
            throw;
        }
    }

    /// <summary>Disposes <paramref name="d"/> with the machine.</summary>
    internal void Own(IDisposable d) => _owned.Add(d);

    /// <summary>Host console input: to the virtio console when there is one, else to COM1. Returns how many bytes fit.</summary>
    public int EnqueueConsoleInput(ReadOnlySpan<byte> input) => Devices.EnqueueConsoleInput(input);

    /// <summary>Adds a vCPU the builder made, with the thread that will run it.</summary>
    internal void AddVcpu(KvmVcpu vcpu)
    {
        _vcpus.Add(vcpu);
        _runners.Add(new VcpuRunner(vcpu, Pio, Mmio, this));
    }

    /// <summary>Runs the VM until it stops or <paramref name="timeout"/> passes, and says why it stopped.</summary>
    public VmOutcome Run(TimeSpan? timeout = null)
    {
        Start();
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

    private int _launched; // Start ran (once)

    /// <summary>
    /// Lets the VM go, its devices and vCPUs, and returns without waiting for it to stop; <see
    /// cref="Run"/> then only waits. A restored machine is started on the thread that restored it,
    /// so that no thread's start stands between the restore and the guest's next instruction.
    /// </summary>
    public void Start()
    {
        if (Interlocked.Exchange(ref _launched, 1) != 0)
        {
            return;
        }
        _ = Signals.KickSignal; // install the kick handler before any vCPU thread exists
        if (_vcpusParked)
        {
            Devices.Unquiesce(); // its loop was made parked
        }
        else
        {
            Devices.Start();
        }
        if (Restored)
        {
            Devices.KickAll(); // what the guest queued while its notifications went to the old process
        }
        lock (_pauseLock) // a Resume that came before Run has cleared StartPaused
        {
            _started = true;
            if (StartPaused)
            {
                _paused = true; // IsPaused, read without the lock, never sees a gap between the two
                foreach (var runner in _runners)
                {
                    runner.Send(VcpuRequest.Pause); // taken before the first KVM_RUN
                }
            }
            if (_vcpusParked)
            {
                if (!StartPaused)
                {
                    Ask(VcpuRequest.Resume, VcpuResponse.Resumed); // made and parked already: only let go
                }
                _hurry?.Dispose();
                _hurry = null;
            }
            else
            {
                foreach (var runner in _runners)
                {
                    runner.Start();
                }
                if (StartPaused)
                {
                    Collect(VcpuResponse.Paused);
                    _paused = !_stopping;
                }
            }
        }
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

    /// <summary>
    /// Makes the machine's threads now, the vCPUs each parked before its first KVM_RUN and the
    /// event loop before it handles anything, so that <see cref="Run"/> only lets them go. A
    /// migration's destination does this before the guest's pause: making a thread waits for the
    /// scheduler to run it, and those waits were the longest part of the pause on a busy host.
    /// </summary>
    public void StartVcpusParked()
    {
        lock (_pauseLock)
        {
            if (_started || _vcpusParked)
            {
                return;
            }
            Devices.StartParked();
            foreach (var runner in _runners)
            {
                runner.Send(VcpuRequest.Pause); // taken before the first KVM_RUN
            }
            foreach (var runner in _runners)
            {
                runner.Start();
            }
            Collect(VcpuResponse.Paused);
            _vcpusParked = true;
        }
    }

    private Migration.Urgency? _hurry; // raised threads, back to their priority once the vCPUs run

    /// <summary>Raises <paramref name="thread"/> and the vCPU threads until <see cref="Run"/> has let the vCPUs go.</summary>
    internal void Hurry(int thread)
    {
        _hurry?.Dispose();
        _hurry = Migration.Urgency.Raise(VcpuThreadIds.Append(thread));
    }

    /// <summary>Lets the parked vCPUs run on, once each has answered that it does.</summary>
    public void Resume()
    {
        lock (_pauseLock)
        {
            if (StartPaused && !_started)
            {
                StartPaused = false; // not running yet: it will start running
                return;
            }
            if (!_paused || _handedOver)
            {
                return;
            }
            Ask(VcpuRequest.Resume, VcpuResponse.Resumed);
            _paused = false;
        }
    }

    /// <summary>
    /// The machine's state, taken while it is paused: the devices are quiesced (disk I/O in flight
    /// finishes, the event loop parks), every vCPU saves its own state on its thread, then KVM's
    /// VM-wide state and every device's. <paramref name="whileQuiet"/> runs before the devices
    /// wake again: guest RAM is written there, so that no device changes it meanwhile.
    /// </summary>
    public Snapshot.MachineState SaveState(Action? whileQuiet = null) =>
        Capture(whileQuiet is null ? null : _ => whileQuiet(), handOver: false);

    /// <summary>
    /// Takes the state as <see cref="SaveState"/> does and gives it to <paramref name="send"/>
    /// while the devices are quiet. Once it returns, the machine belongs to whoever it was sent
    /// to: its devices stay quiet (a device writing the RAM a local successor now shares would
    /// corrupt it), and the caller stops it. If it throws, the devices wake and the machine is
    /// as it was, paused.
    /// </summary>
    public void HandOver(Action<Snapshot.MachineState> send) => Capture(send, handOver: true);

    /// <summary>What a save costs once a process, paid now and not while the guest waits paused.</summary>
    public void PrepareToSave()
    {
        if (_vcpus.Count > 0)
        {
            _vcpus[0].PrepareToSave();
        }
        Snapshot.SnapshotFile.WarmUp();
    }

    private Snapshot.MachineState Capture(Action<Snapshot.MachineState>? whileQuiet, bool handOver)
    {
        PrepareToSave(); // once a process, and on this thread, not on a vCPU's (whose seccomp list makes no VM)
        lock (_pauseLock)
        {
            if (!_paused || _stopping)
            {
                throw new Snapshot.SnapshotException(_stopping ? "the VM is stopping" : "the VM is not paused: pause it first");
            }
            if (!Devices.Quiesce(TimeSpan.FromSeconds(10)))
            {
                throw new Snapshot.SnapshotException("a disk still had requests in flight after 10 s; try again");
            }
            try
            {
                // The other vCPUs save on their own threads meanwhile; this thread takes vCPU 0's share,
                // so that a VM of one vCPU wakes no thread in the pause (a wake-up on an idle CPU of
                // this nested host was up to 16 ms late).
                for (int i = 1; i < _runners.Count; i++)
                {
                    _runners[i].Send(VcpuRequest.Save);
                }
                _runners[0].SaveWhileParked();
                Collect(VcpuResponse.Saved, from: 1);
                var vcpus = new Kvm.VcpuState[_runners.Count];
                for (int i = 0; i < vcpus.Length; i++)
                {
                    var (state, error) = _runners[i].LastSaved;
                    vcpus[i] = state ?? throw new Snapshot.SnapshotException(error ?? $"vCPU {i} did not save its state (the VM stopped)");
                }
                var vm = _vm.SaveState();
                var devices = Devices.SaveState();
                var machineState = new Snapshot.MachineState(Config, vm, vcpus, devices);
                whileQuiet?.Invoke(machineState);
                if (handOver)
                {
                    _handedOver = true;
                }
                return machineState;
            }
            finally
            {
                if (!_handedOver)
                {
                    Devices.Unquiesce();
                }
            }
        }
    }

    /// <summary>Sends every vCPU the request, then waits for each one's answer (or its end).</summary>
    private void Ask(VcpuRequest request, VcpuResponse answer)
    {
        foreach (var runner in _runners)
        {
            runner.Send(request);
        }
        Collect(answer);
    }

    private void Collect(VcpuResponse answer, int from = 0)
    {
        foreach (var runner in _runners.Skip(from))
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

    private int _disposed;

    /// <summary>Releases the VM, its devices and its RAM; a second call does nothing.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        if (_vcpusParked || _started)
        {
            // vCPU threads still there (parked ones of a migration that did not commit, or a run
            // disposed from another thread) end before their vCPUs go: they would use them.
            RequestStop(new VmOutcome(StopReason.HostRequest, Message: "the machine was released"));
            foreach (var runner in _runners.Where(r => r.IsStarted))
            {
                runner.Join();
            }
        }
        _hurry?.Dispose();
        Dirty?.Dispose();
        Devices.Dispose();
        foreach (var vcpu in _vcpus)
        {
            vcpu.Dispose();
        }
        _vm.Dispose();
        Memory.Dispose();
        foreach (var d in _owned)
        {
            d.Dispose(); // the files (and /dev/kvm) last: the VM was made from them
        }
    }
}
