using Vireo.Interop;
using static Vireo.Interop.Namespaces;

namespace Vireo.Sandbox;

/// <summary>
/// Starts a VMM in a sandbox, in the manner of Firecracker's jailer. A throwaway thread of the
/// launcher enters new mount, PID, IPC, UTS and network namespaces (unshare), builds the jail's
/// root there (a tmpfs holding only /vireo-vmm, its libraries, /dev/kvm, /dev/urandom, /dev/null,
/// /proc and the VM's own directory), pivots into it, and posix_spawns
/// the VMM, which is PID 1 of its namespace. The VMM then spends what privilege it was started
/// with (<see cref="JailOption.Enter"/>): it mounts its /proc, sets its rlimits and drops to the
/// VM's uid and gid with no capabilities and no_new_privs, before it reads a byte of its API.
/// Nothing of the jail exists outside its namespace: when the VMM ends, the kernel takes it down.
/// </summary>
public static class Jail
{
    // Device numbers fixed by Linux's devices.txt (misc 232 is KVM's). No /dev/net/tun: a TAP is handed over open.
    private static readonly (string Path, uint Major, uint Minor, uint Mode, bool Owned)[] Devices =
    [
        ("/dev/kvm", 10, 232, 0x180 /* 0600 */, true),
        ("/dev/null", 1, 3, 0x1b6 /* 0666 */, false),
        ("/dev/urandom", 1, 9, 0x124 /* 0444 */, false),
    ];

    /// <summary>
    /// Starts <see cref="JailSpec.VmmInJail"/> with <paramref name="vmmArgs"/> after its `--jail`
    /// option, each (from, to) of <paramref name="moves"/> placed in it (stdin, stdout, stderr and
    /// any inherited file); returns its pid on the host. Throws <see cref="SandboxException"/>
    /// naming the step that failed; nothing is left behind then.
    /// </summary>
    /// <param name="environment">NAME=VALUE strings the VMM starts with (none by default: the launcher's environment stays out)</param>
    public static int Start(JailSpec spec, IReadOnlyList<string> vmmArgs, IReadOnlyList<(int From, int To)> moves, IReadOnlyList<string>? environment = null)
    {
        if (spec.Problem() is { } problem)
        {
            throw new SandboxException(problem);
        }
        GiveTo(spec.VmDir, spec.Uid, spec.Gid);
        var libraries = ElfLibraries.Cached(spec.VmmPath);
        var argv = new List<string> { JailSpec.VmmInJail, "--jail", JailOption.Format(spec) };
        argv.AddRange(vmmArgs);
        int pid = 0;
        Exception? failure = null;
        // The thread's namespaces and root are its own from unshare on; it starts nothing but the
        // VMM and then ends, so no runtime thread is ever made from it.
        var thread = new Thread(() =>
        {
            try
            {
                BuildRoot(spec, libraries);
                pid = Spawn.Start(JailSpec.VmmInJail, argv, environment ?? [], moves);
            }
            catch (Exception e)
            {
                failure = e;
            }
        }, maxStackSize: 256 * 1024) { Name = "vireo jail", IsBackground = true };
        thread.Start();
        thread.Join();
        return failure switch
        {
            null => pid,
            SandboxException => throw failure,
            SysError e => throw new SandboxException($"the sandbox could not be made: {e.Message}", e),
            _ => throw new SandboxException($"the sandbox could not be made: {failure.Message}", failure),
        };
    }

    private static void BuildRoot(JailSpec spec, ElfLibraries.Files libraries)
    {
        Check.Io(Unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET), "unshare");
        // Nothing mounted from here on propagates back to the host.
        Check.Io(Mount(null, "/", null, MS_REC | MS_PRIVATE, null), "mount(/, MS_REC|MS_PRIVATE)");
        string root = spec.RootMount;
        Check.Io(Mount("vireo-jail", root, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=256k,nr_inodes=256"), $"mount(tmpfs on {root})");
        foreach (var dir in new[] { "/dev", "/proc" })
        {
            Directory.CreateDirectory(root + dir);
        }
        foreach (var device in Devices)
        {
            MakeDevice(root, device.Path, device.Major, device.Minor, device.Mode, device.Owned ? spec : null);
        }
        foreach (var file in libraries.All)
        {
            BindReadOnly(file, root + file, exec: true);
        }
        BindReadOnly(spec.VmmPath, root + JailSpec.VmmInJail, exec: true);
        Directory.CreateDirectory(root + spec.VmDir);
        Bind(spec.VmDir, root + spec.VmDir, MS_NOSUID | MS_NODEV | MS_NOEXEC, readOnly: false);
        // pivot_root(".", "."): the old root is stacked under the new one, then detached.
        Check.Io(Chdir(root), $"chdir({root})");
        Check.Io(PivotRoot(".", "."), "pivot_root");
        Check.Io(Umount2(".", MNT_DETACH), "umount2(old root)");
        Check.Io(Chdir("/"), "chdir(/)");
        Check.Io(Mount(null, "/", null, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC, null), "mount(/, read-only)");
        Check.Io(SetHostname(spec.Name.Length <= 64 ? spec.Name : spec.Name[..64]), "sethostname");
    }

    private static void MakeDevice(string root, string path, uint major, uint minor, uint mode, JailSpec? owner)
    {
        string target = root + path;
        Directory.CreateDirectory(Path.GetDirectoryName(target)!);
        ulong dev = ((ulong)major << 8) | minor; // the old encoding, which the kernel still takes for numbers this small
        Check.Io(Mknod(target, S_IFCHR | mode, dev), $"mknod({path})");
        Check.Io(Chmod(target, mode), $"chmod({path})"); // mknod's mode was cut by the umask
        if (owner is not null)
        {
            Check.Io(Chown(target, owner.Uid, owner.Gid), $"chown({path})");
        }
    }

    private static void BindReadOnly(string source, string target, bool exec) =>
        Bind(source, target, MS_NOSUID | MS_NODEV | (exec ? 0 : MS_NOEXEC), readOnly: true);

    private static void Bind(string source, string target, ulong flags, bool readOnly)
    {
        if (!Directory.Exists(source))
        {
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.WriteAllBytes(target, []); // a file to mount a file on
        }
        Check.Io(Mount(source, target, null, MS_BIND, null), $"mount(--bind {source})");
        // A bind mount takes its flags only from a remount.
        Check.Io(Mount(null, target, null, MS_BIND | MS_REMOUNT | flags | (readOnly ? MS_RDONLY : 0), null), $"mount(-o remount,bind {target})");
    }

    /// <summary>The VM's directory and everything in it belong to the VM's uid (0700): no other VM's uid can read it.</summary>
    private static void GiveTo(string dir, uint uid, uint gid)
    {
        Check.Io(Chown(dir, uid, gid), $"chown({dir})");
        Check.Io(Chmod(dir, 0x1c0 /* 0700 */), $"chmod({dir})");
        // Never through a link the VM's last VMM could have left: lchown, and no descent into a link to a directory.
        var pending = new Stack<string>([dir]);
        while (pending.TryPop(out var at))
        {
            foreach (var entry in Directory.EnumerateFileSystemEntries(at))
            {
                Check.Io(LChown(entry, uid, gid), $"lchown({entry})");
                if (Libc.KindAt(entry) == FileKind.Directory)
                {
                    pending.Push(entry);
                }
            }
        }
    }
}

/// <summary>A sandbox that could not be made, in words naming the step.</summary>
public sealed class SandboxException(string message, Exception? inner = null) : Exception(message, inner);
