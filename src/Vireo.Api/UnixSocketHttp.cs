using System.Net.Sockets;

namespace Vireo.Api;

/// <summary>HTTP over a Unix socket, as every Vireo API is served: the CLI to vireod, vireod to each vireo-vmm.</summary>
public static class UnixSocketHttp
{
    /// <summary>An HttpClient whose every connection goes to <paramref name="socketPath"/>.</summary>
    public static HttpClient Client(string socketPath, TimeSpan timeout) => new(new SocketsHttpHandler
    {
        ConnectCallback = async (_, ct) =>
        {
            var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                await s.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), ct);
            }
            catch
            {
                s.Dispose();
                throw;
            }
            return new NetworkStream(s, ownsSocket: true);
        },
    })
    { BaseAddress = new Uri("http://localhost/"), Timeout = timeout };

    /// <summary>True once a server accepts connections on the socket (the file appears at bind, a moment before listen).</summary>
    public static bool Accepts(string path)
    {
        using var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            s.Connect(new UnixDomainSocketEndPoint(path));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
