using System.Globalization;
using Vireo.Interop;
using Vireo.Sandbox;
using Vireo.Vmm;

namespace Vireo.Cli;

/// <summary>
/// `vireo run --sandbox`: the same run, in the jail vireod gives its VMMs (Vireo.Sandbox). `vireo`
/// opens the VM's files here (kernel, initrd, disks, TAPs), then starts itself again in the jail
/// (`vireo --jail uid=..,gid=.. run --kernel /proc/self/fd/N ...`), with those files and the
/// terminal handed over open; the copy in the jail spends its privilege first thing and runs the VM
/// as `vireo run` always does. This side puts it in a cgroup of its own, passes SIGINT and SIGTERM
/// on, waits, gives the terminal back as it was, and exits with the VM's status.
/// </summary>
internal static class SandboxedRun
{
    /// <summary>
    /// The uids `vireo run --sandbox` takes one of, each run the first that no process holds: the
    /// 65536 after vireod's default range, so that a run never shares a uid with a VM of vireod's.
    /// </summary>
    public const uint FirstUid = 3_065_536;

    /// <summary>
    /// Runs <paramref name="config"/> jailed: the exit status the VM gives, as an unsandboxed run's.
    /// <paramref name="passOn"/> are the options that name no file (memory, vCPUs, console and the rest), given as they are.
    /// </summary>
    public static int Run(VmConfig config, IReadOnlyList<string> passOn)
    {
        if (!Environment.IsPrivilegedProcess)
        {
            return Fail("--sandbox: the jail is made by root (namespaces, its own uid, a cgroup): run vireo as root, or without --sandbox");
        }
        if (config.Vsock is not null || config.Nets.Any(n => n.Tap is null))
        {
            return Fail("--sandbox: --vsock and --net unix= name sockets on the host's paths, which the jail does not reach; use --net tap=NAME");
        }
        var files = new List<FileDescriptor>();
        string dir = Path.Combine("/run/vireo/run", Environment.ProcessId.ToString(CultureInfo.InvariantCulture));
        VmCgroup? cgroup = null;
        string cgroupName = $"run/{Environment.ProcessId}";
        var saved = Termios.Save(0);
        try
        {
            // Every file the VM uses, opened here as this user may; the jail holds none of their paths.
            int Hand(FileDescriptor fd)
            {
                files.Add(fd);
                return files.Count + 2; // its number in the jail: 3, 4, ...
            }
            string Jailed(FileDescriptor fd) => $"/proc/self/fd/{Hand(fd)}";
            var args = new List<string> { "run", "--kernel", Jailed(Open(config.KernelPath, "kernel", Libc.O_RDONLY)) };
            if (config.InitrdPath is { } initrd)
            {
                args.AddRange(["--initrd", Jailed(Open(initrd, "initrd", Libc.O_RDONLY))]);
            }
            args.AddRange(["--cmdline", config.Cmdline, "--memory", $"{config.MemoryBytes >> 10}K"]);
            foreach (var disk in config.Disks)
            {
                string diskSpec = Jailed(Open(disk.Path, "disk", disk.ReadOnly ? Libc.O_RDONLY : Libc.O_RDWR))
                    + (disk.ReadOnly ? ",ro" : "") + (disk.Direct ? ",direct" : "") + (disk.Queues != 1 ? $",queues={disk.Queues}" : "") + $",id={disk.Id ?? DefaultId(disk.Path)}";
                args.AddRange(["--disk", diskSpec]);
            }
            foreach (var net in config.Nets)
            {
                FileDescriptor tap;
                try
                {
                    tap = Tun.OpenTap(net.Tap!, TapHeaderSize);
                }
                catch (Exception e) when (e is SysError or IOException or ArgumentException)
                {
                    return Fail($"--net tap={net.Tap}: {e.Message}");
                }
                args.AddRange(["--net", $"tap={Jailed(tap)},mac={string.Join(':', net.Mac.Select(b => b.ToString("x2", CultureInfo.InvariantCulture)))}"]);
            }
            args.AddRange(passOn);

            Directory.CreateDirectory(System.IO.Path.GetDirectoryName(dir)!);
            Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            string root = Directory.CreateDirectory(System.IO.Path.Combine(dir, "root"), UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute).FullName;
            uint uid = FreeUid();
            var spec = new JailSpec($"vireo-run-{Environment.ProcessId}", uid, uid, Environment.ProcessPath!, root, dir,
                MaxProcesses: (ulong)(64 + (2 * config.Vcpus)));
            cgroup = VmCgroup.Create(cgroupName, spec.MaxProcesses);
            // The terminal and the files, each on its number (moved up first, so that no move overwrites another).
            var moves = new List<(int From, int To)>();
            var dups = new List<FileDescriptor>();
            foreach (var (from, to) in new[] { 0, 1, 2 }.Select(n => (n, n)).Concat(files.Select((f, i) => (f.Fd, i + 3))))
            {
                var dup = new FileDescriptor(Libc.DupAtOrAbove(from, 100));
                dups.Add(dup);
                moves.Add((dup.Fd, to));
            }
            int pid;
            try
            {
                // VIREO_VERBOSE goes in with it, and nothing else of this environment.
                string? verbose = Environment.GetEnvironmentVariable("VIREO_VERBOSE");
                pid = Jail.Start(spec, args, moves, verbose is null ? [] : [$"VIREO_VERBOSE={verbose}"]);
            }
            finally
            {
                dups.ForEach(d => d.Dispose());
            }
            try
            {
                cgroup.Join(pid);
            }
            catch (SandboxException)
            {
                Spawn.Kill(pid, Spawn.SIGKILL);
                Spawn.Wait(pid);
                throw;
            }
            using var sigint = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGINT, c => { c.Cancel = true; Spawn.Kill(pid, Spawn.SIGTERM); });
            using var sigterm = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, c => { c.Cancel = true; Spawn.Kill(pid, Spawn.SIGTERM); });
            files.ForEach(f => f.Dispose()); // the jail's now
            return Spawn.Wait(pid);
        }
        catch (SandboxException e)
        {
            return Fail($"--sandbox: {e.Message}");
        }
        finally
        {
            files.ForEach(f => f.Dispose());
            if (saved is { } state)
            {
                Termios.Restore(0, state); // as it was, however the jailed run ended
            }
            if (cgroup is not null)
            {
                VmCgroup.Remove(cgroupName);
            }
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
    }

    /// <summary>The serial a disk without id= shows its guest: its file's name (virtio-blk's 20 bytes), not the fd path the jail names it by.</summary>
    private static string DefaultId(string path)
    {
        string name = System.IO.Path.GetFileName(path);
        return name.Length > 20 ? name[..20] : name;
    }

    private const int TapHeaderSize = 12; // virtio_net_hdr_v1's; the VMM sets its own when it takes the TAP

    /// <summary>Opens a file the VM uses, for the jail; a missing or unreadable one is the option's error.</summary>
    private static FileDescriptor Open(string path, string field, int flags)
    {
        int fd = Libc.Open(path, flags | Libc.O_CLOEXEC | Libc.O_NONBLOCK | Libc.O_NOCTTY, 0);
        if (fd < 0)
        {
            int errno = Libc.LastErrno;
            throw new VmConfigException(errno == Libc.ENOENT ? $"{field}: no such file: {path}" : $"{field}: cannot open {path}: {Libc.StrError(errno)}");
        }
        Libc.ClearNonBlocking(fd);
        return new FileDescriptor(fd);
    }

    /// <summary>The first uid of the range from this process's place in it that no process holds (the owner of /proc/PID is its uid).</summary>
    private static uint FreeUid()
    {
        var held = new HashSet<uint>();
        foreach (var proc in Directory.EnumerateDirectories("/proc"))
        {
            if (int.TryParse(System.IO.Path.GetFileName(proc), out _) && Libc.OwnerAt(proc) is uint owner)
            {
                held.Add(owner);
            }
        }
        for (uint i = 0; i < 65536; i++)
        {
            uint uid = FirstUid + (((uint)Environment.ProcessId + i) % 65536);
            if (!held.Contains(uid))
            {
                return uid;
            }
        }
        throw new SandboxException($"every uid from {FirstUid} to {FirstUid + 65535} runs a process");
    }

    private static int Fail(string message)
    {
        Console.Error.WriteLine($"vireo: {message}");
        return RunCommand.ExitBadConfig;
    }
}
