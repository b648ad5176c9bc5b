using Vireo.Interop;
using Vireo.Sandbox;
using System.Collections.Concurrent;
using Vireo.Api;

namespace Vireo.Daemon;

/// <summary>
/// Spawns one vireo-vmm process per running VM, drives it over its API socket, and watches it:
/// a VMM that ends is noticed within a poll (100 ms) and the VM's on_poweroff, on_reboot or
/// on_crash policy applied. VMMs run in their own session with their console in a file, so they
/// outlive the daemon; a restarted daemon re-attaches to those still alive (pid and start time)
/// and ends those it had not finished starting (Supervisor.Recovery.cs).
/// </summary>
internal sealed partial class Supervisor : IDisposable
{
    private readonly VmStore _store;
    private readonly EventHub _events;
    private readonly string _stateDir;
    private readonly string _vmmPath;
    private readonly Func<string, List<string>> _imageDirsOf; // a tenant's image directories
    private readonly ConcurrentDictionary<string, Attached> _running = new();
    private readonly ConcurrentDictionary<string, Lock> _vmLocks = new();
    private readonly ConcurrentDictionary<string, (string Why, string State)> _destroying = new(); // ended by the operator (why, and the state it ends in): no policy applies
    // MiB each VM holds, from its admission to its end; one lock makes check-and-add atomic across concurrent starts.
    private readonly ConcurrentDictionary<string, long> _committed = new();
    private readonly Lock _admission = new();
    private readonly Thread _poller;
    private readonly uint? _sandboxFirstUid; // null: VMMs run unsandboxed
    private readonly string _cgroupInstance; // this daemon's group beneath vireo/ (CgroupOf)
    // Sandboxed VMMs, vireod's own children, reaped by the poller; each with its mount namespace held
    // open, so that the jail's mounts are taken down after the VM's end is settled, not in its exit.
    private readonly ConcurrentDictionary<int, (FileDescriptor? MountNs, string Name)> _children = new();
    private volatile bool _disposed;

    internal sealed record Attached(int Pid, long StartTime, string Dir, VmmClient Api);

    public Supervisor(VmStore store, EventHub events, string stateDir, string vmmPath, Func<string, List<string>> imageDirsOf, uint? sandboxFirstUid = null)
    {
        _sandboxFirstUid = sandboxFirstUid;
        _imageDirsOf = imageDirsOf;
        _store = store;
        _events = events;
        _stateDir = stateDir;
        _cgroupInstance = CgroupInstanceOf(Path.GetFullPath(stateDir));
        _vmmPath = vmmPath;
        Recover();
        foreach (var vm in store.All().Where(v => v.Definition.Autostart && v.State == DomainState.ShutOff))
        {
            if (Start(vm.Name) is { } error)
            {
                _events.Publish(vm.Name, "autostart-failed", DomainState.ShutOff, error); // an image refused now, say: seen in the log and the events
            }
        }
        _poller = new Thread(Poll) { IsBackground = true, Name = "supervisor" };
        _poller.Start();
    }

    public bool IsRunning(string name) => _running.ContainsKey(name);

    public int? PidOf(string name) => _running.TryGetValue(name, out var a) ? a.Pid : null;

    /// <summary>The VMM of a running VM, for the console; null when it is not running.</summary>
    public VmmClient? ApiOf(string name) => _running.TryGetValue(name, out var a) ? a.Api : null;

    public string ConsoleLogOf(string name) => Path.Combine(VmDir(name), "console.log");

    /// <summary>Starts a defined VM; null when it runs, else why not.</summary>
    public string? Start(string name)
    {
        lock (LockFor(name))
        {
            var vm = _store.Get(name);
            if (vm is null)
            {
                return $"no VM named '{name}'";
            }
            if (_running.ContainsKey(name))
            {
                return $"'{name}' is already running";
            }
            if (_incoming.ContainsKey(name))
            {
                return $"'{name}' is arriving from another vireod (vireo migrate): it runs once it is in";
            }
            if (Admit(name, vm.Definition.MemoryMib) is { } refused)
            {
                return refused;
            }
            string? failed = Launch(name, vm);
            if (failed is not null)
            {
                _committed.TryRemove(name, out _);
            }
            return failed;
        }
    }

    private string? Admit(string name, long askMib)
    {
        lock (_admission)
        {
            if (MemoryAdmission.HostMib() is long host && MemoryAdmission.CheckStart(name, askMib, _committed.Values.Sum(), host) is { } refused)
            {
                return refused;
            }
            _committed[name] = askMib;
            return null;
        }
    }

    // Called under the VM's lock, once admitted.
    private string? Launch(string name, VmRecord vm) =>
        Launch(name, vm.Definition, pinned: null, (api, paths) => VmmLauncher.Configure(api, vm.Definition, paths), "started");

    /// <summary>
    /// A new VMM for the VM, made from <paramref name="def"/>'s images, then <paramref name="configure"/>d
    /// (a boot, or a snapshot load: then <paramref name="pinned"/> holds the fd numbers the saved VMM had).
    /// Null when it runs, else why not, with no VMM left. Called under the VM's lock, once admitted.
    /// </summary>
    /// <param name="handOver">files the configuration names besides the VM's images (a save a sandboxed VMM
    /// restores, which its uid may not open): each placed on a number of its own, its path in the configuration's
    /// `paths` under its field; owned here, closed whatever happens</param>
    private string? Launch(string name, VmDefinition def, IReadOnlyDictionary<string, int>? pinned,
        Func<VmmClient, IReadOnlyDictionary<string, string>, string?> configure, string evt, string? detail = null, bool incoming = false,
        IReadOnlyList<HandedOver>? handOver = null)
    {
        using var handed = new DisposeAll(handOver);
        string dir = VmDir(name);
        foreach (var (stray, _) in VmmLauncher.Running(Path.Combine(_stateDir, "vms")).Where(p => p.Socket == Path.Combine(dir, "api.sock")))
        {
            VmmLauncher.KillAndWait(stray); // never two VMMs for one VM (none should be left, whatever happened before)
        }
        PrepareDir(dir); // after: no VMM of this VM is left to change its directory under vireod's feet
        // Opened now, as the kernel resolves them beneath the image directories: what the VMM gets is what was checked.
        // Spawn owns them from here and closes them, whatever happens.
        var (images, refused) = ImagePolicy.OpenAll(def, _imageDirsOf(_store.Get(name)?.Tenant ?? Tenants.Default));
        if (refused is not null)
        {
            return refused.ToString();
        }
        // A sandboxed VMM is handed its TAPs open, and so is one that loads a VM whose VMM had them so.
        bool tapsSaved = pinned?.ContainsKey(TapField(0)) ?? false;
        if (_sandboxFirstUid is not null && pinned is not null && def.Nets is { Length: > 0 } && !tapsSaved)
        {
            images!.ForEach(i => i.Dispose());
            return "its NICs name their TAPs, as a VMM without --sandbox opens them; a sandboxed VMM cannot open a TAP by name (load it on a vireod without --sandbox)";
        }
        if ((_sandboxFirstUid is not null || tapsSaved) && OpenTaps(def, images!) is { } tapRefused)
        {
            return tapRefused;
        }
        var fds = images!.ToDictionary(i => i.Field, i => pinned is null ? i.Fd.Fd : pinned.GetValueOrDefault(i.Field, -1));
        if (fds.Values.Any(n => n < 3))
        {
            images!.ForEach(i => i.Dispose());
            return "the saved VM's files are not all recorded (it was saved by an older vireod)";
        }
        // The handed-over files go above every image's number (a restore's recorded ones included).
        int next = Math.Max(fds.Values.DefaultIfEmpty(2).Max(), images!.Select(i => i.Fd.Fd).DefaultIfEmpty(2).Max()) + 1;
        var extra = (handOver ?? []).Select(h => (h.Fd, Number: next++, h.Field)).ToList();
        var paths = fds.Concat(extra.Select(e => KeyValuePair.Create(e.Field, e.Number))).ToDictionary(f => f.Key, f => $"/proc/self/fd/{f.Value}");
        int pid;
        try
        {
            var jail = JailFor(name, def, dir);
            // Made before the VMM: a host whose cgroups refuse is told so before anything runs.
            var cgroup = jail is null ? null : VmCgroup.Create(CgroupOf(name), jail.MaxProcesses);
            pid = VmmLauncher.Spawn(_vmmPath, dir, images!, pinned, jail, [.. extra.Select(e => (e.Fd, e.Number))]);
            if (cgroup is not null)
            {
                int ns = Libc.Open($"/proc/{pid}/ns/mnt", Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
                _children[pid] = (ns < 0 ? null : new FileDescriptor(ns), name);
                try
                {
                    cgroup.Join(pid); // it is still waiting for its configuration: nothing of the guest has run
                }
                catch (SandboxException)
                {
                    VmmLauncher.KillAndWait(pid);
                    throw;
                }
            }
        }
        catch (SandboxException e)
        {
            images!.ForEach(i => i.Dispose());
            return e.Message;
        }
        long startTime = ProcessStat.StartTime(pid) ?? 0;
        _store.SetSpawned(name, pid, startTime, new RunRecord(def, fds));
        var deadline = DateTime.UtcNow.AddSeconds(15);
        while (!UnixSocketHttp.Accepts(Path.Combine(dir, "api.sock"))) // the file appears at bind, a moment before listen
        {
            if (!ProcessStat.IsAlive(pid, startTime) || DateTime.UtcNow > deadline)
            {
                VmmLauncher.KillAndWait(pid);
                _store.ClearPid(name);
                return $"the VMM process did not start: {VmmLauncher.Tail(Path.Combine(dir, "vmm.log"))}";
            }
            Thread.Sleep(10);
        }
        var attached = new Attached(pid, startTime, dir, new VmmClient(Path.Combine(dir, "api.sock")));
        string? error = configure(attached.Api, paths);
        if (error is not null)
        {
            // The VMM names the files by the fds it inherited; the operator knows them by their paths.
            var named = ImagePolicy.Paths(def).Select(p => (p.Field, p.Path)).Concat((handOver ?? []).Select(h => (h.Field, h.Path)));
            foreach (var (field, path) in named.OrderByDescending(p => paths[p.Field].Length))
            {
                error = error.Replace(paths[field], path, StringComparison.Ordinal);
            }
            VmmLauncher.KillAndWait(pid);
            _store.ClearPid(name);
            attached.Api.Dispose();
            return error;
        }
        if (incoming)
        {
            // Waiting for a VM from another vireod: it is the VM's VMM once the VM is in (Supervisor.Migration.cs).
            _incoming[name] = attached;
            _store.SetState(name, DomainState.Incoming);
            _events.Publish(name, evt, DomainState.Incoming, $"pid {pid}, {detail}");
            return null;
        }
        _running[name] = attached;
        _store.SetRunning(name, pid, attached.StartTime);
        _events.Publish(name, evt, DomainState.Running, detail is null ? $"pid {pid}" : $"pid {pid}, {detail}");
        return null;
    }

    /// <summary>A file handed to a new VMM open, besides its images: its field in the configuration's paths, and the operator's path for it.</summary>
    private sealed record HandedOver(string Field, string Path, FileDescriptor Fd) : IDisposable
    {
        public void Dispose() => Fd.Dispose();
    }

    private sealed class DisposeAll(IEnumerable<IDisposable>? items) : IDisposable
    {
        public void Dispose()
        {
            foreach (var item in items ?? [])
            {
                item.Dispose();
            }
        }
    }

    /// <summary>pause, resume, reboot (reset), destroy (stop now).</summary>
    public string? Act(string name, string action)
    {
        if (!_running.TryGetValue(name, out var a))
        {
            return NotRunning(name);
        }
        string apiAction = action switch
        {
            "pause" => InstanceAction.Pause,
            "resume" => InstanceAction.Resume,
            "reboot" => InstanceAction.Reset,
            "destroy" => InstanceAction.Stop,
            _ => throw new ArgumentOutOfRangeException(nameof(action), action, "not an action Act takes"),
        };
        if (action == "destroy")
        {
            Destroy(name, a, "destroyed", "destroyed by the operator");
            return null;
        }
        string? error = a.Api.Put("actions", Action(apiAction));
        if (error is null)
        {
            string state = action == "pause" ? DomainState.Paused : DomainState.Running;
            if (action is "pause" or "resume")
            {
                _store.SetState(name, state);
            }
            _events.Publish(name, action == "pause" ? "paused" : action == "resume" ? "resumed" : "rebooted", state);
        }
        return error;
    }

    /// <summary>
    /// Presses the ACPI power button and gives the guest <paramref name="timeout"/> to power off;
    /// after that the VM is destroyed (xl shutdown, then xl destroy). Returns at once.
    /// </summary>
    public string? Shutdown(string name, TimeSpan timeout)
    {
        if (!_running.TryGetValue(name, out var a))
        {
            return NotRunning(name);
        }
        if (_store.Get(name)?.State == DomainState.Paused)
        {
            return $"'{name}' is paused: a paused guest cannot see the power button (resume it, or destroy it)";
        }
        string? error = a.Api.Put("actions", Action(InstanceAction.Shutdown));
        if (error is not null)
        {
            return error;
        }
        _events.Publish(name, "shutdown-requested", DomainState.Running, $"destroyed if still running after {timeout.TotalSeconds:0.#} s");
        _ = Task.Run(async () =>
        {
            await Task.Delay(timeout);
            // The same VMM process still running: the guest ignored the button.
            if (_running.TryGetValue(name, out var now) && now.Pid == a.Pid && now.StartTime == a.StartTime)
            {
                Destroy(name, now, "shutdown-forced", $"destroyed: the guest did not power off within {timeout.TotalSeconds:0.#} s of the power button");
            }
        });
        return null;
    }

    private void Destroy(string name, Attached a, string evt, string why, string endState = DomainState.ShutOff)
    {
        _destroying[name] = (why, endState);
        if (a.Api.Put("actions", Action(InstanceAction.Stop)) is not null)
        {
            VmmLauncher.Kill(a.Pid); // an unresponsive VMM is destroyed anyway
        }
        WaitForEnd(name, TimeSpan.FromSeconds(10));
        _events.Publish(name, evt, _store.Get(name)?.State ?? DomainState.ShutOff);
    }

    private string NotRunning(string name) => _store.Get(name) is null ? $"no VM named '{name}'" : $"'{name}' is not running";

    private static string Action(string type) => VmmLauncher.Action(type);

    private void WaitForEnd(string name, TimeSpan limit)
    {
        var deadline = DateTime.UtcNow + limit;
        while (_running.TryGetValue(name, out var a))
        {
            if (DateTime.UtcNow > deadline)
            {
                VmmLauncher.Kill(a.Pid);
            }
            if (!ProcessStat.IsAlive(a.Pid, a.StartTime))
            {
                Ended(name, a);
                return;
            }
            Thread.Sleep(20);
        }
        lock (LockFor(name))
        {
            // The poller took it out of the running set: wait until it has recorded the end too.
        }
    }

    /// <summary>The VM's sandbox (uid and gid: the range's first + the VM's id), or null when vireod runs without.</summary>
    private JailSpec? JailFor(string name, VmDefinition def, string dir)
    {
        if (_sandboxFirstUid is null)
        {
            return null;
        }
        uint uid = SandboxUid(name);
        string root = Path.Combine(dir, "root");
        VmDirEntries.Directory0700(root); // the jail's mount point: a real directory, whatever the VM's last VMM left
        return new JailSpec(name, uid, uid, _vmmPath, root, dir, MaxProcesses: (ulong)(64 + (2 * def.Vcpus)));
    }


    /// <summary>
    /// A sandboxed VMM has no CAP_NET_ADMIN and a network namespace of its own, where a TAP of the
    /// host's cannot be opened by name: vireod opens each (TUNSETIFF, here, in the host's namespace)
    /// and hands it over open as `nets[i].tap`, as it hands over the images. Null, or why not (then
    /// every file opened so far is closed).
    /// </summary>
    private static string? OpenTaps(VmDefinition def, List<ImagePolicy.Opened> files)
    {
        var nets = def.Nets ?? [];
        for (int i = 0; i < nets.Length; i++)
        {
            try
            {
                files.Add(new ImagePolicy.Opened(TapField(i), Tun.OpenTap(nets[i].Tap, TapHeaderSize)));
            }
            catch (Exception e) when (e is SysError or IOException or UnauthorizedAccessException or ArgumentException)
            {
                files.ForEach(f => f.Dispose());
                return $"nets[{i}].tap: {e.Message}";
            }
        }
        return null;
    }

    internal static string TapField(int index) => $"nets[{index}].tap";

    private const int TapHeaderSize = 12; // virtio_net_hdr_v1's; the VMM sets its own again when it takes the TAP

    /// <summary>The VM's own uid and gid in the sandbox: the range's first plus the VM's id, which no other defined VM has.</summary>
    private uint SandboxUid(string name)
    {
        int id = _store.Get(name)?.Id ?? throw new SandboxException($"{name}: no such VM");
        return id is >= 1 and <= 65535 ? _sandboxFirstUid!.Value + (uint)id
            : throw new SandboxException($"{name}: its id {id} is outside the sandbox's 65535 uids");
    }

    /// <summary>
    /// The VM's cgroup beneath vireo/: `STATE-HASH/NAME`, the daemon's own group first (the state
    /// directory's name and 8 hex digits of its path's SHA-256), so that two vireods on one host
    /// (a migration between them, a pool's hosts) never share a group for VMs of one name.
    /// </summary>
    internal string CgroupOf(string name) => $"{_cgroupInstance}/{name}";

    internal static string CgroupInstanceOf(string stateDir) =>
        $"{Path.GetFileName(Path.TrimEndingDirectorySeparator(stateDir))}-{Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(stateDir)))[..8]}";

    /// <summary>Gives <paramref name="path"/> to the VM's sandbox uid (nothing without --sandbox).</summary>
    private void GiveToSandbox(string name, string path)
    {
        if (_sandboxFirstUid is not null)
        {
            uint uid = SandboxUid(name);
            Check.Io(Namespaces.LChown(path, uid, uid), $"lchown({path})");
        }
    }

    /// <summary>Reaps sandboxed VMM <paramref name="pid"/> if it has ended, then lets its jail's mounts and its cgroup go.</summary>
    private void Reap(int pid)
    {
        if (_children.ContainsKey(pid) && Spawn.TryReap(pid) && _children.TryRemove(pid, out var child))
        {
            child.MountNs?.Dispose(); // the jail's last reference: its mounts go now, off the VM's way
            // A zombie stays in its cgroup until it is reaped (Linux 5.2 on). Under the VM's lock: a start of
            // the same name makes the group and joins it under that lock, so the group goes before it is
            // made again or stays because a VMM is in it, never between the two.
            lock (LockFor(child.Name))
            {
                VmCgroup.Remove(CgroupOf(child.Name));
            }
        }
    }

    private void Poll()
    {
        while (!_disposed)
        {
            foreach (var (name, a) in _running)
            {
                if (!ProcessStat.IsAlive(a.Pid, a.StartTime))
                {
                    Ended(name, a);
                }
            }
            foreach (var pid in _children.Keys)
            {
                Reap(pid);
            }
            Thread.Sleep(100);
        }
    }

    /// <summary>
    /// The VMM is gone: read why (its status file), and apply on_poweroff, on_reboot or on_crash.
    /// The poller and a destroy's wait may both see the end: only the one that takes the VM out
    /// of the running set settles it, and only if it is still the process that was seen ending
    /// (not one a restart has started since).
    /// </summary>
    private void Ended(string name, Attached? seen)
    {
        lock (LockFor(name))
        {
            if (seen is not null)
            {
                if (!_running.TryRemove(new KeyValuePair<string, Attached>(name, seen)))
                {
                    return; // already settled by the other observer
                }
                seen.Api.Dispose();
                _committed.TryRemove(name, out _);
                bool child = _children.ContainsKey(seen.Pid);
                Reap(seen.Pid); // a destroy's end too, at once: the VM's cgroup goes before the answer
                if (!child && _sandboxFirstUid is not null)
                {
                    // A sandboxed VMM an earlier vireod started (it was adopted at this one's start): its
                    // parent is now init, which reaps it; its group goes once that is done. Under the VM's
                    // lock, so no start of the same name makes the group again meanwhile.
                    for (int i = 0; i < 40 && VmCgroup.Exists(CgroupOf(name)); i++)
                    {
                        VmCgroup.Remove(CgroupOf(name));
                        if (VmCgroup.Exists(CgroupOf(name)))
                        {
                            Thread.Sleep(25);
                        }
                    }
                }
            }
            var vm = _store.Get(name);
            if (vm is null)
            {
                return;
            }
            var status = VmmStatus.Read(Path.Combine(VmDir(name), "status"), Path.Combine(VmDir(name), "vmm.log"));
            bool destroyed = _destroying.TryRemove(name, out var end);
            string? why = destroyed ? end.Why : null;
            var (evt, policy) = status.Kind switch
            {
                _ when destroyed => ("stopped", LifecyclePolicy.Destroy),
                VmmStatus.EndKind.Reboot => ("rebooted", vm.Definition.OnReboot),
                VmmStatus.EndKind.PowerOff => ("stopped", vm.Definition.OnPoweroff),
                _ => ("crashed", vm.Definition.OnCrash),
            };
            string state = destroyed ? end.State : policy == LifecyclePolicy.Preserve && evt == "crashed" ? DomainState.Crashed : DomainState.ShutOff;
            _store.SetStopped(name, state, why ?? status.Text);
            string rule = destroyed ? why! : $"{(evt == "rebooted" ? "on_reboot" : evt == "crashed" ? "on_crash" : "on_poweroff")}={policy}";
            _events.Publish(name, evt, state, $"{status.Text}; {rule}");
            if (policy == LifecyclePolicy.Restart)
            {
                ThreadPool.QueueUserWorkItem(_ =>
                {
                    if (Start(name) is { } error)
                    {
                        _events.Publish(name, "restart-failed", DomainState.ShutOff, error);
                    }
                });
            }
        }
    }

    private string VmDir(string name) => Path.Combine(_stateDir, "vms", name);

    private Lock LockFor(string name) => _vmLocks.GetOrAdd(name, _ => new Lock());

    public void Dispose()
    {
        _disposed = true;
        foreach (var a in _running.Values.Concat(_incoming.Values))
        {
            a.Api.Dispose();
        }
    }
}
