using System.Runtime.InteropServices;
using Vireo.Interop;

namespace Vireo.Virtio.Net;

/// <summary>
/// A TAP device opened with IFF_VNET_HDR, so checksum and segmentation offloads pass between the
/// guest and the host kernel instead of being done in software. Offloads are switched on only
/// for what the guest acked (TUNSETOFFLOAD), so the kernel never sends it a packet it cannot take.
/// </summary>
public sealed class TapBackend : INetBackend
{
    private readonly FileDescriptor _fd;

    public string Name { get; }

    public TapBackend(string name) : this(name, Tun.OpenTap(name, VirtioNet.HeaderSize))
    {
    }

    /// <summary>Over a TAP opened already (with IFF_VNET_HDR of <see cref="VirtioNet.HeaderSize"/>), which this backend then owns.</summary>
    public TapBackend(string name, FileDescriptor fd)
    {
        Name = name;
        _fd = fd;
        try
        {
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
            flags |= Tun.TUN_F_CSUM;
            if ((acked & VirtioNet.Bit(VirtioNet.FeatureGuestTso4)) != 0)
            {
                flags |= Tun.TUN_F_TSO4;
            }
            if ((acked & VirtioNet.Bit(VirtioNet.FeatureGuestTso6)) != 0)
            {
                flags |= Tun.TUN_F_TSO6;
            }
        }
        Tun.SetOffload(_fd, flags);
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
        // A TAP write fails only for a malformed packet or a down interface (the frame is
        // dropped), or with EAGAIN when the device queue is full (wait for room).
        nint n = Libc.Write(_fd.Fd, packet);
        return n >= 0 || Libc.LastErrno != Libc.EAGAIN;
    }

    public void Dispose() => _fd.Dispose();
}
