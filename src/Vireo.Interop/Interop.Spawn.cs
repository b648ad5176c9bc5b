using System.Runtime.InteropServices;
using System.Text;

namespace Vireo.Interop;

/// <summary>
/// posix_spawn(3) (&lt;spawn.h&gt;): a child started by one libc call, its fds placed by file
/// actions and its session made by POSIX_SPAWN_SETSID, with no managed code between the clone and
/// the exec. It is what starts a process from a thread that has entered namespaces of its own
/// (the sandbox): .NET's Process.Start could create a runtime thread there, which would live on in them.
/// </summary>
public static unsafe partial class Spawn
{
    private const string Lib = "libc";

    public const short POSIX_SPAWN_SETSIGDEF = 0x04, POSIX_SPAWN_SETSIGMASK = 0x08, POSIX_SPAWN_SETSID = 0x80;
    public const int WNOHANG = 1;

    // glibc's opaque types, with room to spare (80 and 336 bytes on x86-64; the ABI test checks they fit).
    public const int FileActionsSize = 256, AttrSize = 512, SigsetSize = 128;

    [LibraryImport(Lib, EntryPoint = "posix_spawn_file_actions_init")]
    private static partial int FileActionsInit(void* actions);

    [LibraryImport(Lib, EntryPoint = "posix_spawn_file_actions_adddup2")]
    private static partial int FileActionsAddDup2(void* actions, int fd, int newFd);

    [LibraryImport(Lib, EntryPoint = "posix_spawn_file_actions_addclose")]
    private static partial int FileActionsAddClose(void* actions, int fd);

    [LibraryImport(Lib, EntryPoint = "posix_spawn_file_actions_destroy")]
    private static partial int FileActionsDestroy(void* actions);

    [LibraryImport(Lib, EntryPoint = "posix_spawnattr_init")]
    private static partial int AttrInit(void* attr);

    [LibraryImport(Lib, EntryPoint = "posix_spawnattr_setflags")]
    private static partial int AttrSetFlags(void* attr, short flags);

    [LibraryImport(Lib, EntryPoint = "posix_spawnattr_setsigmask")]
    private static partial int AttrSetSigmask(void* attr, void* set);

    [LibraryImport(Lib, EntryPoint = "posix_spawnattr_setsigdefault")]
    private static partial int AttrSetSigdefault(void* attr, void* set);

    [LibraryImport(Lib, EntryPoint = "posix_spawnattr_destroy")]
    private static partial int AttrDestroy(void* attr);

    [LibraryImport(Lib, EntryPoint = "sigemptyset")]
    private static partial int SigEmptySet(void* set);

    [LibraryImport(Lib, EntryPoint = "sigfillset")]
    private static partial int SigFillSet(void* set);

    [LibraryImport(Lib, EntryPoint = "posix_spawn")]
    private static partial int PosixSpawn(int* pid, byte* path, void* actions, void* attr, byte** argv, byte** envp);

    [LibraryImport(Lib, EntryPoint = "posix_spawn_file_actions_addclosefrom_np")]
    private static partial int FileActionsAddCloseFrom(void* actions, int from);

    [LibraryImport(Lib, EntryPoint = "waitpid", SetLastError = true)]
    public static partial int WaitPid(int pid, int* status, int options);

    /// <summary>Reaps <paramref name="pid"/> if it has ended (a child not started by .NET's Process, which nobody else reaps).</summary>
    public static bool TryReap(int pid)
    {
        int status;
        return WaitPid(pid, &status, WNOHANG) == pid;
    }

    [LibraryImport(Lib, EntryPoint = "kill", SetLastError = true)]
    public static partial int Kill(int pid, int signal);

    public const int SIGKILL = 9, SIGTERM = 15;

    /// <summary>Waits for child <paramref name="pid"/> to end and reaps it: its exit code, or 128 + the signal that killed it; -1 if it is no child.</summary>
    public static int Wait(int pid)
    {
        int status;
        int got;
        while ((got = WaitPid(pid, &status, 0)) < 0 && Libc.LastErrno == Libc.EINTR)
        {
        }
        return got != pid ? -1 : (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f);
    }

    /// <summary>Reaps <paramref name="pid"/> if it has ended: its exit code, or 128 + the signal that killed it.</summary>
    public static bool TryReapStatus(int pid, out int code)
    {
        int status;
        code = 0;
        if (WaitPid(pid, &status, WNOHANG) != pid)
        {
            return false;
        }
        code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f);
        return true;
    }

    /// <summary>
    /// Starts <paramref name="path"/> with <paramref name="argv"/> (argv[0] included) and
    /// <paramref name="envp"/>, in a session of its own, every signal at its default and unblocked;
    /// each (from, to) of <paramref name="moves"/> is dup2'd in the child, in order, then each
    /// from that is not also a target is closed there. Returns the pid, or throws <see cref="SysError"/>.
    /// </summary>
    public static int Start(string path, IReadOnlyList<string> argv, IReadOnlyList<string> envp, IReadOnlyList<(int From, int To)> moves)
    {
        byte* actions = stackalloc byte[FileActionsSize];
        byte* attr = stackalloc byte[AttrSize];
        byte* set = stackalloc byte[SigsetSize];
        var strings = new List<nint>();
        try
        {
            FileActionsInit(actions);
            AttrInit(attr);
            foreach (var (from, to) in moves)
            {
                FileActionsAddDup2(actions, from, to);
            }
            foreach (var (from, _) in moves)
            {
                if (!moves.Any(m => m.To == from))
                {
                    FileActionsAddClose(actions, from);
                }
            }
            // Nothing else of the caller's goes along: a descriptor it inherited without FD_CLOEXEC (from a
            // shell, from systemd) would otherwise reach the child, a sandboxed VMM among them (glibc 2.34 on).
            if (FileActionsAddCloseFrom(actions, Math.Max(3, moves.Select(m => m.To).DefaultIfEmpty(2).Max() + 1)) is int rc and not 0)
            {
                throw new SysError("posix_spawn_file_actions_addclosefrom_np", rc);
            }
            AttrSetFlags(attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
            SigEmptySet(set);
            AttrSetSigmask(attr, set);
            SigFillSet(set);
            AttrSetSigdefault(attr, set);
            byte** args = stackalloc byte*[argv.Count + 1];
            byte** env = stackalloc byte*[envp.Count + 1];
            for (int i = 0; i < argv.Count; i++)
            {
                args[i] = (byte*)Native(argv[i], strings);
            }
            args[argv.Count] = null;
            for (int i = 0; i < envp.Count; i++)
            {
                env[i] = (byte*)Native(envp[i], strings);
            }
            env[envp.Count] = null;
            int pid;
            int error = PosixSpawn(&pid, (byte*)Native(path, strings), actions, attr, args, env);
            if (error != 0)
            {
                throw new SysError($"posix_spawn({path})", error);
            }
            return pid;
        }
        finally
        {
            FileActionsDestroy(actions);
            AttrDestroy(attr);
            strings.ForEach(Marshal.FreeHGlobal);
        }
    }

    private static nint Native(string s, List<nint> owned)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(s + "\0");
        nint p = Marshal.AllocHGlobal(bytes.Length);
        Marshal.Copy(bytes, 0, p, bytes.Length);
        owned.Add(p);
        return p;
    }
}
