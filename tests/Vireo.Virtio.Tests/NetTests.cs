using Vireo.Memory;
using Vireo.Virtio.Net;
using Vireo.Virtio.Queue;
using static Vireo.Virtio.Tests.DriverRing;

namespace Vireo.Virtio.Tests;

public class NetTests
{
    [Fact]
    public void Parses_both_backends_and_a_mac()
    {
        var tap = NetConfig.Parse("tap=tap0,mac=02:11:22:33:44:55", 0);
        Assert.Equal("tap0", tap.Tap);
        Assert.Equal(new byte[] { 2, 0x11, 0x22, 0x33, 0x44, 0x55 }, tap.Mac);
        var unix = NetConfig.Parse("unix=/a,peer=/b", 3);
        Assert.Equal(("/a", "/b", (byte)3), (unix.UnixPath, unix.UnixPeer, unix.Mac[5]));
    }

    [Theory]
    [InlineData("", "unknown or empty option")]
    [InlineData("tap=a,unix=/b,peer=/c", "exactly one backend")]
    [InlineData("unix=/a", "needs peer=PATH")]
    [InlineData("tap=averyveryverylongname", "1 to 15 characters")]
    [InlineData("tap=t,mac=zz:00:00:00:00:00", "not a MAC address")]
    [InlineData("tap=t,mac=01:00:00:00:00:00", "multicast")]
    [InlineData("tap=t,speed=10G", "unknown or empty option 'speed=10G'")]
    public void Refuses_bad_options_by_name(string text, string message) =>
        Assert.Contains(message, Assert.Throws<FormatException>(() => NetConfig.Parse(text, 0)).Message);

    [Fact]
    public void Socket_paths_must_fit_a_socket_address()
    {
        string fits = "/" + new string('a', 106), tooLong = "/" + new string('a', 107);
        Assert.Equal(fits, NetConfig.Parse($"unix={fits},peer=/b", 0).UnixPath);
        Assert.Contains("at most 107 bytes", Assert.Throws<FormatException>(() => NetConfig.Parse($"unix={tooLong},peer=/b", 0)).Message);
        Assert.Contains("at most 107 bytes", Assert.Throws<FormatException>(() => NetConfig.Parse($"unix=/a,peer={tooLong}", 0)).Message);
    }

    /// <summary>A virtio-net device on a Unix datagram socket, and the socket at the cable's other end.</summary>
    private sealed record Cable(UnixDatagramBackend Peer, VirtioNet Net) : IDisposable
    {
        public static Cable Open(string prefix)
        {
            string dir = Vireo.Tests.TempDirectory.Create(prefix);
            return new Cable(new UnixDatagramBackend(Path.Combine(dir, "peer"), Path.Combine(dir, "dev")),
                new VirtioNet(NetConfig.Parse($"unix={dir}/dev,peer={dir}/peer", 0),
                    new UnixDatagramBackend(Path.Combine(dir, "dev"), Path.Combine(dir, "peer"))));
        }

        public void Dispose()
        {
            Net.Dispose();
            Peer.Dispose();
        }
    }

    [Fact]
    public void Random_chains_into_both_queues_never_escape()
    {
        using var cable = Cable.Open("vireo-netfuzz");
        var (peer, net) = (cable.Peer, cable.Net);
        using var memory = NewMemory();
        var rng = new Random(5);
        var features = VirtioConstants.Bit(VirtioConstants.FeatureVersion1) | VirtioConstants.Bit(VirtioConstants.FeatureIndirectDesc);
        for (int i = 0; i < 5_000; i++)
        {
            var ring = new DriverRing(memory, 8);
            QueueFuzzTests.Scramble(memory, ring, rng, 8);
            net.Reset();
            var states = new QueueState[2];
            int q = rng.Next(2);
            states[q] = ring.State(indirect: rng.Next(2) == 0);
            Assert.True(net.Activate(memory, features, states, _ => { }, () => { }));
            peer.Send(new byte[rng.Next(1, 1600)]);
            ring.SetAvailIdx((ushort)rng.Next(0, 10));
            net.NotifyQueue(q);
            net.OnBackendReady();
        }
        Assert.True(net.FramesSent + net.FramesReceived + net.FramesDropped > 0);
    }
    [Fact]
    public void Receive_asks_for_kicks_only_when_a_frame_waits_without_a_buffer()
    {
        using var cable = Cable.Open("vireo-netkick");
        var (peer, net) = (cable.Peer, cable.Net);
        using var memory = NewMemory();
        var ring = new DriverRing(memory, 8);
        var states = new QueueState[2];
        states[0] = ring.State();
        Assert.True(net.Activate(memory, VirtioConstants.Bit(VirtioConstants.FeatureVersion1), states, _ => { }, () => { }));
        ushort UsedFlags() => memory.ReadObj<ushort>(new GuestAddress(UsedAddr));
        for (ushort i = 0; i < 2; i++)
        {
            ring.SetDesc(i, 0x40000 + i * 0x1000UL, 2048, WRITE, 0);
            ring.Publish(i);
        }
        net.NotifyQueue(0);
        Assert.Equal(0, UsedFlags());

        // A frame takes a buffer; with another posted, the driver need not kick for more.
        Assert.True(peer.Send(new byte[100]));
        net.OnBackendReady();
        Assert.Equal(1, ring.UsedIdx);
        Assert.Equal(1, UsedFlags());

        // Two more frames, one buffer: the second waits, and the driver is asked to kick again.
        Assert.True(peer.Send(new byte[200]));
        Assert.True(peer.Send(new byte[300]));
        net.OnBackendReady();
        Assert.Equal(2, ring.UsedIdx);
        Assert.Equal(0, UsedFlags());

        // The kick delivers the waiting frame into the new buffer.
        ring.SetDesc(0, 0x40000, 2048, WRITE, 0);
        ring.Publish(0);
        net.NotifyQueue(0);
        Assert.Equal(3, ring.UsedIdx);
        Assert.Equal((0u, (uint)(VirtioNet.HeaderSize + 300)), ring.Used(2));
    }
}
