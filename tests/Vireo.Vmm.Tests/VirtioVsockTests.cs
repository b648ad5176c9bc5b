using System.Net.Sockets;
using System.Text;
using Vireo.Tests;
using Vireo.Virtio.Vsock;

namespace Vireo.Vmm.Tests;

/// <summary>Host programs and guest services talking over virtio-vsock through the hybrid Unix socket.</summary>
public class VirtioVsockTests
{
    private static string SocketPath() => Path.Combine(Vireo.Tests.TempDirectory.Create("vireo-vsock"), "v.sock");

    // Plain blocking sockets and a dedicated thread: the thread pool is busy with other tests.
    private static Socket ConnectWhenReady(string path)
    {
        for (int i = 0; ; i++)
        {
            var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                s.Connect(new UnixDomainSocketEndPoint(path));
                return s;
            }
            catch (SocketException) when (i < 100)
            {
                s.Dispose();
                Thread.Sleep(50);
            }
        }
    }

    private static string ReadLine(Socket s)
    {
        var line = new StringBuilder();
        var one = new byte[1];
        while (s.Receive(one) == 1 && one[0] != '\n')
        {
            line.Append((char)one[0]);
        }
        return line.ToString();
    }

    [KvmTheory]
    [InlineData(VirtioTransportKind.Pci)]
    [InlineData(VirtioTransportKind.Mmio)]
    public void A_host_program_connects_to_a_guest_service_and_a_megabyte_comes_back(VirtioTransportKind transport)
    {
        string path = SocketPath();
        var data = new byte[1 << 20];
        new Random(11).NextBytes(data);
        byte[]? echoed = null;
        string? ok = null;
        var run = GuestRun.Boot("vsock", cmdline: "port=1234", configure: c => c with { Vsock = new VsockConfig(3, path), Transport = transport },
            whileRunning: _ =>
            {
                using var s = ConnectWhenReady(path);
                s.Send("CONNECT 1234\n"u8);
                ok = ReadLine(s);
                var got = new byte[data.Length];
                int n = 0;
                var reader = new Thread(() =>
                {
                    while (n < got.Length)
                    {
                        int r = s.Receive(got.AsSpan(n));
                        if (r == 0)
                        {
                            break;
                        }
                        n += r;
                    }
                });
                reader.Start();
                s.Send(data);
                reader.Join();
                echoed = got[..n];
                s.Shutdown(SocketShutdown.Send);
            }).ExitedWith(0);
        Assert.StartsWith("OK ", ok);
        Assert.Equal(data, echoed);
        Assert.Contains("vsock: cid 3", run.Output);
        Assert.Contains($"vsock: connection closed, echoed {data.Length} bytes", run.Output);
    }

    [KvmFact]
    public void A_guest_connects_to_a_host_service_on_socket_underscore_port()
    {
        string path = SocketPath();
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(path + "_7000"));
        listener.Listen(1);
        var service = new Thread(() =>
        {
            using var c = listener.Accept();
            var buf = new byte[100];
            int n = c.Receive(buf);
            c.Send(Encoding.ASCII.GetBytes("host heard: " + Encoding.ASCII.GetString(buf, 0, n)));
            c.Receive(buf);
        });
        service.Start();
        var run = GuestRun.Boot("vsock", cmdline: "connect=7000", configure: c => c with { Vsock = new VsockConfig(7, path) }).ExitedWith(0);
        Assert.Contains("vsock: host replied: host heard: hello from the guest", run.Output);
        Assert.True(service.Join(10_000));
    }

    [KvmFact]
    public void A_guest_half_close_reaches_the_host_as_end_of_stream_and_the_reply_still_arrives()
    {
        // What Linux's vsock does after shutdown(SHUT_WR): the host must see EOF, yet still answer.
        string path = SocketPath();
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(path + "_7002"));
        listener.Listen(1);
        string heard = "";
        var service = new Thread(() =>
        {
            using var c = listener.Accept();
            var buf = new byte[100];
            int n;
            while ((n = c.Receive(buf)) > 0) // to end of stream: the guest's half-close
            {
                heard += Encoding.ASCII.GetString(buf, 0, n);
            }
            c.Send(Encoding.ASCII.GetBytes("host heard to EOF: " + heard));
            c.Shutdown(SocketShutdown.Both);
        });
        service.Start();
        var run = GuestRun.Boot("vsock", cmdline: "connect=7002 halfclose=1", configure: c => c with { Vsock = new VsockConfig(8, path) }).ExitedWith(0);
        Assert.True(service.Join(10_000));
        Assert.Equal("hello from the guest\n", heard);
        Assert.Contains("vsock: host replied: host heard to EOF: hello from the guest", run.Output);
        Assert.Contains("vsock: host closed its end (flags 3)", run.Output);
    }

    [KvmFact]
    public void A_guest_connecting_to_a_port_nobody_listens_on_is_refused()
    {
        var run = GuestRun.Boot("vsock", cmdline: "connect=7001", configure: c => c with { Vsock = new VsockConfig(5, SocketPath()) }).ExitedWith(1);
        Assert.Contains("vsock: host port 7001 refused", run.Output);
    }
}
