using System.Runtime.InteropServices;

namespace Vireo.Interop;

/// <summary>The libc calls Vireo needs, declared as the C headers declare them.</summary>
public static unsafe partial class Libc
{
    private const string Lib = "libc";

    public const int O_RDONLY = 0, O_WRONLY = 1, O_RDWR = 2, O_CREAT = 0x40, O_EXCL = 0x80, O_TRUNC = 0x200, O_APPEND = 0x400, O_CLOEXEC = 0x80000, O_NONBLOCK = 0x800;
    public const int PROT_NONE = 0, PROT_READ = 1, PROT_WRITE = 2;
    public const int MAP_SHARED = 0x01, MAP_PRIVATE = 0x02, MAP_ANONYMOUS = 0x20, MAP_NORESERVE = 0x4000;
    public const int MADV_DONTFORK = 10, MADV_MERGEABLE = 12, MADV_HUGEPAGE = 14;
    public static readonly nint MAP_FAILED = -1;

    public const int EINTR = 4, EAGAIN = 11, EBADF = 9, EFAULT = 14, EINVAL = 22, ENOENT = 2, EACCES = 13, ENXIO = 6, E2BIG = 7, EIO = 5, EPIPE = 32;

    [LibraryImport(Lib, EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int Open(string path, int flags, int mode);

    /// <summary>The process's effective uid (vireod takes its own user, as root, for the host's admin).</summary>
    [LibraryImport(Lib, EntryPoint = "geteuid")]
    public static partial uint GetEuid();

    [LibraryImport(Lib, EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    [LibraryImport(Lib, EntryPoint = "chown", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Chown(string path, uint owner, uint group);

    [LibraryImport(Lib, EntryPoint = "getgrnam", StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint GetGrNam(string name);

    /// <summary>A group's gid, by its number or its name (through NSS, as ls and chgrp look it up); null when there is none.</summary>
    public static uint? GroupId(string group)
    {
        if (uint.TryParse(group, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out uint gid))
        {
            return gid;
        }
        nint entry = GetGrNam(group);
        // struct group { char *gr_name; char *gr_passwd; gid_t gr_gid; char **gr_mem; }: gr_gid at 16.
        return entry == 0 ? null : (uint)Marshal.ReadInt32(entry, 16);
    }

    /// <summary>Gives a file to a group, its owner kept; the errno when it cannot.</summary>
    public static int? ChangeGroup(string path, uint gid) => Chown(path, uint.MaxValue, gid) == 0 ? null : Marshal.GetLastPInvokeError();

    [LibraryImport(Lib, EntryPoint = "read", SetLastError = true)]
    public static partial nint Read(int fd, byte* buf, nuint count);

    /// <summary>read(2) into a span; -1 with errno on failure.</summary>
    public static nint Read(int fd, Span<byte> buffer)
    {
        fixed (byte* p = buffer)
        {
            return Read(fd, p, (nuint)buffer.Length);
        }
    }

    /// <summary>write(2) from a span; -1 with errno on failure.</summary>
    public static nint Write(int fd, ReadOnlySpan<byte> buffer)
    {
        fixed (byte* p = buffer)
        {
            return Write(fd, p, (nuint)buffer.Length);
        }
    }

    [LibraryImport(Lib, EntryPoint = "write", SetLastError = true)]
    public static partial nint Write(int fd, byte* buf, nuint count);

    [LibraryImport(Lib, EntryPoint = "ioctl", SetLastError = true)]
    public static partial int Ioctl(int fd, nuint request, nuint arg);

    [LibraryImport(Lib, EntryPoint = "ioctl", SetLastError = true)]
    public static partial int Ioctl(int fd, nuint request, void* arg);

    [LibraryImport(Lib, EntryPoint = "mmap", SetLastError = true)]
    public static partial nint Mmap(nint addr, nuint length, int prot, int flags, int fd, nint offset);

    [LibraryImport(Lib, EntryPoint = "munmap", SetLastError = true)]
    public static partial int Munmap(nint addr, nuint length);

    [LibraryImport(Lib, EntryPoint = "madvise", SetLastError = true)]
    public static partial int Madvise(nint addr, nuint length, int advice);

    [LibraryImport(Lib, EntryPoint = "eventfd", SetLastError = true)]
    public static partial int EventFd(uint initval, int flags);

    public const int EFD_CLOEXEC = 0x80000, EFD_NONBLOCK = 0x800;

    [LibraryImport(Lib, EntryPoint = "poll", SetLastError = true)]
    public static partial int Poll(PollFd* fds, nuint nfds, int timeoutMs);

    public const short POLLIN = 1, POLLHUP = 0x10, POLLERR = 0x8;

    /// <summary>Whether <paramref name="fd"/>'s peer has closed both ways (POLLHUP) or the descriptor has failed; it does not wait.</summary>
    public static bool HungUp(int fd)
    {
        var p = new PollFd { Fd = fd, Events = POLLIN };
        return Poll(&p, 1, 0) < 0 || (p.Revents & (POLLHUP | POLLERR)) != 0;
    }

    [LibraryImport(Lib, EntryPoint = "getrandom", SetLastError = true)]
    public static partial nint GetRandom(byte* buf, nuint length, uint flags);

    [LibraryImport(Lib, EntryPoint = "fdatasync", SetLastError = true)]
    public static partial int FdataSync(int fd);

    [LibraryImport(Lib, EntryPoint = "fallocate", SetLastError = true)]
    public static partial int Fallocate(int fd, int mode, long offset, long length);

    public const int FALLOC_FL_KEEP_SIZE = 0x01, FALLOC_FL_PUNCH_HOLE = 0x02, FALLOC_FL_ZERO_RANGE = 0x10;
    public const int O_DIRECT = 0x4000;
    public const int EOPNOTSUPP = 95;

    /// <summary>Fills <paramref name="buffer"/> from the kernel's CSPRNG (getrandom(2)).</summary>
    public static void FillRandom(Span<byte> buffer)
    {
        fixed (byte* p = buffer)
        {
            int done = 0;
            while (done < buffer.Length)
            {
                nint n = GetRandom(p + done, (nuint)(buffer.Length - done), 0);
                if (n < 0)
                {
                    if (LastErrno == EINTR)
                    {
                        continue;
                    }
                    throw new SysError("getrandom", LastErrno);
                }
                done += (int)n;
            }
        }
    }

    [LibraryImport(Lib, EntryPoint = "lstat", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Lstat(string path, byte* buf);

    /// <summary>struct stat on x86-64 glibc: its size and where st_mode sits (checked by the ABI test).</summary>
    public const int StatSize = 144, StatModeOffset = 24;

    /// <summary>True when <paramref name="path"/> exists and is a Unix socket (not following links).</summary>
    public static bool IsSocket(string path) => KindAt(path) == FileKind.Socket;

    /// <summary>
    /// Makes way for binding a Unix socket at <paramref name="path"/>: removes a stale socket left by
    /// an earlier run, and refuses anything else that is there (a file is never deleted).
    /// </summary>
    public static void RemoveStaleSocket(string path)
    {
        if (IsSocket(path))
        {
            File.Delete(path);
        }
        else if (Path.Exists(path))
        {
            throw new IOException($"{path} exists and is not a socket; refusing to replace it");
        }
    }

    [LibraryImport(Lib, EntryPoint = "isatty")]
    public static partial int IsATty(int fd);

    [LibraryImport(Lib, EntryPoint = "getpid")]
    public static partial int GetPid();

    [LibraryImport(Lib, EntryPoint = "gettid")]
    public static partial int GetTid();

    public const int PRIO_PROCESS = 0;

    /// <summary>setpriority(2); with PRIO_PROCESS and a thread id it sets that one thread's nice value.</summary>
    [LibraryImport(Lib, EntryPoint = "setpriority", SetLastError = true)]
    public static partial int SetPriority(int which, int who, int nice);

    /// <summary>getpriority(2) for one thread: its nice value (-20..19); -1 with errno set on failure.</summary>
    [LibraryImport(Lib, EntryPoint = "getpriority", SetLastError = true)]
    public static partial int GetPriority(int which, int who);

    /// <summary>Errno of the last call made with SetLastError.</summary>
    public static int LastErrno => Marshal.GetLastPInvokeError();

    /// <summary>The kernel's text for an errno, such as "Bad address".</summary>
    public static string StrError(int errno) => Marshal.GetPInvokeErrorMessage(errno);
}

[StructLayout(LayoutKind.Sequential)]
public struct PollFd
{
    public int Fd;
    public short Events;
    public short Revents;
}
