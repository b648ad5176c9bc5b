using System.Net.Sockets;

namespace Vireo.Tests;

/// <summary>An HttpClient whose every connection goes to one Unix socket (Vireo's APIs listen on those).</summary>
public static class UnixHttp
{
    public static HttpClient Client(string socketPath) => new(new SocketsHttpHandler
    {
        ConnectCallback = async (_, ct) =>
        {
            var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            await s.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), ct);
            return new NetworkStream(s, ownsSocket: true);
        },
    })
    { BaseAddress = new Uri("http://vireo/") };

    /// <summary>
    /// Waits until a server accepts connections on <paramref name="path"/> (the file appears at
    /// bind, a moment before listen), failing early if <paramref name="gaveUp"/> says so.
    /// </summary>
    public static void WaitForSocket(string path, Func<bool> gaveUp, Func<string> why, int seconds = 30)
    {
        var deadline = DateTime.UtcNow.AddSeconds(seconds);
        while (!Accepts(path))
        {
            if (DateTime.UtcNow > deadline || gaveUp())
            {
                Assert.Fail($"{path} did not appear: {why()}");
            }
            Thread.Sleep(20);
        }
    }

    private static bool Accepts(string path)
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
