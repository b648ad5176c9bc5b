using Vireo.Tests;

namespace Vireo.VmmServer.Tests;

/// <summary>
/// vireo-vmm given a bad --api-sock: one line naming the option and the problem, exit 2, and
/// nothing that is not a socket is ever deleted; a stale socket alone is replaced.
/// </summary>
public class StartupPathTests
{
    private static TestEnvironment.ProcessResult Vmm(string socket) =>
        TestEnvironment.Run(TestEnvironment.Shipped("vireo-vmm"), $"--api-sock {socket}", timeoutMs: 30_000);

    private static void Refused(string socket, string message)
    {
        var r = Vmm(socket);
        Assert.True(r.ExitCode == 2, $"exit {r.ExitCode}: {r.Error}");
        Assert.Equal($"vireo-vmm: --api-sock {socket} {message}", r.Error.TrimEnd('\n'));
    }

    [Fact]
    public void A_regular_file_at_the_socket_path_is_refused_and_kept()
    {
        string file = Path.Combine(TempDirectory.Create("vmm-sock"), "precious");
        File.WriteAllText(file, "keep me");
        Refused(file, "exists and is not a socket; refusing to replace it");
        Assert.Equal("keep me", File.ReadAllText(file));
    }

    [Fact]
    public void Bad_socket_paths_are_one_line_and_exit_2()
    {
        string dir = TempDirectory.Create("vmm-sock");
        Refused(dir, "is a directory, not a socket");
        Refused("/nonexist/dir/s.sock", "cannot be made: its directory /nonexist/dir does not exist");
        string tooLong = Path.Combine(dir, new string('s', 108 - dir.Length - 1));
        Assert.Equal(108, tooLong.Length);
        Refused(tooLong, "is 108 bytes; a Unix socket path is at most 107");
    }

    [Fact]
    public async Task A_stale_socket_is_replaced()
    {
        string dir = TempDirectory.Create("vmm-sock"), path = Path.Combine(dir, "stale.sock");
        using (var s = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified))
        {
            s.Bind(new System.Net.Sockets.UnixDomainSocketEndPoint(Path.Combine(dir, "bound.sock")));
            File.Move(Path.Combine(dir, "bound.sock"), path); // .NET unlinks the path it bound on closing; this one stays, stale
        }
        Assert.True(File.Exists(path));
        using var vmm = new VmmProcess(path);
        Assert.Equal("NotStarted", (await vmm.Info())!.State);
    }
}
