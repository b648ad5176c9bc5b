namespace Vireo.Interop;

/// <summary>The TUN/TAP ioctls of &lt;linux/if_tun.h&gt;: open a TAP with a virtio-net header and set its offloads.</summary>
public static unsafe class Tun
{
    public const ushort IFF_TAP = 0x0002, IFF_NO_PI = 0x1000, IFF_VNET_HDR = 0x4000;
    public const uint TUN_F_CSUM = 1, TUN_F_TSO4 = 2, TUN_F_TSO6 = 4;
    private const int IfReqSize = 40, IfNameSize = 16;
    public static readonly nuint TUNSETIFF = IoctlNumber.IOW('T', 202, sizeof(int));
    public static readonly nuint TUNSETOFFLOAD = IoctlNumber.IOW('T', 208, sizeof(uint));
    public static readonly nuint TUNSETVNETHDRSZ = IoctlNumber.IOW('T', 216, sizeof(int));

    /// <summary>Opens /dev/net/tun non-blocking and attaches it to TAP <paramref name="name"/> with a vnet header of <paramref name="vnetHeaderSize"/> bytes.</summary>
    public static FileDescriptor OpenTap(string name, int vnetHeaderSize)
    {
        if (name.Length is 0 or >= IfNameSize)
        {
            throw new ArgumentException($"TAP name '{name}' must be 1 to {IfNameSize - 1} characters", nameof(name));
        }
        var fd = FileDescriptor.Open("/dev/net/tun", Libc.O_RDWR | Libc.O_NONBLOCK);
        try
        {
            // SAFETY: struct ifreq is 40 bytes: the name (NUL-padded, checked above) then the flags at 16.
            byte* ifreq = stackalloc byte[IfReqSize];
            new Span<byte>(ifreq, IfReqSize).Clear();
            System.Text.Encoding.ASCII.GetBytes(name, new Span<byte>(ifreq, IfNameSize - 1));
            *(ushort*)(ifreq + IfNameSize) = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
            Check.Io(Libc.Ioctl(fd.Fd, TUNSETIFF, ifreq), $"TUNSETIFF({name})");
            Check.Io(Libc.Ioctl(fd.Fd, TUNSETVNETHDRSZ, &vnetHeaderSize), "TUNSETVNETHDRSZ");
            return fd;
        }
        catch
        {
            fd.Dispose();
            throw;
        }
    }

    /// <summary>
    /// A TAP handed over open (by vireod, to a sandboxed VMM that may not open one itself): a dup of
    /// <paramref name="fd"/>, non-blocking, with the vnet header size set, which also proves it is a
    /// TAP (the ioctl fails on anything else).
    /// </summary>
    public static FileDescriptor AdoptTap(int fd, int vnetHeaderSize)
    {
        var dup = new FileDescriptor(Check.Io(Libc.DupAtOrAbove(fd, 3), "fcntl(F_DUPFD_CLOEXEC)"));
        try
        {
            Check.Io(Libc.SetStatusFlags(dup.Fd, Check.Io(Libc.StatusFlags(dup.Fd), "fcntl(F_GETFL)") | Libc.O_NONBLOCK), "fcntl(F_SETFL)");
            Check.Io(Libc.Ioctl(dup.Fd, TUNSETVNETHDRSZ, &vnetHeaderSize), "TUNSETVNETHDRSZ");
            return dup;
        }
        catch
        {
            dup.Dispose();
            throw;
        }
    }

    public static void SetOffload(FileDescriptor tap, uint flags) =>
        Check.Io(Libc.Ioctl(tap.Fd, TUNSETOFFLOAD, (nuint)flags), "TUNSETOFFLOAD");
}
