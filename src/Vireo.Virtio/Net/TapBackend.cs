using System.Runtime.InteropServices;
using Vireo.Interop;

namespace Vireo.Virtio.Net;

/// <summary>
/// A TAP device opened with IFF_VNET_HDR, so checksum and segmentation offloads pass between the
/// guest and the host kernel instead of being done in software. Offloads are switched on only
/// for what the guest acked (TUNSETOFFLOAD), so the kernel never sends it a packet it cannot take.
/// </summary>
public sealed unsafe class TapBackend : INetBackend
{
    private const ushort IFF_TAP = 0x0002, IFF_NO_PI = 0x1000, IFF_VNET_HDR = 0x4000;
    private const uint TUN_F_CSUM = 1, TUN_F_TSO4 = 2, TUN_F_TSO6 = 4;
    private static readonly nuint TUNSETIFF = IoctlNumber.IOW('T', 202, sizeof(int));
    private static readonly nuint TUNSETOFFLOAD = IoctlNumber.IOW('T', 208, sizeof(uint));
    private static readonly nuint TUNSETVNETHDRSZ = IoctlNumber.IOW('T', 216, sizeof(int));

    private readonly FileDescriptor _fd;

    public string Name { get; }

    public TapBackend(string name)
    {
        Name = name;
        _fd = FileDescriptor.Open("/dev/net/tun", Libc.O_RDWR | Libc.O_NONBLOCK);
        byte* ifreq = stackalloc byte[40];
        new Span<byte>(ifreq, 40).Clear();
        var bytes = System.Text.Encoding.ASCII.GetBytes(name);
        bytes.CopyTo(new Span<byte>(ifreq, 15));
        *(ushort*)(ifreq + 16) = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        try
        {
            Check.Io(Libc.Ioctl(_fd.Fd, TUNSETIFF, ifreq), $"TUNSETIFF({name})");
            int size = 12;
            Check.Io(Libc.Ioctl(_fd.Fd, TUNSETVNETHDRSZ, &size), "TUNSETVNETHDRSZ");
            SetOffloads(0);
        }
        catch
        {
            _fd.Dispose();
            throw;
        }
    }

    public int Fd => _fd.Fd;
    public bool HasVnetHeader => true;

    public ulong OffloadFeatures =>
        VirtioNet.Bit(VirtioNet.FeatureCsum) | VirtioNet.Bit(VirtioNet.FeatureGuestCsum)
        | VirtioNet.Bit(VirtioNet.FeatureHostTso4) | VirtioNet.Bit(VirtioNet.FeatureHostTso6)
        | VirtioNet.Bit(VirtioNet.FeatureGuestTso4) | VirtioNet.Bit(VirtioNet.FeatureGuestTso6);

    public void SetOffloads(ulong acked)
    {
        // What the kernel may hand the guest: partial checksums and TSO only if the guest takes them.
        uint flags = 0;
        if ((acked & VirtioNet.Bit(VirtioNet.FeatureGuestCsum)) != 0)
        {
            flags |= TUN_F_CSUM;
            if ((acked & VirtioNet.Bit(VirtioNet.FeatureGuestTso4)) != 0)
            {
                flags |= TUN_F_TSO4;
            }
            if ((acked & VirtioNet.Bit(VirtioNet.FeatureGuestTso6)) != 0)
            {
                flags |= TUN_F_TSO6;
            }
        }
        Check.Io(Libc.Ioctl(_fd.Fd, TUNSETOFFLOAD, (nuint)flags), "TUNSETOFFLOAD");
    }

    public int Receive(Span<byte> packet)
    {
        nint n = Libc.Read(_fd.Fd, packet);
        if (n < 0)
        {
            int errno = Libc.LastErrno;
            return errno is Libc.EAGAIN or Libc.EINTR ? 0 : throw new SysError($"read({Name})", errno);
        }
        return (int)n;
    }

    public bool Send(ReadOnlySpan<byte> packet)
    {
        fixed (byte* p = packet)
        {
            // A TAP write fails only for a malformed packet or a down interface (the frame is
            // dropped), or with EAGAIN when the device queue is full (wait for room).
            nint n = Libc.Write(_fd.Fd, p, (nuint)packet.Length);
            return n >= 0 || Libc.LastErrno != Libc.EAGAIN;
        }
    }

    public void Dispose() => _fd.Dispose();
}
