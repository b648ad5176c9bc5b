using Vireo.Api;
using Vireo.Api.Definitions;
using Vireo.Interop;

namespace Vireo.Daemon;

/// <summary>
/// Kernel, initrd and disk paths must lie inside the image directories vireod was given, every
/// component resolved by the kernel (openat2 with RESOLVE_BENEATH): a symbolic link anywhere on the
/// way, to a file or a directory, must not lead outside. Checked at define for an early, clear
/// error; at start each file is opened that way and the VMM is handed the open file, not the path,
/// so a file swapped for a link between the check and the use is refused, never followed.
/// </summary>
internal static class ImagePolicy
{
    /// <summary>One opened image file, for the VMM; its fd is closed by Dispose.</summary>
    internal sealed record Opened(string Field, FileDescriptor Fd) : IDisposable
    {
        public void Dispose() => Fd.Dispose();
    }

    public static SchemaError? Check(VmDefinition d, List<string> imageDirs)
    {
        foreach (var (field, path, disk, _) in Paths(d))
        {
            var (fd, error) = Open(field, path, disk, OpenAt2.O_PATH, imageDirs, walk: false);
            fd?.Dispose();
            if (error is not null)
            {
                return error;
            }
        }
        return null;
    }

    /// <summary>
    /// Opens every file the definition names (read-only, or read-write for a writable disk), or
    /// refuses, naming the field; on a refusal nothing stays open.
    /// </summary>
    /// <param name="walk">take the no-symlinks walk used where openat2 is missing (so a test can reach it on any kernel)</param>
    public static (List<Opened>? Files, SchemaError? Error) OpenAll(VmDefinition d, List<string> imageDirs, bool walk = false)
    {
        var files = new List<Opened>();
        foreach (var (field, path, disk, writable) in Paths(d))
        {
            var (fd, error) = Open(field, path, disk, writable ? Libc.O_RDWR : Libc.O_RDONLY, imageDirs, walk);
            if (error is not null)
            {
                files.ForEach(f => f.Dispose());
                return (null, error);
            }
            files.Add(new Opened(field, fd!));
        }
        return (files, null);
    }

    /// <summary>
    /// A tenant's save or restore file: an existing regular file beneath its image directories
    /// (<paramref name="existing"/>), or, for a new one, a directory beneath them (or one of them) to
    /// hold it. Resolved as the images are, so no link leads out.
    /// </summary>
    public static string? CheckPlace(string field, string path, List<string> imageDirs, bool existing)
    {
        if (existing)
        {
            var (fd, error) = Open(field, path, disk: false, OpenAt2.O_PATH, imageDirs, walk: false);
            fd?.Dispose();
            return error?.ToString();
        }
        if (!Path.IsPathFullyQualified(path))
        {
            return null; // the save's own check names this
        }
        string parent = Path.GetDirectoryName(Path.GetFullPath(path))!.TrimEnd('/') + "/";
        if (imageDirs.Contains(parent))
        {
            return null;
        }
        var (dirFd, refused) = Open(field, parent.TrimEnd('/'), disk: false, OpenAt2.O_PATH, imageDirs, walk: false, directory: true);
        dirFd?.Dispose();
        return refused is null ? null : $"{field}: {path} is not in one of your image directories ({string.Join(", ", imageDirs)}): {refused.Message}";
    }

    internal static IEnumerable<(string Field, string Path, bool Disk, bool Writable)> Paths(VmDefinition d)
    {
        yield return ("kernel", d.Kernel, false, false);
        if (d.Initrd is not null)
        {
            yield return ("initrd", d.Initrd, false, false);
        }
        var disks = d.Disks ?? [];
        for (int i = 0; i < disks.Length; i++)
        {
            yield return ($"disks[{i}].path", disks[i].Path, true, !disks[i].ReadOnly);
        }
    }

    private static (FileDescriptor? Fd, SchemaError? Error) Open(string field, string path, bool disk, int access, List<string> imageDirs, bool walk, bool directory = false)
    {
        SchemaError Refuse(string why) => new(field, why);
        if (path.Contains('\0', StringComparison.Ordinal))
        {
            return (null, Refuse("the path holds a NUL character"));
        }
        if (!Path.IsPathFullyQualified(path))
        {
            return (null, Refuse($"{path} is not an absolute path"));
        }
        string full = Path.GetFullPath(path);
        string? dir = imageDirs.FirstOrDefault(d => full.StartsWith(d, StringComparison.Ordinal) && full.Length > d.Length);
        if (dir is null)
        {
            return (null, Refuse($"{path} is outside the image directories ({string.Join(", ", imageDirs)})"));
        }
        int dirFd = Libc.Open(dir, OpenAt2.O_PATH | OpenAt2.O_DIRECTORY | Libc.O_CLOEXEC, 0);
        if (dirFd < 0)
        {
            return (null, Refuse($"the image directory {dir} cannot be opened: {System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(Libc.LastErrno)}"));
        }
        using var dirHandle = new FileDescriptor(dirFd);
        string relative = full[dir.Length..];
        // O_NONBLOCK: a FIFO or a device must not block the daemon before its type is checked; O_NOCTTY: a tty must not become ours.
        // (openat2 refuses any flag but O_CLOEXEC beside O_PATH, which opens nothing anyway.)
        int flags = access == OpenAt2.O_PATH ? access | Libc.O_CLOEXEC : access | Libc.O_CLOEXEC | Libc.O_NONBLOCK | Libc.O_NOCTTY;
        int errno = OpenAt2.ENOSYS;
        int fd = walk ? -1 : OpenAt2.Open(dirFd, relative, flags, OpenAt2.RESOLVE_BENEATH | OpenAt2.RESOLVE_NO_MAGICLINKS, out errno);
        // ENOSYS: a kernel before 5.6, or a seccomp filter that does not know openat2; EPERM: an older filter's answer to
        // the same (a real EPERM comes back from the walk's openat too, so nothing is let through by retrying).
        if (fd < 0 && errno is OpenAt2.ENOSYS or OpenAt2.EPERM)
        {
            fd = OpenAt2.OpenNoFollowWalk(dirFd, relative, flags, out errno);
        }
        if (fd < 0)
        {
            return (null, Refuse(errno switch
            {
                OpenAt2.EXDEV => $"{path} leads outside the image directories ({string.Join(", ", imageDirs)}) through a symbolic link",
                OpenAt2.ELOOP => $"{path} goes through a symbolic link that is refused (a /proc magic link, a loop, or any link where openat2 is missing)",
                Libc.ENOENT => $"no such file: {path}",
                OpenAt2.ENOTDIR => $"{path}: a component on the way is not a directory (or is a symbolic link, where openat2 is missing)",
                Libc.EACCES => $"{path}: permission denied",
                _ => $"{path} cannot be opened: {System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(errno)}",
            }));
        }
        var handle = new FileDescriptor(fd);
        var stat = Libc.StatOf(fd);
        if (directory ? stat.Kind != FileKind.Directory : stat.Kind != FileKind.Regular && !(disk && stat.Kind == FileKind.BlockDevice))
        {
            handle.Dispose();
            return (null, Refuse($"{path} is {stat.Described}, not a {(directory ? "directory" : "regular file")}{(disk ? " or a block device" : "")}"));
        }
        return (handle, null);
    }
}
