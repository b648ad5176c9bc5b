using Vireo.Api;
using Vireo.Vmm;
using Vireo.Vmm.Migration;
using Vireo.Vmm.Snapshot;
using Vireo.Virtio.Block;
using Vireo.Virtio.Net;
using Vireo.Virtio.Vsock;

namespace Vireo.VmmServer;

/// <summary>
/// The one VM this process owns, driven by the API: its pieces are set while it is not started,
/// then InstanceStart builds and runs it. A guest reboot builds it afresh (on_reboot=restart);
/// when it ends for good, <see cref="Ended"/> fires with the exit status `vireo run` would give.
/// Every method is safe from any request thread.
/// </summary>
internal sealed class VmSession(Action<byte> serialOut)
{
    private readonly Lock _lock = new();
    private BootSource? _boot;
    private MachineConfig _machine = new(1, 256);
    private readonly List<Drive> _drives = [];
    private readonly List<NetworkInterface> _nets = [];
    private Api.Vsock? _vsock;
    private Machine? _current;
    private VmFiles? _files; // the running VM's (a local migration hands its TAPs over)
    private string _state = VmState.NotStarted;
    private int _boots;
    private long _exitsOfEarlierBoots;
    private VmOutcome? _last;
    private Func<MigrationStatus>? _migration; // the sender's or receiver's status, while and after one runs
    private System.Net.Sockets.Socket? _listener;

    /// <summary>
    /// Set once GET /migration has answered Completed on a source: the process waits for it (a
    /// moment at most) before it exits, so that whoever sent the VM away reads its downtime.
    /// </summary>
    public ManualResetEventSlim MigratedStatusRead { get; } = new();

    /// <summary>Raised once, from the VM's thread, when the VM has ended for good.</summary>
    public event Action<int>? Ended;

    /// <summary>Null when accepted, else why not (a 400).</summary>
    public string? SetBootSource(BootSource boot) => BeforeStart(() => _boot = boot);

    /// <summary>Sizes are checked here, as Firecracker does, not first at InstanceStart.</summary>
    public string? SetMachineConfig(MachineConfig machine)
    {
        const long MinMib = (long)(Memory.MemoryLayout.MinRam >> 20), MaxMib = (long)(Memory.MemoryLayout.MaxRam >> 20);
        if (machine.VcpuCount is < 1 or > VmConfig.MaxVcpus)
        {
            return $"machine-config: vcpu_count {machine.VcpuCount} is outside 1..{VmConfig.MaxVcpus}";
        }
        if (machine.MemSizeMib is < MinMib or > MaxMib)
        {
            return $"machine-config: mem_size_mib {machine.MemSizeMib} is outside {MinMib}..{MaxMib}";
        }
        if (Interop.HostMemory.TotalBytes is { } host && (ulong)machine.MemSizeMib << 20 > host)
        {
            return $"machine-config: mem_size_mib {machine.MemSizeMib} is more than this host's RAM ({host >> 20} MiB)";
        }
        if (machine.MemoryBacking is not (MachineConfig.Auto or MachineConfig.Memfd or MachineConfig.Anonymous))
        {
            return $"machine-config: memory_backing '{machine.MemoryBacking}' is not one of {MachineConfig.Auto}, {MachineConfig.Memfd}, {MachineConfig.Anonymous}";
        }
        return BeforeStart(() => _machine = machine);
    }

    public string? PutDrive(string id, Drive drive) =>
        id != drive.DriveId ? $"drive_id '{drive.DriveId}' does not match the path's '{id}'"
        : BeforeStart(() => Replace(_drives, drive, d => d.DriveId == id));

    /// <summary>host_dev_name and guest_mac are checked here, as `vireo run --net` checks them, not first at InstanceStart.</summary>
    public string? PutNetworkInterface(string id, NetworkInterface net)
    {
        if (id != net.IfaceId)
        {
            return $"iface_id '{net.IfaceId}' does not match the path's '{id}'";
        }
        try
        {
            NetConfig.ForTap(net.HostDevName, net.GuestMac, 0);
        }
        catch (FormatException e)
        {
            return $"network-interface: {e.Message}";
        }
        return BeforeStart(() => Replace(_nets, net, n => n.IfaceId == id));
    }

    /// <summary>guest_cid and uds_path are checked here with `vireo run --vsock`'s rules.</summary>
    public string? SetVsock(Api.Vsock vsock) =>
        VsockConfig.CidProblem(vsock.GuestCid) is { } cid ? $"vsock: guest_cid {vsock.GuestCid} {cid}"
        : VsockConfig.SocketProblem(vsock.UdsPath) is { } path ? $"vsock: uds_path {path}"
        : BeforeStart(() => _vsock = vsock);

    /// <summary>Why the VM last stopped (a StopReason name), or "None".</summary>
    public string LastReason
    {
        get
        {
            lock (_lock)
            {
                return _last?.Reason.ToString() ?? "None";
            }
        }
    }

    public VmInfo Info()
    {
        lock (_lock)
        {
            string state = _state == VmState.Running && _current?.IsPaused == true ? VmState.Paused : _state;
            return new VmInfo(state, _machine.VcpuCount, _machine.MemSizeMib, _boot?.KernelImagePath, _boots,
                _exitsOfEarlierBoots + (_current?.Exits ?? 0), Describe(_last));
        }
    }

    /// <summary>
    /// Console input for the running guest: how many bytes of <paramref name="input"/> it took (none
    /// while its receive buffer is full, or between boots: try again), or why none can go.
    /// </summary>
    public (int Taken, string? Error) TakeConsoleInput(ReadOnlySpan<byte> input)
    {
        Machine? machine;
        lock (_lock)
        {
            if (_state != VmState.Running)
            {
                return (0, $"console input: the VM is {_state}");
            }
            machine = _current;
        }
        return (machine is { IsStopping: false } ? machine.EnqueueConsoleInput(input) : 0, null);
    }

    /// <summary>PUT /actions. Null when done, else why not.</summary>
    public string? Act(string action)
    {
        if (!InstanceAction.All.Contains(action))
        {
            return $"action_type '{action}' is not one of {string.Join(", ", InstanceAction.All)}"; // whatever the VM's state
        }
        if (action == InstanceAction.InstanceStart)
        {
            return Start();
        }
        Machine? machine;
        lock (_lock)
        {
            if (_state != VmState.Running || _current is null)
            {
                return $"{action}: the VM is {_state}";
            }
            machine = _current;
        }
        switch (action)
        {
            case InstanceAction.Pause:
                machine.Pause();
                return null;
            case InstanceAction.Resume:
                machine.Resume();
                return null;
            case InstanceAction.Shutdown:
                if (machine.AcpiPm is not { } pm)
                {
                    return "Shutdown: the VM has no ACPI power button (machine-config acpi is false); use Stop";
                }
                pm.PressPowerButton();
                return null;
            case InstanceAction.Reset:
                machine.RequestStop(new VmOutcome(StopReason.Reset, Message: "reset from the API"));
                return null;
            case InstanceAction.Stop:
                machine.RequestStop(new VmOutcome(StopReason.HostRequest, Message: "stop from the API"));
                return null;
            default:
                return $"action_type '{action}' is not one of {string.Join(", ", InstanceAction.All)}";
        }
    }

    /// <summary>PATCH /vm: Paused or Resumed. Null when done, else why not.</summary>
    public string? PatchState(string state)
    {
        if (state is not (VmStatePatch.Paused or VmStatePatch.Resumed))
        {
            return $"state '{state}' is not one of {VmStatePatch.Paused}, {VmStatePatch.Resumed}";
        }
        return Act(state == VmStatePatch.Paused ? InstanceAction.Pause : InstanceAction.Resume);
    }

    /// <summary>PUT /snapshot/create: the VM must be paused, and stays so. Null when done, else why not.</summary>
    public string? CreateSnapshot(SnapshotCreateParams p)
    {
        if (p.SnapshotType is not (SnapshotCreateParams.Full or SnapshotCreateParams.Diff))
        {
            return $"snapshot_type '{p.SnapshotType}' is not one of {SnapshotCreateParams.Full}, {SnapshotCreateParams.Diff}";
        }
        if (p.SnapshotPath.Length == 0 || p.MemFilePath.Length == 0)
        {
            return "snapshot_path and mem_file_path must name files";
        }
        if (Path.GetFullPath(p.SnapshotPath) == Path.GetFullPath(p.MemFilePath))
        {
            return "snapshot_path and mem_file_path must be two different files";
        }
        Machine? machine;
        lock (_lock)
        {
            machine = _state == VmState.Running ? _current : null;
            if (machine is null || !machine.IsPaused)
            {
                return $"snapshot/create: the VM is {(machine is null ? _state : VmState.Running)}; pause it first (PATCH /vm {{\"state\":\"Paused\"}})";
            }
        }
        try
        {
            Snapshots.Create(machine, p.SnapshotType == SnapshotCreateParams.Diff ? SnapshotKind.Diff : SnapshotKind.Full, p.SnapshotPath, p.MemFilePath);
            return null;
        }
        catch (SnapshotException e)
        {
            return $"snapshot/create: {e.Message}";
        }
    }

    private static string? ParseUrl(string field, string text, out MigrationUrl url)
    {
        try
        {
            url = MigrationUrl.Parse(field, text);
            return null;
        }
        catch (MigrationException e)
        {
            url = null!;
            return e.Message;
        }
    }

    /// <summary>GET /migration: the last migration's status (None when there was none).</summary>
    public MigrationInfo MigrationInfo()
    {
        var s = _migration?.Invoke() ?? MigrationStatus.Idle;
        if (s.State == MigrationStatus.Completed && _state == VmState.Migrated)
        {
            MigratedStatusRead.Set();
        }
        return new MigrationInfo(s.State, s.Url, s.Round, s.PagesTotal, s.PagesLeft, s.BytesSent, Math.Round(s.RateMibS, 1),
            Math.Round(s.ExpectedDowntimeMs, 1), s.DowntimeMs is { } d ? Math.Round(d, 2) : null, Math.Round(s.ElapsedMs, 1), s.Error);
    }

    /// <summary>
    /// PUT /migration/receive, on a VMM that has not started a VM: listens on receiver_url and
    /// returns; one source may then connect. The VM it sends runs here once the source commits;
    /// a migration that fails leaves this VMM as it was, to receive again.
    /// </summary>
    public string? ReceiveMigration(MigrationReceiveParams p)
    {
        if (ParseUrl("receiver_url", p.ReceiverUrl, out var url) is { } bad)
        {
            return bad;
        }
        System.Net.Sockets.Socket listener;
        var receiver = new MigrationReceiver(serialOut);
        lock (_lock)
        {
            if (_state != VmState.NotStarted)
            {
                return $"migration/receive: the VM is {_state}; a migration is received by a vireo-vmm that has not started one";
            }
            try
            {
                listener = url.Listen();
            }
            catch (MigrationException e)
            {
                return e.Message;
            }
            _state = VmState.Receiving;
            _listener = listener;
            _migration = () => receiver.Status with { Url = url.Text };
        }
        new Thread(() =>
        {
            Machine machine;
            VmFiles files;
            try
            {
                (machine, files) = receiver.Receive(listener);
            }
            catch (MigrationException e)
            {
                Console.Error.WriteLine($"vireo-vmm: migration/receive: {e.Message}");
                lock (_lock)
                {
                    _state = VmState.NotStarted;
                }
                return;
            }
            finally
            {
                listener.Dispose();
                if (url.IsUnix)
                {
                    Interop.Libc.RemoveStaleSocket(url.Path!);
                }
                lock (_lock)
                {
                    _listener = null;
                }
            }
            Adopt(machine, files, onThisThread: true); // this thread runs the VM: no new one between the commit and the guest's next instruction
        }) { Name = "vm", IsBackground = true }.Start();
        return null;
    }

    /// <summary>
    /// PUT /migration/send: migrates the running VM and answers when it is over, as Cloud
    /// Hypervisor's send-migration does (GET /migration reads its progress meanwhile). Done: the
    /// VM is Migrated and this process ends. Not done: the VM runs on here, and the answer says why.
    /// </summary>
    public string? SendMigration(MigrationSendParams p)
    {
        if (ParseUrl("destination_url", p.DestinationUrl, out var url) is { } bad)
        {
            return bad;
        }
        if (p.DowntimeMs is < 1 or > 3_600_000)
        {
            return $"downtime_ms: {p.DowntimeMs} is outside 1..3600000";
        }
        if (p.TimeoutS is < 1 or > 86_400 * 7)
        {
            return $"timeout_s: {p.TimeoutS} is outside 1..604800";
        }
        string strategy = p.TimeoutStrategy.ToLowerInvariant();
        if (strategy is not (MigrationSendParams.Cancel or MigrationSendParams.Force))
        {
            return $"timeout_strategy: '{p.TimeoutStrategy}' is not one of {MigrationSendParams.Cancel}, {MigrationSendParams.Force}";
        }
        Machine machine;
        MigrationSender sender;
        lock (_lock)
        {
            if (_state != VmState.Running || _current is null)
            {
                return $"migration/send: the VM is {_state}; only a running VM migrates";
            }
            if (_migration?.Invoke().State is MigrationStatus.Connecting or MigrationStatus.Copying or MigrationStatus.StopAndCopy)
            {
                return "migration/send: a migration is already under way (GET /migration)";
            }
            machine = _current;
            sender = new MigrationSender(machine, url, new MigrationOptions(TimeSpan.FromMilliseconds(p.DowntimeMs), TimeSpan.FromSeconds(p.TimeoutS),
                ForceOnTimeout: strategy == MigrationSendParams.Force, p.Local), _files is { } f ? f.TapFd : null);
            _migration = () => sender.Status;
        }
        try
        {
            sender.Run();
        }
        catch (MigrationException e)
        {
            return $"migration/send: {e.Message}";
        }
        lock (_lock)
        {
            _state = VmState.Migrated;
        }
        machine.RequestStop(new VmOutcome(StopReason.Migrated, Message: $"migrated to {url}"));
        return null;
    }

    /// <summary>
    /// PUT /snapshot/load, on a VMM that has not started a VM: builds the saved VM and runs it
    /// (resume_vm) or leaves it paused. Its configuration is the snapshot's. Null when done, else why not.
    /// </summary>
    public string? LoadSnapshot(SnapshotLoadParams p)
    {
        string? memPath = p.MemBackend?.BackendPath ?? p.MemFilePath;
        if (p.MemBackend is { } backend && backend.BackendType != MemoryBackend.File)
        {
            return backend.BackendType == MemoryBackend.Uffd
                ? "mem_backend: backend_type Uffd is not supported; use File (its pages are mapped copy-on-write, so they arrive on first touch)"
                : $"mem_backend: backend_type '{backend.BackendType}' is not one of {MemoryBackend.File}, {MemoryBackend.Uffd}";
        }
        if (p.MemBackend is not null && p.MemFilePath is not null)
        {
            return "give mem_backend or mem_file_path, not both";
        }
        if (memPath is null)
        {
            return "mem_backend is required (backend_type File, backend_path the snapshot's memory file)";
        }
        lock (_lock)
        {
            if (_state != VmState.NotStarted)
            {
                return $"snapshot/load: the VM is {_state}; a snapshot is loaded into a vireo-vmm that has not started one";
            }
            _state = VmState.Starting;
        }
        Machine machine;
        VmFiles files;
        try
        {
            (machine, files) = Snapshots.Load(p.SnapshotPath, memPath, serialOut, p.ResumeVm, trackDirtyPages: p.TrackDirtyPages || p.EnableDiffSnapshots);
        }
        catch (Exception e)
        {
            lock (_lock)
            {
                _state = VmState.NotStarted;
            }
            return e is SnapshotException or VmConfigException or Kvm.KvmUnavailableException or Interop.SysError
                ? $"snapshot/load: {e.Message}"
                : $"snapshot/load: the VM could not be restored: {e.Message.ReplaceLineEndings(" ")}";
        }
        Adopt(machine, files);
        return null;
    }

    /// <summary>Takes a machine built from saved state (a snapshot, a migration) as this session's VM, and runs it.</summary>
    private void Adopt(Machine machine, VmFiles files, bool onThisThread = false)
    {
        var config = machine.Config;
        lock (_lock)
        {
            _boot = new BootSource(config.KernelPath, config.InitrdPath, config.Cmdline);
            _machine = _machine with { VcpuCount = config.Vcpus, MemSizeMib = (long)(config.MemoryBytes >> 20), Acpi = config.Acpi, TrackDirtyPages = config.TrackDirtyPages, MemoryBacking = config.MemoryBacking.ToString() };
            _current = machine;
            _files = files;
            _state = VmState.Running;
            _boots = 1;
        }
        // The guest goes on now, from this thread: the thread that waits for it to stop starts after.
        machine.Start();
        if (onThisThread)
        {
            RunLoop(config, files, machine);
            return;
        }
        new Thread(() => RunLoop(config, files, machine)) { Name = "vm", IsBackground = true }.Start();
    }

    /// <summary>
    /// Opens the VM's files and builds it with the lock not held (both may take a while, and GET
    /// /vm keeps answering "Starting" meanwhile); the state alone keeps a second start and every
    /// PUT out until this one has finished.
    /// </summary>
    private string? Start()
    {
        VmConfig config;
        lock (_lock)
        {
            if (_state != VmState.NotStarted)
            {
                return $"InstanceStart: the VM is {_state}";
            }
            if (_boot is null)
            {
                return "InstanceStart: no boot source (PUT /boot-source first)";
            }
            try
            {
                config = BuildConfig();
            }
            catch (Exception e) when (e is VmConfigException or FormatException)
            {
                return $"InstanceStart: {e.Message}";
            }
            _state = VmState.Starting;
        }
        VmFiles? files = null;
        Machine machine;
        try
        {
            files = VmFiles.Open(config); // the only time the VM's paths are opened: every boot after this uses these
            machine = MachineBuilder.Boot(config, files, serialOut);
        }
        catch (Exception e)
        {
            files?.Dispose();
            lock (_lock)
            {
                _state = VmState.NotStarted; // the configuration can be corrected and started again
            }
            // Expected refusals name the field; anything else still answers in one line rather than a bare 500.
            return e is VmConfigException or Boot.BootException or Kvm.KvmUnavailableException or Interop.SysError
                ? $"InstanceStart: {e.Message}"
                : $"InstanceStart: the VM could not be built: {e.Message.ReplaceLineEndings(" ")}";
        }
        lock (_lock)
        {
            _current = machine;
            _files = files;
            _state = VmState.Running;
            _boots = 1;
        }
        new Thread(() => RunLoop(config, files, machine)) { Name = "vm", IsBackground = true }.Start();
        return null;
    }

    private void RunLoop(VmConfig config, VmFiles files, Machine machine)
    {
        while (true)
        {
            var outcome = machine.Run();
            long exits = machine.Exits;
            machine.Dispose();
            bool restart;
            lock (_lock)
            {
                _exitsOfEarlierBoots += exits;
                _last = outcome;
                _current = null;
                restart = outcome.Reason == StopReason.Reset && _machine.RestartOnReboot;
            }
            if (restart)
            {
                try
                {
                    // From the files opened at InstanceStart, outside the lock: GET /vm answers meanwhile.
                    machine = MachineBuilder.Boot(config, files, serialOut);
                    lock (_lock)
                    {
                        _current = machine;
                        _boots++;
                    }
                    continue;
                }
                catch (Exception e)
                {
                    lock (_lock)
                    {
                        _last = new VmOutcome(StopReason.HostError, Message: $"restart after reboot: {e.Message}");
                    }
                }
            }
            lock (_lock)
            {
                if (_state != VmState.Migrated)
                {
                    _state = VmState.Stopped;
                }
            }
            files.Dispose();
            Ended?.Invoke(_last!.ExitCode);
            return;
        }
    }

    private static string? Describe(VmOutcome? o) =>
        o is null ? null : o.ToString().Contains(o.Message, StringComparison.Ordinal) ? o.ToString() : $"{o} ({o.Message})";

    private VmConfig BuildConfig()
    {
        if (_machine.MemSizeMib is < 1 or > (1L << 20))
        {
            throw new VmConfigException($"mem_size_mib: {_machine.MemSizeMib} is outside 1..{1L << 20}");
        }
        return new VmConfig
        {
            KernelPath = _boot!.KernelImagePath,
            InitrdPath = _boot.InitrdPath,
            Cmdline = _boot.BootArgs ?? "console=ttyS0 panic=1",
            Vcpus = _machine.VcpuCount,
            MemoryBytes = (ulong)_machine.MemSizeMib << 20,
            Acpi = _machine.Acpi,
            TrackDirtyPages = _machine.TrackDirtyPages,
            MemoryBacking = _machine.MemoryBacking switch
            {
                MachineConfig.Memfd => MemoryBacking.Memfd,
                MachineConfig.Anonymous => MemoryBacking.Anonymous,
                _ => MemoryBacking.Auto,
            },
            Disks = [.. _drives.Select(d => new BlockConfig(d.PathOnHost, d.IsReadOnly, d.Direct, 1, d.DriveId))],
            Nets = [.. _nets.Select((n, i) => NetConfig.ForTap(n.HostDevName, n.GuestMac, i))],
            Vsock = _vsock is null ? null : new VsockConfig(_vsock.GuestCid, _vsock.UdsPath),
        };
    }

    private string? BeforeStart(Action set)
    {
        lock (_lock)
        {
            if (_state != VmState.NotStarted)
            {
                return $"the VM is {_state}: its configuration is fixed once started";
            }
            set();
            return null;
        }
    }

    private static void Replace<T>(List<T> list, T item, Predicate<T> same)
    {
        int at = list.FindIndex(same);
        if (at >= 0)
        {
            list[at] = item;
        }
        else
        {
            list.Add(item);
        }
    }
}
