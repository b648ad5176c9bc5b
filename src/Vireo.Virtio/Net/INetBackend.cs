namespace Vireo.Virtio.Net;

/// <summary>Where a virtio-net device's frames go and come from.</summary>
public interface INetBackend : IDisposable
{
    /// <summary>A file descriptor that is readable when frames wait (watched edge-triggered).</summary>
    int Fd { get; }

    /// <summary>True when packets carry the 12-byte virtio_net_hdr_v1 in front of the frame (TAP with IFF_VNET_HDR).</summary>
    bool HasVnetHeader { get; }

    /// <summary>The virtio-net offload features this backend can honour.</summary>
    ulong OffloadFeatures { get; }

    /// <summary>Applies what the guest acked, so the backend sends only what the guest can take.</summary>
    void SetOffloads(ulong ackedFeatures);

    /// <summary>Reads one packet; 0 when none waits.</summary>
    int Receive(Span<byte> packet);

    /// <summary>
    /// Sends one packet. False when the backend is full: the caller keeps the packet and retries
    /// when <see cref="Fd"/> turns writable. A peer that is not there drops it, as an unplugged cable would.
    /// </summary>
    bool Send(ReadOnlySpan<byte> packet);
}
