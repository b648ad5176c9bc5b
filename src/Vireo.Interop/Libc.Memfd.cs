using System.Runtime.InteropServices;

namespace Vireo.Interop;

/// <summary>memfd_create, ftruncate, lseek's data and hole search, and pwrite: what guest RAM on a file needs.</summary>
public static unsafe partial class Libc
{
    public const uint MFD_CLOEXEC = 1, MFD_ALLOW_SEALING = 2, MFD_HUGETLB = 4;
    public const int SEEK_SET = 0, SEEK_DATA = 3, SEEK_HOLE = 4;

    [LibraryImport(Lib, EntryPoint = "memfd_create", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int MemfdCreate(string name, uint flags);

    [LibraryImport(Lib, EntryPoint = "ftruncate", SetLastError = true)]
    public static partial int Ftruncate(int fd, long length);

    [LibraryImport(Lib, EntryPoint = "lseek", SetLastError = true)]
    public static partial long Lseek(int fd, long offset, int whence);

    [LibraryImport(Lib, EntryPoint = "pwrite", SetLastError = true)]
    public static partial nint Pwrite(int fd, byte* buf, nuint count, long offset);


    /// <summary>Writes all of <paramref name="buffer"/> at <paramref name="offset"/>; throws <see cref="SysError"/> on failure.</summary>
    public static void PwriteFully(int fd, ReadOnlySpan<byte> buffer, long offset)
    {
        fixed (byte* p = buffer)
        {
            int done = 0;
            while (done < buffer.Length)
            {
                nint n = Pwrite(fd, p + done, (nuint)(buffer.Length - done), offset + done);
                if (n < 0)
                {
                    int errno = LastErrno;
                    if (errno == EINTR)
                    {
                        continue;
                    }
                    throw new SysError("pwrite", errno);
                }
                if (n == 0)
                {
                    throw new SysError("pwrite", 28); // ENOSPC: nothing more could be written
                }
                done += (int)n;
            }
        }
    }
}
