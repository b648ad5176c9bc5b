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
    /// Moves a file a sandboxed VMM wrote in its directory (<paramref name="from"/>) to the operator's
    /// <paramref name="to"/>, made root's and 0600. It is renamed there, never over a file, then judged
    /// on the opened result: a regular file of the VM's uid with one link, and not a link the VMM put in
    /// its place, which would have vireod later read a host file for it (a restore hands the save's RAM
    /// to the guest). On another filesystem it is copied from the file opened the same way.
    /// Throws <see cref="IOException"/> or <see cref="SysError"/>; nothing is left at <paramref name="to"/> then.
    /// </summary>
    public static void TakeOut(string from, string to, uint vmUid)
    {
        if (Namespaces.RenameNoReplace(from, to) != 0)
        {
            int errno = Libc.LastErrno;
            if (errno != Namespaces.EXDEV)
            {
                throw new SysError($"rename({from}, {to})", errno);
            }
            CopyOut(from, to, vmUid);
            File.Delete(from);
            return;
        }
        try
        {
            using var fd = OpenWritten(to, vmUid);
            Check.Io(Namespaces.Fchown(fd.Fd, 0, 0), $"fchown({to})");
            Check.Io(Namespaces.Fchmod(fd.Fd, Mode0600), $"fchmod({to})");
        }
        catch
        {
            File.Delete(to); // unlinks a link itself, never what it points at
            throw;
        }
    }

    private static void CopyOut(string from, string to, uint vmUid)
    {
        using var source = OpenWritten(from, vmUid);
        using var target = new FileDescriptor(Libc.Open(to, Libc.O_WRONLY | Libc.O_CREAT | Libc.O_EXCL | OpenAt2.O_NOFOLLOW | Libc.O_CLOEXEC, (int)Mode0600));
        if (target.IsInvalid)
        {
            throw new SysError($"open({to})", Libc.LastErrno);
        }
        try
        {
            using var input = new FileStream(new Microsoft.Win32.SafeHandles.SafeFileHandle(source.DangerousGetHandle(), ownsHandle: false), FileAccess.Read);
            using var output = new FileStream(new Microsoft.Win32.SafeHandles.SafeFileHandle(target.DangerousGetHandle(), ownsHandle: false), FileAccess.Write);
            input.CopyTo(output, 1 << 20);
        }
        catch
        {
            File.Delete(to);
            throw;
        }
    }

    /// <summary>A file the VM's uid wrote, opened to read: a regular file of its own with one link, never followed through a link.</summary>
    private static FileDescriptor OpenWritten(string path, uint vmUid)
    {
        var fd = new FileDescriptor(Libc.Open(path, Libc.O_RDONLY | OpenAt2.O_NOFOLLOW | Libc.O_NONBLOCK | Libc.O_CLOEXEC, 0));
        if (fd.IsInvalid)
        {
            int errno = Libc.LastErrno;
            throw new IOException($"{path}: not a file the VMM wrote ({Libc.StrError(errno)})");
        }
        var stat = Libc.StatOf(fd.Fd);
        if (stat.Kind != FileKind.Regular || stat.Links != 1 || stat.Uid != vmUid)
        {
            fd.Dispose();
            throw new IOException($"{path}: not a file the VMM wrote: {stat.Described} of uid {stat.Uid} with {stat.Links} link(s)");
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
