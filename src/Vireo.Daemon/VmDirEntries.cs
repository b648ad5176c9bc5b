using Vireo.Interop;

namespace Vireo.Daemon;

/// <summary>
/// What vireod (root) makes and opens in a VM's directory. Under --sandbox that directory belongs
/// to the VM's uid, so a compromised VMM may have left anything there: a symbolic link to a host
/// file, a FIFO, a directory. Nothing there is ever followed: an entry that is not what vireod would
/// have made is removed first (lstat, then unlink or a recursive delete, which unlinks links), and
/// a file is opened with O_NOFOLLOW and O_NONBLOCK and judged by fstat of what was opened.
/// </summary>
internal static class VmDirEntries
{
    private const uint Mode0600 = 0x180;

    /// <summary>Removes whatever is at <paramref name="path"/> unless it is a <paramref name="kind"/> itself (not a link to one).</summary>
    public static void RemoveUnless(string path, FileKind kind)
    {
        var found = Libc.KindAt(path);
        if (found is null || found == kind)
        {
            return;
        }
        if (found == FileKind.Directory)
        {
            Directory.Delete(path, recursive: true);
        }
        else
        {
            File.Delete(path);
        }
    }

    /// <summary>A real directory at <paramref name="path"/> (0700): anything else there is removed first.</summary>
    public static void Directory0700(string path)
    {
        RemoveUnless(path, FileKind.Directory);
        Directory.CreateDirectory(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
    }

    /// <summary>A log file at <paramref name="path"/>, opened for appending, 0600; never through a link, never a FIFO.</summary>
    public static FileDescriptor OpenLog(string path)
    {
        RemoveUnless(path, FileKind.Regular);
        var fd = new FileDescriptor(Libc.Open(path, Libc.O_WRONLY | Libc.O_CREAT | Libc.O_APPEND | OpenAt2.O_NOFOLLOW | Libc.O_NONBLOCK | Libc.O_CLOEXEC, (int)Mode0600));
        try
        {
            if (fd.IsInvalid)
            {
                throw new SysError($"open({path})", Libc.LastErrno);
            }
            if (Libc.StatOf(fd.Fd).Kind != FileKind.Regular)
            {
                throw new IOException($"{path} is not a regular file"); // made between the lstat and the open
            }
            Check.Io(Namespaces.Fchmod(fd.Fd, Mode0600), $"fchmod({path})"); // a log made by an earlier vireod, 0644
            Libc.ClearNonBlocking(fd.Fd);
            return fd;
        }
        catch
        {
            fd.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Moves a file a sandboxed VMM wrote (<paramref name="name"/> in <paramref name="dir"/>, a directory
    /// of its uid's) to the operator's <paramref name="to"/>, made root's and 0600. The directory is
    /// opened once, never through a link, and the file judged in it before anything moves: a regular
    /// file of the VM's uid with one link (not a link, a directory or a host file the VMM put in its
    /// place, which would have vireod later hand a host file to a restore's guest RAM). It is renamed
    /// there, never over a file, and what arrived must be what was judged (the same inode); if not, it
    /// goes back. On another filesystem the judged file is copied, up to the size it had. Throws
    /// <see cref="IOException"/> or <see cref="SysError"/>; nothing of the VM's is left at <paramref name="to"/> then.
    /// </summary>
    public static void TakeOut(string dir, string name, string to, uint vmUid)
    {
        using var d = new FileDescriptor(Libc.Open(dir, Libc.O_RDONLY | OpenAt2.O_DIRECTORY | OpenAt2.O_NOFOLLOW | Libc.O_CLOEXEC, 0));
        if (d.IsInvalid)
        {
            throw new IOException($"{dir}: not the directory vireod made for the save ({Libc.StrError(Libc.LastErrno)})");
        }
        FileStat judged;
        using (var file = OpenWritten(d, name, $"{dir}/{name}", vmUid))
        {
            judged = Libc.StatOf(file.Fd);
        }
        if (Namespaces.RenameNoReplace(d.Fd, name, Namespaces.AT_FDCWD, to) != 0)
        {
            int errno = Libc.LastErrno;
            if (errno != Namespaces.EXDEV)
            {
                throw new SysError($"rename({dir}/{name}, {to})", errno);
            }
            CopyOut(d, name, $"{dir}/{name}", to, vmUid);
            OpenAt2.UnlinkAt(d.Fd, name, 0);
            return;
        }
        try
        {
            using var fd = new FileDescriptor(Libc.Open(to, Libc.O_RDONLY | OpenAt2.O_NOFOLLOW | Libc.O_NONBLOCK | Libc.O_CLOEXEC, 0));
            if (fd.IsInvalid || !SameFile(Libc.StatOf(fd.Fd), judged))
            {
                throw new IOException($"{dir}/{name}: changed by the VMM while it was moved");
            }
            Check.Io(Namespaces.Fchown(fd.Fd, 0, 0), $"fchown({to})");
            Check.Io(Namespaces.Fchmod(fd.Fd, Mode0600), $"fchmod({to})");
        }
        catch
        {
            // Whatever arrived is the VM's: it goes back where it came from, or, failing that, is unlinked (never followed).
            if (Namespaces.RenameNoReplace(Namespaces.AT_FDCWD, to, d.Fd, name) != 0)
            {
                RemoveUnless(to, FileKind.Unknown);
            }
            throw;
        }
    }

    private static bool SameFile(FileStat arrived, FileStat judged) =>
        arrived.Device == judged.Device && arrived.Inode == judged.Inode && arrived.Kind == FileKind.Regular && arrived.Links == 1;

    private static void CopyOut(FileDescriptor dir, string name, string shown, string to, uint vmUid)
    {
        using var source = OpenWritten(dir, name, shown, vmUid);
        long size = Libc.StatOf(source.Fd).Size; // what a still-running VMM adds after this is not copied
        using var target = new FileDescriptor(Libc.Open(to, Libc.O_WRONLY | Libc.O_CREAT | Libc.O_EXCL | OpenAt2.O_NOFOLLOW | Libc.O_CLOEXEC, (int)Mode0600));
        if (target.IsInvalid)
        {
            throw new SysError($"open({to})", Libc.LastErrno);
        }
        try
        {
            using var input = new FileStream(new Microsoft.Win32.SafeHandles.SafeFileHandle(source.DangerousGetHandle(), ownsHandle: false), FileAccess.Read);
            using var output = new FileStream(new Microsoft.Win32.SafeHandles.SafeFileHandle(target.DangerousGetHandle(), ownsHandle: false), FileAccess.Write);
            var buffer = new byte[1 << 20];
            for (long left = size; left > 0;)
            {
                int n = input.Read(buffer, 0, (int)Math.Min(buffer.Length, left));
                if (n == 0)
                {
                    break;
                }
                output.Write(buffer, 0, n);
                left -= n;
            }
        }
        catch
        {
            File.Delete(to);
            throw;
        }
    }

    /// <summary>A file the VM's uid wrote, opened to read in its directory: a regular file of its own with one link, never followed through a link.</summary>
    private static FileDescriptor OpenWritten(FileDescriptor dir, string name, string shown, uint vmUid)
    {
        var fd = new FileDescriptor(OpenAt2.OpenAt(dir.Fd, name, Libc.O_RDONLY | OpenAt2.O_NOFOLLOW | Libc.O_NONBLOCK | Libc.O_CLOEXEC, 0));
        if (fd.IsInvalid)
        {
            int errno = Libc.LastErrno;
            throw new IOException($"{shown}: not a file the VMM wrote ({Libc.StrError(errno)})");
        }
        var stat = Libc.StatOf(fd.Fd);
        if (stat.Kind != FileKind.Regular || stat.Links != 1 || stat.Uid != vmUid)
        {
            fd.Dispose();
            throw new IOException($"{shown}: not a file the VMM wrote: {stat.Described} of uid {stat.Uid} with {stat.Links} link(s)");
        }
        return fd;
    }

    /// <summary>
    /// The last <paramref name="max"/> bytes of the regular file at <paramref name="path"/> as
    /// text, or null if there is none: never read through a link or from a FIFO, which a
    /// sandboxed VM's uid could leave there to have root read another file for it.
    /// </summary>
    public static string? ReadTail(string path, int max)
    {
        using var fd = new FileDescriptor(Libc.Open(path, Libc.O_RDONLY | OpenAt2.O_NOFOLLOW | Libc.O_NONBLOCK | Libc.O_CLOEXEC, 0));
        if (fd.IsInvalid)
        {
            return null;
        }
        var stat = Libc.StatOf(fd.Fd);
        if (stat.Kind != FileKind.Regular)
        {
            return null;
        }
        long from = Math.Max(0, stat.Size - max);
        var buffer = new byte[(int)(stat.Size - from)];
        int n = Libc.PreadFully(fd.Fd, buffer, from);
        return n < 0 ? null : System.Text.Encoding.UTF8.GetString(buffer, 0, n);
    }
}
