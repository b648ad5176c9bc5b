using System.Net.Sockets;

namespace Vireo.Virtio.Net;

/// <summary>
/// Frames as datagrams on a Unix socket, sent to a peer socket: two VMs pointed at each other
/// share a virtual cable, with no root and no host network involved. No offloads: the frames
/// are plain Ethernet.
/// </summary>
public sealed class UnixDatagramBackend : INetBackend
{
    private readonly Socket _socket;
    private readonly UnixDomainSocketEndPoint _peer;
    private readonly string _path;

    public UnixDatagramBackend(string path, string peer)
    {
        Interop.Libc.RemoveStaleSocket(path); // a stale socket from an earlier run; never a file
        _path = path;
        _socket = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified) { Blocking = false };
        _socket.Bind(new UnixDomainSocketEndPoint(path));
        _socket.SendBufferSize = 1 << 20;
        _socket.ReceiveBufferSize = 1 << 20;
        _peer = new UnixDomainSocketEndPoint(peer);
    }

    public int Fd => (int)_socket.Handle;
    public bool HasVnetHeader => false;
    public ulong OffloadFeatures => 0;

    public void SetOffloads(ulong ackedFeatures)
    {
    }

    public int Receive(Span<byte> packet)
    {
        try
        {
            return _socket.Receive(packet);
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.WouldBlock)
        {
            return 0;
        }
    }

    public bool Send(ReadOnlySpan<byte> packet)
    {
        try
        {
            _socket.SendTo(packet, SocketFlags.None, _peer);
            return true;
        }
        catch (SocketException e) when (e.SocketErrorCode is SocketError.WouldBlock or SocketError.NoBufferSpaceAvailable)
        {
            return false; // the peer's buffer is full: wait for room
        }
        catch (SocketException)
        {
            return true; // no peer yet: the frame is lost, as on an unplugged wire
        }
    }

    public void Dispose()
    {
        _socket.Dispose();
        File.Delete(_path);
    }
}
