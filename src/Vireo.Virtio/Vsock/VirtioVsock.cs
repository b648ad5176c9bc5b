using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using Vireo.Devices;
using Vireo.Virtio.Queue;

namespace Vireo.Virtio.Vsock;

/// <summary>
/// virtio-vsock (§5.10) in userspace, host side on Unix sockets as in Firecracker's hybrid model.
/// A host program connects to the device's socket and writes "CONNECT port\n"; once the guest
/// accepts, it reads "OK hostport\n" and the stream is the guest's. A guest connecting to host
/// port P reaches the Unix socket "SOCKET_P". Stream data respects each side's credit.
/// </summary>
public sealed class VirtioVsock : VirtioDevice, IDisposable
{
    public const ulong HostCid = 2;
    private const int HeaderSize = 44, BufAlloc = 256 * 1024, MaxPayload = 64 * 1024;
    private const uint ShutdownReceive = 1, ShutdownSend = 2;
    private const ushort TypeStream = 1;
    private const ushort OpRequest = 1, OpResponse = 2, OpRst = 3, OpShutdown = 4, OpRw = 5, OpCreditUpdate = 6, OpCreditRequest = 7;
    private const int RxQueue = 0, TxQueue = 1, EventQueue = 2;
    private const uint EventTransportReset = 0; // VIRTIO_VSOCK_EVENT_TRANSPORT_RESET
    private bool _transportReset; // a reset owed to the driver (under the device's lock)

    private sealed class Connection(Socket socket, uint hostPort, uint guestPort)
    {
        public Socket Socket { get; } = socket;
        public uint HostPort { get; set; } = hostPort;
        public uint GuestPort { get; set; } = guestPort;
        public bool AwaitingConnectLine { get; set; }
        public bool Established { get; set; }
        public bool Closed { get; set; }
        public StringBuilder ConnectLine { get; } = new();
        public uint PeerBufAlloc { get; set; }
        public uint PeerFwdCnt { get; set; }
        public uint TxCnt { get; set; }
        public uint FwdCnt { get; set; }
        public uint AdvertisedFwdCnt { get; set; }
        /// <summary>VIRTIO_VSOCK_SHUTDOWN_* flags the guest sent: it receives (1) or sends (2) no more.</summary>
        public uint GuestShutdown { get; set; }

        public uint PeerFree => PeerBufAlloc - (TxCnt - PeerFwdCnt);
    }

    private readonly List<Connection> _connections = [];
    private readonly Queue<byte[]> _control = new(); // control packets waiting for rx buffers
    private readonly byte[] _packet = new byte[HeaderSize + MaxPayload];
    private readonly Action<SplitQueue> _pump;   // made once: sockets wake the loop often
    private Socket? _listener;
    private IFdWatcher? _watcher;
    private uint _nextHostPort = 1u << 30;

    public VsockConfig Config { get; }

    public VirtioVsock(VsockConfig config)
    {
        Config = config;
        _pump = Pump;
        Interop.Libc.RemoveStaleSocket(config.SocketPath); // a stale socket from an earlier run; never a file
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _listener.Bind(new UnixDomainSocketEndPoint(config.SocketPath));
        _listener.Listen(16);
        _listener.Blocking = false;
    }

    public override uint DeviceType => VirtioConstants.DeviceVsock;
    protected override ulong DeviceFeatures => 0;
    public override int QueueCount => 3;

    /// <summary>Starts accepting host connections on the VM's event loop.</summary>
    public void Start(IFdWatcher watcher)
    {
        _watcher = watcher;
        watcher.Watch((int)_listener!.Handle, Accept);
    }

    public override void ReadConfig(ulong offset, Span<byte> data)
    {
        Span<byte> config = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(config, Config.Cid);
        ReadFrom(config, offset, data);
    }

    /// <summary>
    /// The guest forgot its connections: close those it knew of. A host client still waiting to
    /// send its CONNECT line keeps its socket; drivers reset the device while they start, and a
    /// host program that connected early must not lose out.
    /// </summary>
    protected override void OnReset()
    {
        foreach (var c in Snapshot())
        {
            if (!c.AwaitingConnectLine)
            {
                Close(c);
            }
        }
        _control.Clear();
        _transportReset = false; // a driver starting afresh has no connections to reset
    }

    private void Accept()
    {
        while (true)
        {
            Socket client;
            try
            {
                client = _listener!.Accept();
            }
            catch (SocketException)
            {
                return; // nothing more to accept
            }
            client.Blocking = false;
            var c = new Connection(client, 0, 0) { AwaitingConnectLine = true };
            lock (_connections)
            {
                _connections.Add(c); // before the driver is up too: Pump reads the CONNECT line later
            }
            _watcher!.Watch((int)client.Handle, () => WithQueue(RxQueue, _pump));
        }
    }

    protected override void ProcessQueue(int index, SplitQueue queue)
    {
        if (index == TxQueue)
        {
            QueueError error;
            while (queue.TryPop(out var chain, out error))
            {
                int n = ChainIo.Read(Memory!, chain.Buffers, 0, _packet);
                if (n < HeaderSize)
                {
                    Fail("packet shorter than the 44-byte vsock header");
                    return;
                }
                HandleGuestPacket(_packet.AsSpan(0, n));
                queue.AddUsed(chain.Head, 0);
            }
            if (error != QueueError.None)
            {
                Fail(error.ToString());
                return;
            }
            WithQueue(RxQueue, _pump);
        }
        else if (index == RxQueue)
        {
            Pump(queue);
        }
        else if (index == EventQueue && _transportReset)
        {
            // The event queue carries only transport resets: after a restore or a migration, the
            // host ends of the guest's connections stayed with the old process. The driver resets
            // every connection it has and reads its CID again, as Firecracker's guests do.
            if (queue.TryPop(out var chain, out var error))
            {
                Span<byte> ev = stackalloc byte[4];
                BinaryPrimitives.WriteUInt32LittleEndian(ev, EventTransportReset);
                queue.AddUsed(chain.Head, (uint)ChainIo.Write(Memory!, chain.Buffers, 0, ev));
                _transportReset = false;
            }
            else if (error != QueueError.None)
            {
                Fail(error.ToString());
            }
            // no buffer yet: the reset goes out when the driver gives one (its notification comes here)
        }
    }

    protected override void OnRestored() => _transportReset = true;

    private void HandleGuestPacket(ReadOnlySpan<byte> p)
    {
        ulong src = BinaryPrimitives.ReadUInt64LittleEndian(p), dst = BinaryPrimitives.ReadUInt64LittleEndian(p[8..]);
        uint srcPort = BinaryPrimitives.ReadUInt32LittleEndian(p[16..]), dstPort = BinaryPrimitives.ReadUInt32LittleEndian(p[20..]);
        uint len = BinaryPrimitives.ReadUInt32LittleEndian(p[24..]);
        ushort type = BinaryPrimitives.ReadUInt16LittleEndian(p[28..]), op = BinaryPrimitives.ReadUInt16LittleEndian(p[30..]);
        var payload = p[HeaderSize..];
        if (src != Config.Cid || dst != HostCid || type != TypeStream || len > (uint)payload.Length)
        {
            Control(dstPort, srcPort, OpRst, 0);  // not a stream to the host from this guest
            return;
        }
        payload = payload[..(int)len];
        var c = Array.Find(Snapshot(), x => !x.AwaitingConnectLine && x.HostPort == dstPort && x.GuestPort == srcPort);
        if (c is not null)
        {
            c.PeerBufAlloc = BinaryPrimitives.ReadUInt32LittleEndian(p[36..]);
            c.PeerFwdCnt = BinaryPrimitives.ReadUInt32LittleEndian(p[40..]);
        }
        switch (op)
        {
            case OpRequest when c is null:
                ConnectToHost(srcPort, dstPort, BinaryPrimitives.ReadUInt32LittleEndian(p[36..]), BinaryPrimitives.ReadUInt32LittleEndian(p[40..]));
                break;
            case OpResponse when c is { Established: false }:
                c.Established = true;
                SendToHost(c, Encoding.ASCII.GetBytes($"OK {c.HostPort}\n"));
                break;
            case OpRw when c is { Established: true }:
                SendToHost(c, payload);
                c.FwdCnt += len;
                if (c.FwdCnt - c.AdvertisedFwdCnt >= BufAlloc / 2)
                {
                    Control(c, OpCreditUpdate);
                }
                break;
            case OpCreditUpdate when c is not null:
                break; // the credit was read above; Pump sends what it now allows
            case OpCreditRequest when c is not null:
                Control(c, OpCreditUpdate);
                break;
            case OpShutdown when c is not null:
                // A half-close passes through to the host socket; once both directions are shut
                // (or the host had already closed its end) the connection ends.
                // Flags 0 names no direction; it is taken as both, so a sloppy driver cannot leak the connection.
                uint how = BinaryPrimitives.ReadUInt32LittleEndian(p[32..]) & (ShutdownReceive | ShutdownSend);
                c.GuestShutdown |= how == 0 ? ShutdownReceive | ShutdownSend : how;
                if ((c.GuestShutdown & ShutdownSend) != 0)
                {
                    try
                    {
                        c.Socket.Shutdown(SocketShutdown.Send);
                    }
                    catch (SocketException)
                    {
                        // already gone: the readiness event closes it
                    }
                }
                if (c.GuestShutdown == (ShutdownReceive | ShutdownSend) || !c.Established)
                {
                    Control(c, OpRst);
                    Close(c);
                }
                break;
            case OpRst when c is not null:
                Close(c);
                break;
            default:
                if (op != OpRst)
                {
                    Control(dstPort, srcPort, OpRst, 0);
                }
                break;
        }
    }

    /// <summary>The guest connects to host port <paramref name="port"/>: the Unix socket "SOCKET_port".</summary>
    private void ConnectToHost(uint guestPort, uint port, uint peerBufAlloc, uint peerFwdCnt)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            socket.Connect(new UnixDomainSocketEndPoint($"{Config.SocketPath}_{port}"));
        }
        catch (SocketException)
        {
            socket.Dispose();
            Control(port, guestPort, OpRst, 0);
            return;
        }
        socket.Blocking = false;
        var c = new Connection(socket, port, guestPort) { Established = true, PeerBufAlloc = peerBufAlloc, PeerFwdCnt = peerFwdCnt };
        lock (_connections)
        {
            _connections.Add(c);
        }
        _watcher?.Watch((int)socket.Handle, () => WithQueue(RxQueue, _pump));
        Control(c, OpResponse);
    }

    private static void SendToHost(Connection c, ReadOnlySpan<byte> data)
    {
        try
        {
            // The host reader is trusted to keep up; a full socket buffer waits here.
            c.Socket.Blocking = true;
            while (data.Length > 0)
            {
                int n = c.Socket.Send(data);
                data = data[n..];
            }
        }
        catch (SocketException)
        {
            // The host end went away: its own readiness event closes the connection.
        }
        finally
        {
            c.Socket.Blocking = false;
        }
    }

    /// <summary>Moves host-side events into the guest: CONNECT lines, stream data within credit, EOF, and queued control packets.</summary>
    private void Pump(SplitQueue rx)
    {
        foreach (var c in Snapshot())
        {
            if (c.AwaitingConnectLine)
            {
                ReadConnectLine(c);
            }
        }
        while (_control.Count > 0)
        {
            if (!rx.TryPop(out var chain, out var error))
            {
                if (error != QueueError.None)
                {
                    Fail(error.ToString());
                }
                return;
            }
            var packet = _control.Dequeue();
            ChainIo.Write(Memory!, chain.Buffers, 0, packet);
            rx.AddUsed(chain.Head, (uint)packet.Length);
        }
        foreach (var c in Snapshot())
        {
            while (c.Established && !c.Closed)
            {
                int available = c.Socket.Available;
                if (available == 0)
                {
                    // Readable is asked first and Available again after: data that lands between
                    // the two questions is not taken for the host's close.
                    bool readable = c.Socket.Poll(0, SelectMode.SelectRead);
                    if (readable && c.Socket.Available > 0)
                    {
                        continue;
                    }
                    if (readable)
                    {
                        // Readable with nothing to read: the host closed its end.
                        if (!TryDeliver(rx, c, OpShutdown, 3, ReadOnlySpan<byte>.Empty))
                        {
                            return;
                        }
                        c.Established = false;
                    }
                    break;
                }
                uint credit = c.PeerFree;
                if (credit == 0)
                {
                    break; // the guest has not consumed what it was sent: wait for a credit update
                }
                if (!rx.TryPop(out var chain, out var error))
                {
                    if (error != QueueError.None)
                    {
                        Fail(error.ToString());
                    }
                    return;
                }
                int room = (int)Math.Min(Math.Min((ulong)available, credit), Math.Min(chain.WritableLength - HeaderSize, MaxPayload));
                int n = room > 0 ? c.Socket.Receive(_packet.AsSpan(HeaderSize, room)) : 0;
                WriteHeader(_packet, c.HostPort, c.GuestPort, (uint)n, OpRw, 0, c.FwdCnt);
                ChainIo.Write(Memory!, chain.Buffers, 0, _packet.AsSpan(0, HeaderSize + n));
                rx.AddUsed(chain.Head, (uint)(HeaderSize + n));
                c.TxCnt += (uint)n;
            }
        }
    }

    private bool TryDeliver(SplitQueue rx, Connection c, ushort op, uint flags, ReadOnlySpan<byte> payload)
    {
        if (!rx.TryPop(out var chain, out var error))
        {
            if (error != QueueError.None)
            {
                Fail(error.ToString());
            }
            return false;
        }
        WriteHeader(_packet, c.HostPort, c.GuestPort, (uint)payload.Length, op, flags, c.FwdCnt);
        payload.CopyTo(_packet.AsSpan(HeaderSize));
        ChainIo.Write(Memory!, chain.Buffers, 0, _packet.AsSpan(0, HeaderSize + payload.Length));
        rx.AddUsed(chain.Head, (uint)(HeaderSize + payload.Length));
        return true;
    }

    private void ReadConnectLine(Connection c)
    {
        Span<byte> one = stackalloc byte[1];
        while (true)
        {
            int n;
            try
            {
                n = c.Socket.Receive(one);
            }
            catch (SocketException)
            {
                return; // nothing more yet
            }
            if (n == 0 || c.ConnectLine.Length > 32)
            {
                Close(c); // closed, or not a CONNECT line
                return;
            }
            if (one[0] != '\n')
            {
                c.ConnectLine.Append((char)one[0]);
                continue;
            }
            string line = c.ConnectLine.ToString().Trim();
            if (!line.StartsWith("CONNECT ", StringComparison.Ordinal) || !uint.TryParse(line[8..], out uint port))
            {
                Close(c);
                return;
            }
            c.AwaitingConnectLine = false;
            c.HostPort = _nextHostPort++;
            c.GuestPort = port;
            Control(c, OpRequest);
            return;
        }
    }

    private void Control(Connection c, ushort op)
    {
        if (op == OpCreditUpdate)
        {
            c.AdvertisedFwdCnt = c.FwdCnt;
        }
        Control(c.HostPort, c.GuestPort, op, c.FwdCnt);
    }

    /// <summary>Queues a header-only packet from host port <paramref name="hostPort"/> to guest port <paramref name="guestPort"/>.</summary>
    private void Control(uint hostPort, uint guestPort, ushort op, uint fwdCnt)
    {
        var packet = new byte[HeaderSize];
        WriteHeader(packet, hostPort, guestPort, 0, op, 0, fwdCnt);
        _control.Enqueue(packet);
    }

    private void WriteHeader(Span<byte> p, uint hostPort, uint guestPort, uint len, ushort op, uint flags, uint fwdCnt)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(p, HostCid);
        BinaryPrimitives.WriteUInt64LittleEndian(p[8..], Config.Cid);
        BinaryPrimitives.WriteUInt32LittleEndian(p[16..], hostPort);
        BinaryPrimitives.WriteUInt32LittleEndian(p[20..], guestPort);
        BinaryPrimitives.WriteUInt32LittleEndian(p[24..], len);
        BinaryPrimitives.WriteUInt16LittleEndian(p[28..], TypeStream);
        BinaryPrimitives.WriteUInt16LittleEndian(p[30..], op);
        BinaryPrimitives.WriteUInt32LittleEndian(p[32..], flags);
        BinaryPrimitives.WriteUInt32LittleEndian(p[36..], BufAlloc);
        BinaryPrimitives.WriteUInt32LittleEndian(p[40..], fwdCnt);
    }

    private void Close(Connection c)
    {
        if (c.Closed)
        {
            return;
        }
        c.Closed = true;
        _watcher?.Unwatch((int)c.Socket.Handle);
        c.Socket.Dispose();
        lock (_connections)
        {
            _connections.Remove(c);
        }
    }

    /// <summary>The connections now; Accept adds from the event loop while the queues may be busy.</summary>
    private Connection[] Snapshot()
    {
        lock (_connections)
        {
            return _connections.ToArray();
        }
    }

    public void Dispose()
    {
        foreach (var c in Snapshot())
        {
            Close(c);
        }
        if (_listener is not null)
        {
            _watcher?.Unwatch((int)_listener.Handle);
            _listener.Dispose();
            _listener = null;
            File.Delete(Config.SocketPath);
        }
    }
}
