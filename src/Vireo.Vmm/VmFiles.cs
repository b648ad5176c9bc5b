using Microsoft.Win32.SafeHandles;
using Vireo.Interop;

namespace Vireo.Vmm;

/// <summary>
/// The files a VM is made from, opened once when it is first built: the kernel, the initrd,
/// the disks and the TAP devices, an fd each, and /dev/kvm. Every later boot of the same VM (a guest reboot) is built from these,
/// never from the paths again: the paths may be gone by then (deleted, replaced, or a
/// /proc/PID/fd/N that was only valid while the VM started), and privilege is spent at start-up.
/// The kernel and initrd are read from their fds for each boot and let go once loaded
/// (<see cref="MappedBuffer"/>): a running VM keeps no copy of its images.
/// </summary>
public sealed class VmFiles : IDisposable
{
    private readonly SafeFileHandle[] _disks;
    private readonly FileDescriptor?[] _taps;
    private Kvm.Kvm? _kvm;
    private readonly Lock _kvmLock = new();
    private readonly Image? _kernel; // null when opened for a restore, which loads no image
    private readonly Image? _initrd;

    /// <summary>An image's fd, its path (for messages) and the size fstat gave when it was opened.</summary>
    private sealed record Image(SafeFileHandle File, string Path, string Field, long Size);

    private VmFiles(Image? kernel, Image? initrd, SafeFileHandle[] disks, FileDescriptor?[] taps)
    {
        _kernel = kernel;
        _initrd = initrd;
        _disks = disks;
        _taps = taps;
    }

    /// <summary>The kernel's bytes for one boot; the caller disposes them once they are loaded.</summary>
    public MappedBuffer ReadKernel() => Read(_kernel ?? throw new InvalidOperationException("these files were opened for a restore: there is no kernel to boot"));

    /// <summary>The initrd's bytes for one boot (null: the VM has none); the caller disposes them.</summary>
    public MappedBuffer? ReadInitrd() => _initrd is null ? null : Read(_initrd);

    /// <summary>
    /// Opens and checks every file of <paramref name="config"/>: the kernel and initrd must be
    /// regular files no larger than guest RAM, a disk a regular file or a block device. Throws
    /// <see cref="VmConfigException"/> naming the field, the path and what is wrong.
    /// </summary>
    public static VmFiles Open(VmConfig config) => Open(config, withImages: true);

    /// <summary>What a restore needs: the disks, TAPs and /dev/kvm, no kernel or initrd (the guest's RAM holds what they loaded).</summary>
    /// <remarks>The images are opened too while they are still where the config says, so that a guest reboot after the restore can boot them.</remarks>
    /// <remarks>
    /// <paramref name="tapsHandedOver"/>: the TAPs come from the VMM before this one on the same host
    /// (a local migration, <see cref="AdoptTap"/>): while it lives it holds them, and a TAP opens once.
    /// </remarks>
    public static VmFiles OpenForRestore(VmConfig config, bool tapsHandedOver = false)
    {
        if (File.Exists(config.KernelPath) && (config.InitrdPath is null || File.Exists(config.InitrdPath)))
        {
            try
            {
                return Open(config, withImages: true, openTaps: !tapsHandedOver);
            }
            catch (VmConfigException)
            {
                // An image that no longer loads only matters to a reboot; the disks are checked again below.
            }
        }
        return Open(config, withImages: false, openTaps: !tapsHandedOver);
    }

    /// <summary>Takes <paramref name="tap"/> (handed over by the VMM before this one) as interface <paramref name="index"/>'s TAP.</summary>
    public void AdoptTap(int index, FileDescriptor tap)
    {
        if ((uint)index >= (uint)_taps.Length || _taps[index] is not null)
        {
            tap.Dispose();
            throw new VmConfigException($"net {index}: {((uint)index >= (uint)_taps.Length ? "there is no such interface" : "it has its TAP already")}");
        }
        _taps[index] = tap;
    }

    /// <summary>The TAP of interface <paramref name="index"/>, or -1 (to hand over to a successor on this host).</summary>
    public int TapFd(int index) => (uint)index < (uint)_taps.Length && _taps[index] is { } t ? t.Fd : -1;

    private static VmFiles Open(VmConfig config, bool withImages, bool openTaps = true)
    {
        if (withImages)
        {
            config.Validate();
        }
        else
        {
            config.ValidateSettings();
        }
        // An image larger than guest RAM cannot be loaded; reading one would only exhaust the host.
        ulong limit = Math.Min(config.MemoryBytes, (ulong)Array.MaxLength);
        Image? kernel = null, initrd = null;
        var disks = new List<SafeFileHandle>();
        var taps = new List<FileDescriptor?>();
        try
        {
            // Read by each boot, first thing (Machine.Create): one that cannot be read is refused before anything is built.
            if (withImages)
            {
                kernel = OpenImage(config.KernelPath, "kernel", limit, config.MemoryBytes);
            }
            if (withImages && config.InitrdPath is not null)
            {
                initrd = OpenImage(config.InitrdPath, "initrd", limit, config.MemoryBytes);
            }
            foreach (var disk in config.Disks)
            {
                disks.Add(OpenDisk(disk.Path, disk.ReadOnly, disk.Direct));
            }
            foreach (var net in config.Nets)
            {
                taps.Add(net.Tap is null || !openTaps ? null : OpenTap(net.Tap));
            }
        }
        catch
        {
            kernel?.File.Dispose();
            initrd?.File.Dispose();
            disks.ForEach(d => d.Dispose());
            taps.ForEach(t => t?.Dispose());
            throw;
        }
        return new VmFiles(kernel, initrd, [.. disks], [.. taps]);
    }

    /// <summary>A new fd for disk <paramref name="index"/> (a dup: same file, same flags) for one boot's device to own.</summary>
    public SafeFileHandle DupDisk(int index)
    {
        bool added = false;
        try
        {
            _disks[index].DangerousAddRef(ref added);
            return new SafeFileHandle(Check.Io(Libc.Dup((int)_disks[index].DangerousGetHandle()), "dup"), ownsHandle: true);
        }
        finally
        {
            if (added)
            {
                _disks[index].DangerousRelease();
            }
        }
    }

    /// <summary>
    /// /dev/kvm, opened by the first boot and kept for every later one (and for a restore), like the
    /// other privileged handles. Owned by these files.
    /// </summary>
    public Kvm.Kvm Kvm
    {
        get
        {
            lock (_kvmLock)
            {
                return _kvm ??= Vireo.Kvm.Kvm.Open();
            }
        }
    }

    /// <summary>A new fd for the TAP of interface <paramref name="index"/> (a dup of the one opened with the VM's files).</summary>
    public FileDescriptor DupTap(int index)
    {
        var tap = _taps[index] ?? throw new InvalidOperationException($"interface {index} has no TAP");
        return new FileDescriptor(Check.Io(Libc.Dup(tap.Fd), "dup"));
    }

    public void Dispose()
    {
        _kvm?.Dispose();
        foreach (var t in _taps)
        {
            t?.Dispose();
        }
        _kernel?.File.Dispose();
        _initrd?.File.Dispose();
        foreach (var d in _disks)
        {
            d.Dispose();
        }
    }

    /// <summary>
    /// O_NONBLOCK and O_NOCTTY so that opening a FIFO or a terminal cannot block or take it over;
    /// then what the path is comes from fstat of the fd that was opened (a path can change between
    /// a stat and an open).
    /// </summary>
    private static SafeFileHandle OpenChecked(string path, string field, int flags, string expected)
    {
        if (InheritedFd(path) is int inherited)
        {
            return TakeInherited(inherited, path, field, flags);
        }
        int fd = Libc.Open(path, flags | Libc.O_CLOEXEC | Libc.O_NONBLOCK | Libc.O_NOCTTY, 0);
        if (fd < 0)
        {
            int errno = Libc.LastErrno;
            throw new VmConfigException(errno switch
            {
                Libc.ENOENT => $"{field}: no such file: {path}",
                EISDIR => $"{field}: {path} is a directory, not {expected}", // a directory opened for writing
                Libc.ENXIO when Libc.IsSocket(path) => $"{field}: {path} is a socket, not {expected}", // sockets cannot be opened
                _ => $"{field}: cannot open {path}: {Libc.StrError(errno)}",
            });
        }
        return new SafeFileHandle(fd, ownsHandle: true);
    }

    /// <summary>N when <paramref name="path"/> is `/proc/self/fd/N`: a file this process was handed open (by vireod).</summary>
    internal static int? InheritedFd(string path) =>
        path.StartsWith(InheritedPrefix, StringComparison.Ordinal)
        && int.TryParse(path.AsSpan(InheritedPrefix.Length), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int n)
            ? n : null;

    private const string InheritedPrefix = "/proc/self/fd/";

    /// <summary>
    /// A snapshot's file to be read, as open(2) with O_RDONLY and <paramref name="flags"/> gives it, or a
    /// dup of it when it was handed over open (`/proc/self/fd/N`: a sandboxed VMM restoring a save that
    /// its uid could not open). -1 with <paramref name="errno"/> when neither can be had.
    /// </summary>
    internal static int OpenToRead(string path, int flags, out int errno)
    {
        int fd;
        if (InheritedFd(path) is int inherited)
        {
            int status = Libc.StatusFlags(inherited);
            fd = status < 0 ? -1 : (status & 3) == Libc.O_WRONLY ? -2 : Libc.DupAtOrAbove(inherited, 3);
            errno = fd == -2 ? Libc.EBADF : fd < 0 ? Libc.LastErrno : 0;
            return fd < 0 ? -1 : fd;
        }
        fd = Libc.Open(path, Libc.O_RDONLY | flags, 0);
        errno = fd < 0 ? Libc.LastErrno : 0;
        return fd;
    }

    /// <summary>
    /// A file handed over open is taken as it is (a dup), never opened again through /proc: the
    /// rights it was opened with are what the VMM gets, and a sandboxed VMM, whose uid may not own
    /// the file, needs no right to its path. It must allow what <paramref name="flags"/> asks.
    /// </summary>
    private static SafeFileHandle TakeInherited(int fd, string path, string field, int flags)
    {
        int status = Libc.StatusFlags(fd);
        if (status < 0)
        {
            throw new VmConfigException($"{field}: {path}: no file was handed over on fd {fd}");
        }
        if ((flags & 3) == Libc.O_RDWR && (status & 3) != Libc.O_RDWR)
        {
            throw new VmConfigException($"{field}: {path} was handed over read-only, and it is to be written");
        }
        if ((flags & 3) == Libc.O_RDONLY && (status & 3) == Libc.O_WRONLY)
        {
            throw new VmConfigException($"{field}: {path} was handed over write-only, and it is to be read");
        }
        int dup = Libc.DupAtOrAbove(fd, 3);
        if (dup < 0)
        {
            throw new VmConfigException($"{field}: cannot take {path}: {Libc.StrError(Libc.LastErrno)}");
        }
        var file = new SafeFileHandle(dup, ownsHandle: true);
        if ((flags & Libc.O_DIRECT) != 0 && (status & Libc.O_DIRECT) == 0 && Libc.SetStatusFlags(dup, status | Libc.O_DIRECT) < 0)
        {
            int errno = Libc.LastErrno;
            file.Dispose();
            throw new VmConfigException($"{field}: {path} cannot be read with O_DIRECT: {Libc.StrError(errno)}");
        }
        return file;
    }

    private const int EISDIR = 21;
    private const string RegularFile = "a regular file", RegularOrBlock = "a regular file or block device";

    private static Image OpenImage(string path, string field, ulong limit, ulong ram)
    {
        var file = OpenChecked(path, field, Libc.O_RDONLY, RegularFile);
        try
        {
            var stat = Libc.StatOf((int)file.DangerousGetHandle());
            if (stat.Kind != FileKind.Regular)
            {
                throw new VmConfigException($"{field}: {path} is {stat.Described}, not {RegularFile}");
            }
            if ((ulong)stat.Size > limit)
            {
                throw new VmConfigException(limit < ram
                    ? $"{field}: {path} is {Mib(stat.Size)} MiB; at most {Mib((long)limit)} MiB can be loaded"
                    : $"{field}: {path} is {Mib(stat.Size)} MiB, larger than the guest's RAM ({Mib((long)ram)} MiB)");
            }
            return new Image(file, path, field, stat.Size);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Exactly the size fstat gave at open: a file that grows meanwhile cannot make us read more,
    /// and one that shrank is refused.
    /// </summary>
    private static MappedBuffer Read(Image image)
    {
        var bytes = new MappedBuffer((int)image.Size);
        try
        {
            int n;
            bool added = false;
            try
            {
                image.File.DangerousAddRef(ref added);
                n = Libc.PreadFully((int)image.File.DangerousGetHandle(), bytes.GetSpan(), 0);
            }
            catch (SysError e)
            {
                throw new VmConfigException($"{image.Field}: cannot read {image.Path}: {Libc.StrError(e.Errno)}");
            }
            finally
            {
                if (added)
                {
                    image.File.DangerousRelease();
                }
            }
            if (n != image.Size)
            {
                throw new VmConfigException($"{image.Field}: {image.Path} shrank from {image.Size} to {n} bytes while it was read");
            }
            return bytes;
        }
        catch
        {
            ((IDisposable)bytes).Dispose();
            throw;
        }
    }

    private static SafeFileHandle OpenDisk(string path, bool readOnly, bool direct)
    {
        var file = OpenChecked(path, "disk", (readOnly ? Libc.O_RDONLY : Libc.O_RDWR) | (direct ? Libc.O_DIRECT : 0), RegularOrBlock);
        try
        {
            int fd = (int)file.DangerousGetHandle();
            var stat = Libc.StatOf(fd);
            if (stat.Kind is not (FileKind.Regular or FileKind.BlockDevice))
            {
                throw new VmConfigException($"disk: {path} is {stat.Described}, not {RegularOrBlock}");
            }
            Libc.ClearNonBlocking(fd); // it was only there so that the open could not block
            return file;
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>TUNSETIFF needs CAP_NET_ADMIN or the TAP's owner: done once, here, with the other opens.</summary>
    private static FileDescriptor OpenTap(string name)
    {
        try
        {
            return InheritedFd(name) is int fd
                ? Tun.AdoptTap(fd, Virtio.Net.VirtioNet.HeaderSize)
                : Tun.OpenTap(name, Virtio.Net.VirtioNet.HeaderSize);
        }
        catch (Exception e) when (e is SysError or IOException or UnauthorizedAccessException or ArgumentException)
        {
            throw new VmConfigException($"net: {e.Message}");
        }
    }

    private static long Mib(long bytes) => bytes >> 20;
}
