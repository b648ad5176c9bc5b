using Vireo.Interop;

namespace Vireo.Virtio.Net;

/// <summary>
/// Frames as datagrams on a Unix socket, sent to a peer socket: two VMs pointed at each other
/// share a virtual cable, with no root and no host network involved. No offloads: the frames
/// are plain Ethernet. Sends and receives are plain libc calls, so an empty or full socket
/// costs an errno, not an exception.
/// </summary>
public sealed class UnixDatagramBackend : INetBackend
{
    private const int ENOBUFS = 105;
    private readonly FileDescriptor _socket;
    private readonly byte[] _peer;
    private readonly string _path;

    public UnixDatagramBackend(string path, string peer)
    {
        _peer = UnixSocket.Address(peer);
        Libc.RemoveStaleSocket(path); // a stale socket from an earlier run; never a file
        _socket = UnixSocket.BindDatagram(path, 1 << 20);
        _path = path;
    }

    public int Fd => _socket.Fd;
    public bool HasVnetHeader => false;
    public ulong OffloadFeatures => 0;

    public void SetOffloads(ulong ackedFeatures)
    {
    }

    public int Receive(Span<byte> packet)
    {
        nint n = UnixSocket.Receive(_socket.Fd, packet);
        if (n < 0)
        {
            int errno = Libc.LastErrno;
            return errno is Libc.EAGAIN or Libc.EINTR ? 0 : throw new SysError($"recv({_path})", errno);
        }
        return (int)n;
    }

    public bool Send(ReadOnlySpan<byte> packet)
    {
        if (UnixSocket.SendTo(_socket.Fd, packet, _peer) >= 0)
        {
            return true;
        }
        // The peer's queue is full: wait for room. Anything else (no peer yet, a peer gone) loses
        // the frame, as an unplugged wire would.
        return Libc.LastErrno is not (Libc.EAGAIN or ENOBUFS or Libc.EINTR);
    }

    public void Dispose()
    {
        _socket.Dispose();
        File.Delete(_path);
    }
}
