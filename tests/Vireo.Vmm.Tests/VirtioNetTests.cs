using Vireo.Tests;
using Vireo.Virtio.Net;

namespace Vireo.Vmm.Tests;

/// <summary>Two VMs exchanging Ethernet frames over virtio-net: on a Unix-socket cable, and on real TAP devices.</summary>
public class VirtioNetTests
{
    private static (GuestRun Ping, GuestRun Echo) PingEcho(NetConfig ping, NetConfig echo, int vcpus, int frames,
        VirtioTransportKind transport = VirtioTransportKind.Pci)
    {
        var echoRun = Task.Run(() => GuestRun.Boot("net", vcpus, cmdline: "role=echo", timeoutSeconds: 120, configure: c => c with { Nets = [echo], Transport = transport }));
        var pingRun = GuestRun.Boot("net", vcpus, cmdline: $"frames={frames}", timeoutSeconds: 120, configure: c => c with { Nets = [ping], Transport = transport });
        return (pingRun, echoRun.GetAwaiter().GetResult());
    }

    [KvmTheory]
    [InlineData(1, VirtioTransportKind.Pci)]
    [InlineData(2, VirtioTransportKind.Mmio)]
    public void Two_vms_exchange_frames_over_a_unix_socket_cable(int vcpus, VirtioTransportKind transport)
    {
        string dir = Vireo.Tests.TempDirectory.Create("vireo-net");
        string a = Path.Combine(dir, "a.sock"), b = Path.Combine(dir, "b.sock");
        var (ping, echo) = PingEcho(NetConfig.Parse($"unix={a},peer={b},mac=02:00:00:00:00:0a", 0),
                                    NetConfig.Parse($"unix={b},peer={a},mac=02:00:00:00:00:0b", 0), vcpus, 1000, transport);
        ping.ExitedWith(0);
        echo.ExitedWith(0);
        Assert.Contains("net: mac 02:00:00:00:00:0a, link up", ping.Output);
        Assert.Contains("net: 1000 frames echoed", ping.Output);
        Assert.Contains("all verified", ping.Output);
        Assert.Matches(@"net: echoed \d+ frames", echo.Output);
    }

    [KvmFact]
    public void Two_vms_exchange_frames_through_tap_devices_on_a_bridge()
    {
        using var taps = new TapBridge("vt");
        var (ping, echo) = PingEcho(NetConfig.Parse($"tap={taps.TapA}", 0), NetConfig.Parse($"tap={taps.TapB}", 1), 1, 300);
        ping.ExitedWith(0);
        echo.ExitedWith(0);
        Assert.Contains("net: 300 frames echoed", ping.Output);
    }

    [Fact]
    public void A_tap_that_cannot_be_opened_is_a_clear_error()
    {
        var config = new VmConfig { KernelPath = TestEnvironment.Guest("hello"), Nets = [NetConfig.Parse("tap=bad/name", 0)] };
        var e = Assert.Throws<VmConfigException>(() => Machine.Create(config, _ => { }).Dispose());
        Assert.StartsWith("net: TUNSETIFF(bad/name) failed", e.Message);
    }
}
