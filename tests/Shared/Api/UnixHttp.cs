using Vireo.Api;

namespace Vireo.Tests;

/// <summary>
/// The test side of <see cref="UnixSocketHttp"/>: waiting for a server's socket, then a client
/// on it. Apart from tests/Shared/*.cs because only the projects that reach Vireo.Api use it.
/// </summary>
public static class UnixHttp
{
    public static HttpClient Client(string socketPath) => UnixSocketHttp.Client(socketPath, TimeSpan.FromSeconds(100));

    /// <summary>
    /// Waits until a server accepts connections on <paramref name="path"/>, failing early if
    /// <paramref name="gaveUp"/> says so.
    /// </summary>
    public static void WaitForSocket(string path, Func<bool> gaveUp, Func<string> why, int seconds = 30)
    {
        var deadline = DateTime.UtcNow.AddSeconds(seconds);
        while (!UnixSocketHttp.Accepts(path))
        {
            if (DateTime.UtcNow > deadline || gaveUp())
            {
                Assert.Fail($"{path} did not appear: {why()}");
            }
            Thread.Sleep(20);
        }
    }
}
