using System.Runtime.InteropServices;
using System.Text;

namespace Vireo.Interop;

/// <summary>
/// openat2(2) (&lt;linux/openat2.h&gt;): opening a path with the kernel resolving every component
/// beneath a directory, so a symbolic link (or "..") can never lead out of it. (What was opened is
/// then judged by <see cref="Libc.StatOf"/>.)
/// </summary>
public static unsafe partial class OpenAt2
{
    private const string Lib = "libc";

    public const ulong RESOLVE_NO_XDEV = 0x01, RESOLVE_NO_MAGICLINKS = 0x02, RESOLVE_NO_SYMLINKS = 0x04, RESOLVE_BENEATH = 0x08;
    public const int O_PATH = 0x200000, O_NOFOLLOW = 0x20000, O_DIRECTORY = 0x10000;
    public const int EXDEV = 18, ELOOP = 40, ENOSYS = 38, ENOTDIR = 20, EPERM = 1;
    public const long SYS_openat2 = 437; // x86-64

    [StructLayout(LayoutKind.Sequential)]
    public struct open_how
    {
        public ulong flags;
        public ulong mode;
        public ulong resolve;
    }

    [LibraryImport(Lib, EntryPoint = "syscall", SetLastError = true)]
    private static partial long Syscall(long number, int dirfd, byte* path, open_how* how, nuint size);

    [LibraryImport(Lib, EntryPoint = "openat", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int OpenAt(int dirfd, string path, int flags, int mode);

    [LibraryImport(Lib, EntryPoint = "unlinkat", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int UnlinkAt(int dirfd, string path, int flags);

    /// <summary>openat2(dirfd, path, {flags, 0, resolve}); the fd, or -1 with <paramref name="errno"/> (ENOSYS before Linux 5.6).</summary>
    public static int Open(int dirfd, string path, int flags, ulong resolve, out int errno)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(path + "\0");
        var how = new open_how { flags = (ulong)(uint)flags, resolve = resolve };
        fixed (byte* p = bytes)
        {
            long fd = Syscall(SYS_openat2, dirfd, p, &how, (nuint)sizeof(open_how));
            errno = fd < 0 ? Libc.LastErrno : 0;
            return (int)fd;
        }
    }

    /// <summary>
    /// Where openat2 is missing: the same refusal by walking <paramref name="path"/> one component at a
    /// time with O_NOFOLLOW, so no symbolic link is followed at all (stricter than RESOLVE_BENEATH,
    /// which follows links that stay inside). "." and ".." are refused (EXDEV), as an escape would be.
    /// </summary>
    public static int OpenNoFollowWalk(int dirfd, string path, int flags, out int errno)
    {
        string[] parts = path.Split('/', StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0 || parts.Any(p => p is "." or ".."))
        {
            errno = EXDEV;
            return -1;
        }
        int at = dirfd;
        try
        {
            for (int i = 0; i < parts.Length - 1; i++)
            {
                int next = OpenAt(at, parts[i], O_PATH | O_DIRECTORY | O_NOFOLLOW | Libc.O_CLOEXEC, 0);
                if (next < 0)
                {
                    errno = Libc.LastErrno; // a link here is ENOTDIR (O_DIRECTORY|O_NOFOLLOW), as a file is
                    return -1;
                }
                if (at != dirfd)
                {
                    Libc.Close(at);
                }
                at = next;
            }
            int fd = OpenAt(at, parts[^1], flags | O_NOFOLLOW, 0);
            errno = fd < 0 ? Libc.LastErrno : 0;
            return fd;
        }
        finally
        {
            if (at != dirfd)
            {
                Libc.Close(at);
            }
        }
    }
}
