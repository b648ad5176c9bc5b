using System.Diagnostics;
using System.Text.Json;
using Vireo.Api;
using Vireo.Interop;
using Vireo.Sandbox;

namespace Vireo.Daemon;

/// <summary>
/// The mechanics of one vireo-vmm process: spawning it in its own session with the VM's image
/// files inherited, configuring it over its API socket, and ending it.
/// </summary>
internal static class VmmLauncher
{
    // Spawns are serialized: an image fd is inheritable (FD_CLOEXEC cleared) only inside this lock,
    // so the child started here gets it and no other child started concurrently does.
    private static readonly Lock Spawning = new();

    /// <summary>
    /// Starts vireo-vmm through setsid, its console and log appended to files in <paramref name="dir"/>;
    /// the child inherits <paramref name="images"/>, which are closed here once it has exec'd. Returns its pid.
    /// With <paramref name="pinned"/> (a restore), each image is handed over on the fd number it had in the
    /// VMM that was saved, which its snapshot names (`/proc/self/fd/N`): the shell between the two
    /// (bash: dash takes one-digit fd numbers only) moves it there, in the child, so nothing of
    /// vireod's own is touched.
    /// </summary>
    /// <param name="handOver">more files for a sandboxed VMM, each on the number given (above every image's); the caller closes them</param>
    public static int Spawn(string vmmPath, string dir, IReadOnlyList<ImagePolicy.Opened> images, IReadOnlyDictionary<string, int>? pinned = null, JailSpec? jail = null,
        IReadOnlyList<(FileDescriptor Fd, int Number)>? handOver = null)
    {
        if (jail is not null)
        {
            return SpawnJailed(jail, dir, images, pinned, handOver ?? []);
        }
        if (handOver is { Count: > 0 })
        {
            CloseAll([], images);
            throw new InvalidOperationException("files are handed over open to sandboxed VMMs only; an unsandboxed one opens their paths");
        }
        string script = "exec setsid \"$0\" --api-sock \"$1\" --status-file \"$2\" >> \"$3\" 2>> \"$4\" < /dev/null";
        var owned = new List<FileDescriptor>();
        try
        {
            if (pinned is not null)
            {
                // Every source above every target, so that moving one never overwrites another still to be moved.
                int above = pinned.Values.DefaultIfEmpty(2).Max() + 1;
                foreach (var image in images)
                {
                    if (!pinned.TryGetValue(image.Field, out int target) || target < 3)
                    {
                        throw new InvalidOperationException($"{image.Field}: no fd number recorded for it");
                    }
                    int moved = Libc.DupAtOrAbove(image.Fd.Fd, above);
                    if (moved < 0)
                    {
                        throw new SysError("fcntl(F_DUPFD_CLOEXEC)", Libc.LastErrno);
                    }
                    owned.Add(new FileDescriptor(moved));
                    script += $" {target}<&{moved} {moved}<&-";
                }
            }
            var psi = new ProcessStartInfo(pinned is null ? "/bin/sh" : "/bin/bash")
            {
                UseShellExecute = false,
                ArgumentList =
                {
                    "-c", script,
                    vmmPath, Path.Combine(dir, "api.sock"), Path.Combine(dir, "status"), Path.Combine(dir, "console.log"), Path.Combine(dir, "vmm.log"),
                },
            };
            var inherited = pinned is null ? images.Select(i => i.Fd).ToList() : owned;
            lock (Spawning)
            {
                try
                {
                    foreach (var fd in inherited)
                    {
                        if (Libc.ClearCloseOnExec(fd.Fd) != 0)
                        {
                            throw new SysError("fcntl(F_SETFD)", Libc.LastErrno);
                        }
                    }
                    // Process.Start returns once the child has exec'd (it waits on a CLOEXEC pipe), so the fds are the child's now.
                    using var process = Process.Start(psi)!;
                    return process.Id;
                }
                finally
                {
                    CloseAll(owned, images); // inside the lock: no other child is started while they are inheritable
                }
            }
        }
        finally
        {
            CloseAll(owned, images); // a refusal before the lock (closing twice is harmless: a SafeHandle closes once)
        }
    }

    /// <summary>
    /// <see cref="Spawn"/> in a sandbox (<see cref="Jail.Start"/>): the VMM is vireod's child, in a
    /// session of its own, with its logs, /dev/null and each image placed by posix_spawn's file
    /// actions (on its own fd number, or the recorded one of a restore). The caller reaps it.
    /// </summary>
    private static int SpawnJailed(JailSpec jail, string dir, IReadOnlyList<ImagePolicy.Opened> images, IReadOnlyDictionary<string, int>? pinned,
        IReadOnlyList<(FileDescriptor Fd, int Number)> handOver)
    {
        var owned = new List<FileDescriptor>();
        try
        {
            FileDescriptor Owned(FileDescriptor fd)
            {
                owned.Add(fd);
                return fd;
            }
            var devNull = Owned(new FileDescriptor(Check.Io(Libc.Open("/dev/null", Libc.O_RDONLY | Libc.O_CLOEXEC, 0), "open(/dev/null)")));
            var moves = new List<(int From, int To)>
            {
                (devNull.Fd, 0),
                (Owned(VmDirEntries.OpenLog(Path.Combine(dir, "console.log"))).Fd, 1),
                (Owned(VmDirEntries.OpenLog(Path.Combine(dir, "vmm.log"))).Fd, 2),
            };
            // Every source above every target, so that placing one never overwrites another still to be placed.
            int above = new[] { pinned?.Values.DefaultIfEmpty(2).Max() ?? 2, images.Select(i => i.Fd.Fd).DefaultIfEmpty(2).Max(), handOver.Select(h => h.Number).DefaultIfEmpty(2).Max() }.Max() + 1;
            foreach (var image in images)
            {
                int target = pinned is null ? image.Fd.Fd : pinned.TryGetValue(image.Field, out int t) && t >= 3 ? t
                    : throw new InvalidOperationException($"{image.Field}: no fd number recorded for it");
                int moved = Libc.DupAtOrAbove(image.Fd.Fd, above);
                if (moved < 0)
                {
                    throw new SysError("fcntl(F_DUPFD_CLOEXEC)", Libc.LastErrno);
                }
                owned.Add(new FileDescriptor(moved));
                moves.Add((moved, target));
            }
            foreach (var (fd, number) in handOver)
            {
                int moved = Libc.DupAtOrAbove(fd.Fd, above);
                if (moved < 0)
                {
                    throw new SysError("fcntl(F_DUPFD_CLOEXEC)", Libc.LastErrno);
                }
                owned.Add(new FileDescriptor(moved));
                moves.Add((moved, number));
            }
            string[] args = ["--api-sock", Path.Combine(dir, "api.sock"), "--status-file", Path.Combine(dir, "status")];
            return Jail.Start(jail, args, moves);
        }
        finally
        {
            CloseAll(owned, images);
        }
    }

    private static void CloseAll(List<FileDescriptor> owned, IReadOnlyList<ImagePolicy.Opened> images)
    {
        owned.ForEach(fd => fd.Dispose());
        foreach (var image in images)
        {
            image.Dispose();
        }
    }

    /// <summary>The path by which the VMM opens an inherited fd: its own descriptor table, so it stays valid across the VMM's reboots and a daemon restart.</summary>
    public static string InheritedPath(ImagePolicy.Opened image) => $"/proc/self/fd/{image.Fd.Fd}";

    /// <summary>Boot source, machine, drives and NICs, then InstanceStart; null when the VM runs, else the VMM's refusal.</summary>
    public static string? Configure(VmmClient api, VmDefinition d, IReadOnlyDictionary<string, string> paths)
    {
        var steps = new List<(string Path, string Body)>
        {
            ("boot-source", JsonSerializer.Serialize(new BootSource(paths["kernel"], d.Initrd is null ? null : paths["initrd"], d.Cmdline), VmmJson.Default.BootSource)),
            ("machine-config", JsonSerializer.Serialize(
                new MachineConfig(d.Vcpus, d.MemoryMib, d.Acpi, RestartOnReboot: d.OnReboot == LifecyclePolicy.Restart), VmmJson.Default.MachineConfig)),
        };
        var disks = d.Disks ?? [];
        for (int i = 0; i < disks.Length; i++)
        {
            steps.Add(($"drives/disk{i}", JsonSerializer.Serialize(new Drive($"disk{i}", paths[$"disks[{i}].path"], disks[i].ReadOnly), VmmJson.Default.Drive)));
        }
        var nets = d.Nets ?? [];
        for (int i = 0; i < nets.Length; i++)
        {
            string tap = paths.GetValueOrDefault(Supervisor.TapField(i), nets[i].Tap); // handed over open to a sandboxed VMM
            steps.Add(($"network-interfaces/net{i}", JsonSerializer.Serialize(new NetworkInterface($"net{i}", tap, nets[i].Mac), VmmJson.Default.NetworkInterface)));
        }
        steps.Add(("actions", Action(InstanceAction.InstanceStart)));
        foreach (var (path, body) in steps)
        {
            if (api.Put(path, body) is { } error)
            {
                return error;
            }
        }
        return null;
    }

    /// <summary>PUT /snapshot/load into a fresh VMM: the save's state file and its RAM beside it, running at once.</summary>
    public static string? Load(VmmClient api, string statePath, string memPath) =>
        api.PutLong("snapshot/load", JsonSerializer.Serialize(
            new SnapshotLoadParams(statePath, new MemoryBackend(MemoryBackend.File, memPath), ResumeVm: true), VmmJson.Default.SnapshotLoadParams));

    public static string Action(string type) => JsonSerializer.Serialize(new InstanceAction(type), VmmJson.Default.InstanceAction);

    /// <summary>
    /// Every live process whose command line has `--api-sock` under <paramref name="vmsDir"/>, with that
    /// socket: what the store says runs is checked against what does, so no VMM is ever left unseen.
    /// </summary>
    public static List<(int Pid, string Socket)> Running(string vmsDir)
    {
        var found = new List<(int, string)>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid) || pid == Environment.ProcessId)
            {
                continue;
            }
            try
            {
                string[] args = File.ReadAllText(Path.Combine(dir, "cmdline")).Split('\0');
                int at = Array.IndexOf(args, "--api-sock");
                if (at >= 0 && at + 1 < args.Length && args[at + 1].StartsWith(vmsDir + "/", StringComparison.Ordinal)
                    && ProcessStat.StartTime(pid) is long start && ProcessStat.IsAlive(pid, start))
                {
                    found.Add((pid, args[at + 1]));
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // it ended while we looked
            }
        }
        return found;
    }

    /// <summary>SIGKILL, then wait (briefly) until it is gone, so that what follows never sees two.</summary>
    public static void KillAndWait(int pid)
    {
        long? start = ProcessStat.StartTime(pid);
        Kill(pid);
        var deadline = DateTime.UtcNow.AddSeconds(5);
        while (start is long t && ProcessStat.IsAlive(pid, t) && DateTime.UtcNow < deadline)
        {
            Thread.Sleep(10);
        }
    }

    public static void Kill(int pid)
    {
        try
        {
            Process.GetProcessById(pid).Kill();
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            // already gone
        }
    }

    public static string Tail(string file) => File.Exists(file) ? File.ReadAllText(file).Trim() : "(no log)";
}
