using Vireo.Api;

namespace Vireo.Daemon;

/// <summary>A restarted daemon against what it finds running, and the files each VM's VMM writes.</summary>
internal sealed partial class Supervisor
{
    /// <summary>
    /// Once at start-up, before anything starts: every VMM the store records is adopted if it is
    /// the same live process and fully started (the VMM itself says running or paused), else ended;
    /// a VM the store thought running whose VMM is gone is settled; and any other VMM process on
    /// one of this state directory's sockets (spawned by a daemon killed before it could record
    /// the pid) is killed. After this there is at most one VMM per VM, and each is one we know.
    /// </summary>
    private void Recover()
    {
        var adopted = new HashSet<int>();
        foreach (var vm in _store.All())
        {
            string sock = Path.Combine(VmDir(vm.Name), "api.sock");
            if (vm.Pid is int pid && vm.PidStartTime is long start && ProcessStat.IsAlive(pid, start))
            {
                var api = new VmmClient(sock);
                var info = api.Info(TimeSpan.FromSeconds(2));
                // Recorded as started: adopted, whatever a busy VMM answers. Recorded only as spawned: adopted if it got as far as running.
                string? state = vm.State is DomainState.Running or DomainState.Paused
                    ? (vm.State == DomainState.Paused ? VmState.Paused : VmState.Running)
                    : info?.State;
                if (vm.State == DomainState.Incoming && state is VmState.Receiving or null)
                {
                    // Still arriving (a busy receiver may not answer at once): it goes on, watched again (Supervisor.Migration.cs).
                    var waiting = new Attached(pid, start, VmDir(vm.Name), api);
                    _incoming[vm.Name] = waiting;
                    _committed[vm.Name] = vm.Run?.Definition.MemoryMib ?? vm.Definition.MemoryMib;
                    adopted.Add(pid);
                    _events.Publish(vm.Name, "reattached", DomainState.Incoming, $"pid {pid}, still arriving");
                    new Thread(() => WatchIncoming(vm.Name, waiting)) { IsBackground = true, Name = $"incoming {vm.Name}" }.Start();
                    continue;
                }
                if (state is VmState.Running or VmState.Paused)
                {
                    _running[vm.Name] = new Attached(pid, start, VmDir(vm.Name), api);
                    _committed[vm.Name] = info?.MemSizeMib ?? vm.Definition.MemoryMib; // what it runs with: the definition may have been edited since
                    adopted.Add(pid);
                    string now = state == VmState.Paused ? DomainState.Paused : DomainState.Running;
                    if (vm.State != now)
                    {
                        _store.SetRunning(vm.Name, pid, start); // started, but the daemon died before it could record so
                        _store.SetState(vm.Name, now);
                    }
                    _events.Publish(vm.Name, "reattached", now, $"pid {pid}");
                    continue;
                }
                api.Dispose();
                VmmLauncher.KillAndWait(pid); // spawned but never started: the daemon died while configuring it
                _events.Publish(vm.Name, "start-abandoned", vm.State, $"pid {pid} ({state ?? "not answering"}) ended: the daemon stopped while starting it");
            }
            if (vm.State == DomainState.Incoming)
            {
                // Arriving when the daemon stopped, and its VMM gone or no longer receiving (ended above): the source's VM runs on there.
                _store.Undefine(vm.Name);
                if (Directory.Exists(VmDir(vm.Name)))
                {
                    Directory.Delete(VmDir(vm.Name), recursive: true);
                }
                _events.Publish(vm.Name, "migration-abandoned", DomainState.ShutOff, "the daemon stopped while it was arriving");
                continue;
            }
            if (vm.State is DomainState.Running or DomainState.Paused)
            {
                Ended(vm.Name, seen: null); // it ended while the daemon was away
            }
            else if (vm.Pid is not null)
            {
                _store.ClearPid(vm.Name);
            }
        }
        foreach (var (pid, sock) in VmmLauncher.Running(Path.Combine(_stateDir, "vms")).Where(p => !adopted.Contains(p.Pid)))
        {
            VmmLauncher.KillAndWait(pid);
            _events.Publish(Path.GetFileName(Path.GetDirectoryName(sock)!), "stray-vmm-ended", DomainState.ShutOff, $"pid {pid}: a VMM no record named");
        }
    }

    /// <summary>
    /// The VM's directory, 0700, with its console and VMM logs 0600 (they hold guest output) made
    /// before the VMM's shell appends to them, and the last run's socket and status removed.
    /// </summary>
    private static void PrepareDir(string dir)
    {
        Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        File.SetUnixFileMode(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        foreach (var log in new[] { "console.log", "vmm.log" })
        {
            using var _ = VmDirEntries.OpenLog(Path.Combine(dir, log)); // made 0600, never through a link a sandboxed VMM left
        }
        foreach (var stale in new[] { "api.sock", "status" })
        {
            File.Delete(Path.Combine(dir, stale));
        }
    }
}
