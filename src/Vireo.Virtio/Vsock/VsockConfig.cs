namespace Vireo.Virtio.Vsock;

/// <summary>`--vsock cid=N,socket=PATH`: the guest's context ID and the host's Unix socket for it.</summary>
public sealed record VsockConfig(ulong Cid, string SocketPath)
{
    /// <summary>Room kept in the path for "_PORT" (up to 4294967295): a guest connecting to a host port reaches PATH_PORT.</summary>
    private const int PortSuffixBytes = 11;

    /// <summary>Why <paramref name="cid"/> cannot be a guest's context ID (words after it), or null. `vireo run` and the API both ask.</summary>
    public static string? CidProblem(ulong cid) =>
        // 0, 1 and 2 are the hypervisor, the local loopback and the host; 2^32-1 is "any"; a CID is 32 bits.
        cid < 3 ? "is reserved; use 3 or more"
        : cid >= uint.MaxValue ? $"is out of range; at most {uint.MaxValue - 1}"
        : null;

    /// <summary>Why <paramref name="path"/> cannot be the host's vsock socket (words after its name), or null.</summary>
    public static string? SocketProblem(string path) =>
        path.Length == 0 ? "is empty"
        : Interop.UnixSocket.PathFits(path, PortSuffixBytes) ? null
        : $"is at most {Interop.UnixSocket.MaxPathBytes - PortSuffixBytes} bytes, so that PATH_PORT fits a Unix socket address";

    public static VsockConfig Parse(string text)
    {
        ulong? cid = null;
        string? socket = null;
        foreach (var part in text.Split(','))
        {
            if (part.StartsWith("cid=", StringComparison.Ordinal) && ulong.TryParse(part[4..], out ulong c))
            {
                cid = CidProblem(c) is { } problem ? throw new FormatException($"vsock: cid {c} {problem}") : c;
            }
            else if (part.StartsWith("socket=", StringComparison.Ordinal) && part.Length > 7)
            {
                socket = SocketProblem(part[7..]) is { } problem ? throw new FormatException($"vsock: socket=PATH {problem}") : part[7..];
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
