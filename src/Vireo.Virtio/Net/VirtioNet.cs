using System.Buffers.Binary;
using Vireo.Virtio.Queue;

namespace Vireo.Virtio.Net;

/// <summary>
/// virtio-net (§5.1) with one queue pair: queue 0 receives, queue 1 transmits. Every packet
/// carries the 12-byte virtio_net_hdr_v1; with a TAP backend it passes through to the kernel
/// (offloads), with a plain backend it is stripped on transmit and zeroed on receive.
/// A frame that arrives while the guest has posted no receive buffer waits in the backend until
/// the guest posts one (the receive queue's notification drains it).
/// </summary>
public sealed class VirtioNet : VirtioDevice, IDisposable
{
    public const int FeatureCsum = 0, FeatureGuestCsum = 1, FeatureGuestTso4 = 7, FeatureGuestTso6 = 8,
        FeatureHostTso4 = 11, FeatureHostTso6 = 12, FeatureMac = 5, FeatureStatus = 16;
    public const int HeaderSize = 12;
    private const int ReceiveQueue = 0, TransmitQueue = 1;
    private const int MaxPacket = HeaderSize + 65536;

    private readonly INetBackend _backend;
    private readonly byte[] _txBuffer = new byte[MaxPacket];
    private readonly byte[] _rxBuffer = new byte[MaxPacket];
    private int _pendingLength;
    private int _blockedTxLength;     // a packet the backend had no room for, still in _txBuffer
    private ushort _blockedTxHead;
    private bool _watchingWritable;
    private readonly Action<SplitQueue> _deliver, _transmit;   // made once: the backend wakes the loop per burst of frames

    public NetConfig Config { get; }

    /// <summary>Set by the VMM: asks the event loop to report (or stop reporting) when the backend can take more.</summary>
    public Action<bool>? WatchWritable { get; set; }
    public long FramesSent { get; private set; }
    public long FramesReceived { get; private set; }
    public long FramesDropped { get; private set; }

    public static ulong Bit(int feature) => 1UL << feature;

    public VirtioNet(NetConfig config, INetBackend backend)
    {
        Config = config;
        _backend = backend;
        _deliver = Deliver;
        _transmit = Transmit;
    }

    /// <summary>The backend's fd, for the event loop.</summary>
    public int BackendFd => _backend.Fd;

    public override uint DeviceType => VirtioConstants.DeviceNet;
    protected override ulong DeviceFeatures => Bit(FeatureMac) | Bit(FeatureStatus) | _backend.OffloadFeatures;
    public override int QueueCount => 2;

    public override void ReadConfig(ulong offset, Span<byte> data)
    {
        Span<byte> config = stackalloc byte[10];
        Config.Mac.CopyTo(config);
        BinaryPrimitives.WriteUInt16LittleEndian(config[6..], 1); // VIRTIO_NET_S_LINK_UP
        BinaryPrimitives.WriteUInt16LittleEndian(config[8..], 1); // max_virtqueue_pairs
        ReadFrom(config, offset, data);
    }

    protected override void OnActivated() => _backend.SetOffloads(AckedFeatures);

    protected override void OnReset()
    {
        _pendingLength = 0;
        _blockedTxLength = 0;
        SetWatchWritable(false);
    }

    /// <summary>
    /// A packet the backend had no room for is given back to the guest as sent (and counted as
    /// dropped: the network may lose a frame, a snapshot may not keep a chain half-done); a frame
    /// read but not delivered is dropped the same way.
    /// </summary>
    public override void Settle()
    {
        WithQueue(TransmitQueue, queue =>
        {
            if (_blockedTxLength > 0)
            {
                queue.AddUsed(_blockedTxHead, 0);
                _blockedTxLength = 0;
                FramesDropped++;
                SetWatchWritable(false);
            }
        });
        if (_pendingLength > 0)
        {
            _pendingLength = 0;
            FramesDropped++;
        }
    }

    /// <summary>The backend is readable or writable again: deliver frames, resume a paused transmit queue.</summary>
    public void OnBackendReady()
    {
        WithQueue(ReceiveQueue, _deliver);
        WithQueue(TransmitQueue, _transmit);
    }


    protected override void ProcessQueue(int index, SplitQueue queue)
    {
        if (index == ReceiveQueue)
        {
            Deliver(queue);
            return;
        }
        Transmit(queue);
    }

    /// <summary>
    /// Sends until the ring is empty or the backend is full. A packet the backend refuses stays
    /// in hand (its chain not yet returned), and the queue pauses until the backend has room:
    /// back-pressure instead of loss. While it works, and while it is paused, the device asks the
    /// driver not to notify: a kick is a VM exit, and the device will look at the ring anyway.
    /// </summary>
    private void Transmit(SplitQueue queue)
    {
        queue.SetNotification(false);
        if (_blockedTxLength > 0)
        {
            if (!SendPacket(_blockedTxLength))
            {
                return;
            }
            queue.AddUsed(_blockedTxHead, 0);
            _blockedTxLength = 0;
        }
        while (true)
        {
            QueueError error;
            while (queue.TryPop(out var chain, out error))
            {
                int n = ChainIo.Read(Memory!, chain.Buffers, 0, _txBuffer);
                if (n < HeaderSize)
                {
                    Fail("transmitted packet shorter than its virtio-net header");
                    return;
                }
                if (!SendPacket(n))
                {
                    (_blockedTxHead, _blockedTxLength) = (chain.Head, n);
                    SetWatchWritable(true);
                    // Room may have appeared before the watch was armed: try once more now.
                    if (!SendPacket(n))
                    {
                        return;
                    }
                    _blockedTxLength = 0;
                }
                queue.AddUsed(chain.Head, 0);
            }
            if (error != QueueError.None)
            {
                Fail(error.ToString());
                return;
            }
            // Drained: stop watching for room (kept on until now, so that a sender that keeps
            // filling the peer does not pay two epoll_ctl calls per packet).
            SetWatchWritable(false);
            queue.SetNotification(true);
            if (!queue.HasAvailable)
            {
                return;
            }
            queue.SetNotification(false);
        }
    }

    private void SetWatchWritable(bool on)
    {
        if (_watchingWritable != on)
        {
            _watchingWritable = on;
            WatchWritable?.Invoke(on);
        }
    }

    private bool SendPacket(int length)
    {
        bool sent = _backend.HasVnetHeader
            ? _backend.Send(_txBuffer.AsSpan(0, length))
            : _backend.Send(_txBuffer.AsSpan(HeaderSize, length - HeaderSize));
        if (sent)
        {
            FramesSent++;
        }
        return sent;
    }

    private void Deliver(SplitQueue queue)
    {
        while (true)
        {
            if (_pendingLength == 0)
            {
                _pendingLength = ReceivePacket();
                if (_pendingLength == 0)
                {
                    return; // the backend is drained
                }
            }
            if (!queue.TryPop(out var chain, out var error))
            {
                if (error != QueueError.None)
                {
                    Fail(error.ToString());
                    return;
                }
                // No receive buffer: the frame waits, and the driver's next post must notify.
                queue.SetNotification(true);
                if (!queue.HasAvailable)
                {
                    return;
                }
                continue;
            }
            // While buffers are posted, new ones need no notification: frames arriving pull them.
            queue.SetNotification(false);
            if (chain.WritableLength < (ulong)_pendingLength)
            {
                FramesDropped++; // the guest's buffer is too small for this frame
                queue.AddUsed(chain.Head, 0);
            }
            else
            {
                ChainIo.Write(Memory!, chain.Buffers, 0, _rxBuffer.AsSpan(0, _pendingLength));
                queue.AddUsed(chain.Head, (uint)_pendingLength);
                FramesReceived++;
            }
            _pendingLength = 0;
        }
    }

    /// <summary>One packet from the backend, with a virtio-net header in front; 0 when none waits.</summary>
    private int ReceivePacket()
    {
        if (_backend.HasVnetHeader)
        {
            int n = _backend.Receive(_rxBuffer);
            BinaryPrimitives.WriteUInt16LittleEndian(_rxBuffer.AsSpan(10), 1); // num_buffers
            return n;
        }
        int frame = _backend.Receive(_rxBuffer.AsSpan(HeaderSize));
        if (frame == 0)
        {
            return 0;
        }
        _rxBuffer.AsSpan(0, HeaderSize).Clear();
        BinaryPrimitives.WriteUInt16LittleEndian(_rxBuffer.AsSpan(10), 1);
        return HeaderSize + frame;
    }

    public void Dispose() => _backend.Dispose();
}
