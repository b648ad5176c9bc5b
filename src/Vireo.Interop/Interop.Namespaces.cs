using System.Runtime.InteropServices;

namespace Vireo.Interop;

/// <summary>
/// What a sandbox is made of (&lt;sched.h&gt;, &lt;sys/mount.h&gt;, &lt;sys/prctl.h&gt;,
/// &lt;sys/resource.h&gt;, &lt;linux/capability.h&gt;): namespaces, mounts and pivot_root, device
/// nodes, credentials, capabilities and resource limits. Every call returns 0 or -1 with errno, as
/// libc does; <see cref="Check.Io(int, string)"/> turns that into a <see cref="SysError"/>.
/// </summary>
public static unsafe partial class Namespaces
{
    private const string Lib = "libc";

    public const int CLONE_NEWNS = 0x00020000, CLONE_NEWUTS = 0x04000000, CLONE_NEWIPC = 0x08000000,
        CLONE_NEWPID = 0x20000000, CLONE_NEWNET = 0x40000000, CLONE_NEWCGROUP = 0x02000000;

    public const ulong MS_RDONLY = 1, MS_NOSUID = 2, MS_NODEV = 4, MS_NOEXEC = 8, MS_REMOUNT = 32,
        MS_BIND = 4096, MS_REC = 16384, MS_PRIVATE = 1 << 18;
    public const int MNT_DETACH = 2;

    public const int PR_SET_DUMPABLE = 4, PR_CAPBSET_READ = 23, PR_CAPBSET_DROP = 24, PR_SET_NO_NEW_PRIVS = 38,
        PR_GET_NO_NEW_PRIVS = 39, PR_CAP_AMBIENT = 47, PR_CAP_AMBIENT_CLEAR_ALL = 4;

    public const int RLIMIT_NPROC = 6, RLIMIT_NOFILE = 7, RLIMIT_CORE = 4;

    public const uint S_IFCHR = 0x2000;
    public const long SYS_pivot_root = 155; // x86-64

    public const uint _LINUX_CAPABILITY_VERSION_3 = 0x20080522;

#pragma warning disable CS8981 // C's name, so that the ABI test and a reader can find it
    [StructLayout(LayoutKind.Sequential)]
    public struct rlimit
    {
        public ulong rlim_cur;
        public ulong rlim_max;
    }
#pragma warning restore CS8981

    [StructLayout(LayoutKind.Sequential)]
    public struct __user_cap_header_struct
    {
        public uint version;
        public int pid;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct __user_cap_data_struct
    {
        public uint effective;
        public uint permitted;
        public uint inheritable;
    }

    [LibraryImport(Lib, EntryPoint = "unshare", SetLastError = true)]
    public static partial int Unshare(int flags);

    [LibraryImport(Lib, EntryPoint = "mount", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int Mount(string? source, string target, string? type, ulong flags, string? data);

    [LibraryImport(Lib, EntryPoint = "umount2", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int Umount2(string target, int flags);

    [LibraryImport(Lib, EntryPoint = "syscall", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial long Syscall(long number, string newRoot, string putOld);

    /// <summary>pivot_root(2), which glibc does not wrap.</summary>
    public static int PivotRoot(string newRoot, string putOld) => (int)Syscall(SYS_pivot_root, newRoot, putOld);

    [LibraryImport(Lib, EntryPoint = "chdir", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int Chdir(string path);

    [LibraryImport(Lib, EntryPoint = "mknod", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int Mknod(string path, uint mode, ulong dev);

    [LibraryImport(Lib, EntryPoint = "chown", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int Chown(string path, uint uid, uint gid);

    [LibraryImport(Lib, EntryPoint = "lchown", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int LChown(string path, uint uid, uint gid);

    [LibraryImport(Lib, EntryPoint = "chmod", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int Chmod(string path, uint mode);

    [LibraryImport(Lib, EntryPoint = "fchmod", SetLastError = true)]
    public static partial int Fchmod(int fd, uint mode);

    [LibraryImport(Lib, EntryPoint = "fchown", SetLastError = true)]
    public static partial int Fchown(int fd, uint uid, uint gid);

    [LibraryImport(Lib, EntryPoint = "renameat2", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int RenameAt2(int oldDir, string oldPath, int newDir, string newPath, uint flags);

    public const int AT_FDCWD = -100, EXDEV = 18, EEXIST = 17;
    public const uint RENAME_NOREPLACE = 1;

    /// <summary>rename(2) that never replaces what is at <paramref name="to"/> (EEXIST); 0, or -1 with errno.</summary>
    public static int RenameNoReplace(string from, string to) => RenameAt2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE);

    /// <summary><see cref="RenameNoReplace(string, string)"/> of an entry of an open directory (or AT_FDCWD) to another's.</summary>
    public static int RenameNoReplace(int fromDir, string from, int toDir, string to) => RenameAt2(fromDir, from, toDir, to, RENAME_NOREPLACE);

    [LibraryImport(Lib, EntryPoint = "sethostname", SetLastError = true)]
    private static partial int SetHostname(byte* name, nuint length);

    public static int SetHostname(string name)
    {
        byte[] bytes = System.Text.Encoding.UTF8.GetBytes(name);
        fixed (byte* p = bytes)
        {
            return SetHostname(p, (nuint)bytes.Length);
        }
    }

    [LibraryImport(Lib, EntryPoint = "setsid", SetLastError = true)]
    public static partial int SetSid();

    [LibraryImport(Lib, EntryPoint = "dup2", SetLastError = true)]
    public static partial int Dup2(int oldFd, int newFd);

    // glibc's setres[ug]id and setgroups change every thread of the process (it signals each one),
    // as POSIX asks; the raw syscalls would change only the calling thread.
    [LibraryImport(Lib, EntryPoint = "setresuid", SetLastError = true)]
    public static partial int SetResUid(uint ruid, uint euid, uint suid);

    [LibraryImport(Lib, EntryPoint = "setresgid", SetLastError = true)]
    public static partial int SetResGid(uint rgid, uint egid, uint sgid);

    [LibraryImport(Lib, EntryPoint = "setgroups", SetLastError = true)]
    public static partial int SetGroups(nuint size, uint* list);

    /// <summary>setgroups(0, NULL): no supplementary groups.</summary>
    public static int ClearGroups() => SetGroups(0, null);

    [LibraryImport(Lib, EntryPoint = "prctl", SetLastError = true)]
    public static partial int Prctl(int option, ulong arg2, ulong arg3, ulong arg4, ulong arg5);

    [LibraryImport(Lib, EntryPoint = "capset", SetLastError = true)]
    public static partial int Capset(__user_cap_header_struct* header, __user_cap_data_struct* data);

    [LibraryImport(Lib, EntryPoint = "setrlimit", SetLastError = true)]
    public static partial int SetRlimit(int resource, rlimit* limit);

    public static int SetRlimit(int resource, ulong value)
    {
        var limit = new rlimit { rlim_cur = value, rlim_max = value };
        return SetRlimit(resource, &limit);
    }

    /// <summary>Clears the calling thread's effective, permitted and inheritable sets (capset with v3's two words).</summary>
    public static int ClearCapabilities()
    {
        var header = new __user_cap_header_struct { version = _LINUX_CAPABILITY_VERSION_3 };
        var data = stackalloc __user_cap_data_struct[2];
        data[0] = default;
        data[1] = default;
        return Capset(&header, data);
    }
}
