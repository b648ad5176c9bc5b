namespace Vireo.Virtio.Vsock;

/// <summary>`--vsock cid=N,socket=PATH`: the guest's context ID and the host's Unix socket for it.</summary>
public sealed record VsockConfig(ulong Cid, string SocketPath)
{
    /// <summary>Room kept in the path for "_PORT" (up to 4294967295): a guest connecting to a host port reaches PATH_PORT.</summary>
    private const int PortSuffixBytes = 11;

    public static VsockConfig Parse(string text)
    {
        ulong? cid = null;
        string? socket = null;
        foreach (var part in text.Split(','))
        {
            if (part.StartsWith("cid=", StringComparison.Ordinal) && ulong.TryParse(part[4..], out ulong c))
            {
                // 0, 1 and 2 are the hypervisor, the local loopback and the host; 2^32-1 is "any".
                cid = c is >= 3 and < uint.MaxValue ? c : throw new FormatException($"vsock: cid {c} is reserved; use 3 or more");
            }
            else if (part.StartsWith("socket=", StringComparison.Ordinal) && part.Length > 7)
            {
                socket = Interop.UnixSocket.PathFits(part[7..], PortSuffixBytes) ? part[7..]
                    : throw new FormatException($"vsock: socket=PATH is at most {Interop.UnixSocket.MaxPathBytes - PortSuffixBytes} bytes, so that PATH_PORT fits a Unix socket address");
            }
            else
            {
                throw new FormatException($"vsock: unknown option '{part}' (known: cid=N, socket=PATH)");
            }
        }
        return new VsockConfig(cid ?? throw new FormatException("vsock: cid=N is required"),
            socket ?? throw new FormatException("vsock: socket=PATH is required"));
    }
}
