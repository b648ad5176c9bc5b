using System.Runtime.InteropServices;

namespace Vireo.Interop;

/// <summary>What a file handed to the VMM is, read from the opened fd (fstat), never from the path.</summary>
public enum FileKind
{
    Regular,
    Directory,
    CharacterDevice,
    BlockDevice,
    Fifo,
    Socket,
    Symlink,
    Unknown,
}

/// <summary>The kind and size of an open file, its links and its owner, from fstat(2).</summary>
public readonly record struct FileStat(FileKind Kind, long Size, ulong Links = 1, uint Uid = 0, ulong Device = 0, ulong Inode = 0)
{
    /// <summary>How a message names the kind: "a FIFO", "a character device".</summary>
    public string Described => Kind switch
    {
        FileKind.Regular => "a regular file",
        FileKind.Directory => "a directory",
        FileKind.CharacterDevice => "a character device",
        FileKind.BlockDevice => "a block device",
        FileKind.Fifo => "a FIFO",
        FileKind.Socket => "a socket",
        FileKind.Symlink => "a symbolic link",
        _ => "not a regular file",
    };
}

public static unsafe partial class Libc
{
    public const int O_NOCTTY = 0x100;
    public const int F_SETFD = 2, F_GETFL = 3, F_SETFL = 4, F_DUPFD_CLOEXEC = 1030;
    public const uint S_IFMT = 0xf000, S_IFSOCK = 0xc000, S_IFLNK = 0xa000, S_IFREG = 0x8000, S_IFBLK = 0x6000,
        S_IFDIR = 0x4000, S_IFCHR = 0x2000, S_IFIFO = 0x1000;

    /// <summary>Where st_size sits in struct stat on x86-64 glibc (checked by the ABI test).</summary>
    public const int StatSizeOffset = 48;

    /// <summary>Where st_nlink and st_uid sit in struct stat on x86-64 glibc (checked by the ABI test).</summary>
    public const int StatNlinkOffset = 16, StatUidOffset = 28;

    /// <summary>Where st_dev and st_ino sit in struct stat on x86-64 glibc (checked by the ABI test).</summary>
    public const int StatDevOffset = 0, StatInoOffset = 8;

    /// <summary>Where st_blocks (512-byte units allocated) sits in struct stat on x86-64 glibc (checked by the ABI test).</summary>
    public const int StatBlocksOffset = 64;

    [LibraryImport(Lib, EntryPoint = "stat", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Stat(string path, byte* buf);

    [LibraryImport(Lib, EntryPoint = "fstat", SetLastError = true)]
    private static partial int Fstat(int fd, byte* buf);

    [LibraryImport(Lib, EntryPoint = "fcntl", SetLastError = true)]
    private static partial int Fcntl(int fd, int cmd, int arg);

    [LibraryImport(Lib, EntryPoint = "pread", SetLastError = true)]
    private static partial nint Pread(int fd, byte* buf, nuint count, long offset);

    /// <summary>fstat(2) of an open fd: its kind and size. Throws <see cref="SysError"/>.</summary>
    public static FileStat StatOf(int fd)
    {
        byte* buf = stackalloc byte[StatSize];
        Check.Io(Fstat(fd, buf), "fstat");
        // SAFETY: fstat filled StatSize bytes, and both offsets lie inside (checked by the ABI test).
        uint mode = *(uint*)(buf + StatModeOffset);
        long size = *(long*)(buf + StatSizeOffset);
        return new FileStat(Kind(mode), size, *(ulong*)(buf + StatNlinkOffset), *(uint*)(buf + StatUidOffset), *(ulong*)(buf + StatDevOffset), *(ulong*)(buf + StatInoOffset));
    }

    /// <summary>What is at <paramref name="path"/> itself (lstat: a link is not followed), or null when nothing is.</summary>
    public static FileKind? KindAt(string path)
    {
        byte* buf = stackalloc byte[StatSize];
        // SAFETY: lstat fills StatSize bytes when it returns 0; st_mode lies inside (checked by the ABI test).
        return Lstat(path, buf) == 0 ? Kind(*(uint*)(buf + StatModeOffset)) : null;
    }

    /// <summary>The owner's uid of what is at <paramref name="path"/> (stat: a link is followed), or null when nothing is.</summary>
    public static uint? OwnerAt(string path)
    {
        byte* buf = stackalloc byte[StatSize];
        // SAFETY: stat fills StatSize bytes when it returns 0; st_uid lies inside (checked by the ABI test).
        return Stat(path, buf) == 0 ? *(uint*)(buf + StatUidOffset) : null;
    }

    private static FileKind Kind(uint mode) => (mode & S_IFMT) switch
    {
        S_IFREG => FileKind.Regular,
        S_IFDIR => FileKind.Directory,
        S_IFCHR => FileKind.CharacterDevice,
        S_IFBLK => FileKind.BlockDevice,
        S_IFIFO => FileKind.Fifo,
        S_IFSOCK => FileKind.Socket,
        S_IFLNK => FileKind.Symlink,
        _ => FileKind.Unknown,
    };

    /// <summary>fcntl(F_GETFL): the fd's access mode and status flags, or -1 (EBADF: no such fd).</summary>
    public static int StatusFlags(int fd) => Fcntl(fd, F_GETFL, 0);

    /// <summary>fcntl(F_SETFL): O_DIRECT, O_NONBLOCK and O_APPEND can change; the access mode cannot.</summary>
    public static int SetStatusFlags(int fd, int flags) => Fcntl(fd, F_SETFL, flags);

    /// <summary>Clears O_NONBLOCK on an fd that was opened with it only so that the open could not block.</summary>
    public static void ClearNonBlocking(int fd)
    {
        int flags = Check.Io(Fcntl(fd, F_GETFL, 0), "fcntl(F_GETFL)");
        Check.Io(Fcntl(fd, F_SETFL, flags & ~O_NONBLOCK), "fcntl(F_SETFL)");
    }

    /// <summary>pread(2) until <paramref name="buffer"/> is full or the file ends; returns the bytes read.</summary>
    public static int PreadFully(int fd, Span<byte> buffer, long offset)
    {
        int done = 0;
        fixed (byte* p = buffer)
        {
            while (done < buffer.Length)
            {
                nint n = Pread(fd, p + done, (nuint)(buffer.Length - done), offset + done);
                if (n < 0 && LastErrno == EINTR)
                {
                    continue;
                }
                Check.Io(n, "pread");
                if (n == 0)
                {
                    break;
                }
                done += (int)n;
            }
        }
        return done;
    }

    /// <summary>Clears FD_CLOEXEC, so the next exec'd child inherits the fd; -1 with errno on failure.</summary>
    public static int ClearCloseOnExec(int fd) => Fcntl(fd, F_SETFD, 0);

    [LibraryImport(Lib, EntryPoint = "dup", SetLastError = true)]
    public static partial int Dup(int fd);

    /// <summary>fcntl(F_DUPFD_CLOEXEC): a copy of <paramref name="fd"/> on the lowest free number at or above <paramref name="atLeast"/>, close-on-exec; -1 with errno on failure.</summary>
    public static int DupAtOrAbove(int fd, int atLeast) => Fcntl(fd, F_DUPFD_CLOEXEC, atLeast);

    /// <summary>
    /// The bytes the file at <paramref name="path"/> has on disk (st_blocks × 512, following links): what a
    /// sparse file being written holds so far, where its size says nothing. Null when there is no such file.
    /// </summary>
    public static long? AllocatedBytesAt(string path)
    {
        byte* buf = stackalloc byte[StatSize];
        // SAFETY: stat fills StatSize bytes when it returns 0; st_blocks lies inside (checked by the ABI test).
        return Stat(path, buf) == 0 ? *(long*)(buf + StatBlocksOffset) * 512 : null;
    }
}
