using Vireo.Devices;
using Vireo.Virtio.Queue;
using Vireo.Virtio.Vsock;
using static Vireo.Virtio.Tests.DriverRing;

namespace Vireo.Virtio.Tests;

public class VsockTests
{
    private sealed class NoWatcher : IFdWatcher
    {
        public void Watch(int fd, Action onReady) { }
        public void Unwatch(int fd) { }
    }

    [Fact]
    public void Parses_cid_and_socket()
    {
        Assert.Equal(new VsockConfig(3, "/run/v.sock"), VsockConfig.Parse("cid=3,socket=/run/v.sock"));
    }

    [Theory]
    [InlineData("cid=2,socket=/s", "reserved")]
    [InlineData("socket=/s", "cid=N is required")]
    [InlineData("cid=3", "socket=PATH is required")]
    [InlineData("cid=3,socket=/s,port=1", "unknown option 'port=1'")]
    public void Refuses_bad_options_by_name(string text, string message) =>
        Assert.Contains(message, Assert.Throws<FormatException>(() => VsockConfig.Parse(text)).Message);

    [Fact]
    public void A_socket_path_leaves_room_for_the_port_suffix()
    {
        Assert.Equal(96, VsockConfig.Parse("cid=3,socket=/" + new string('a', 95)).SocketPath.Length);
        var e = Assert.Throws<FormatException>(() => VsockConfig.Parse("cid=3,socket=/" + new string('a', 96)));
        Assert.Contains("at most 96 bytes", e.Message);
    }

    [Fact]
    public void A_restored_device_tells_the_driver_its_transport_was_reset_once()
    {
        string dir = Vireo.Tests.TempDirectory.Create("vireo-vsockreset");
        using var memory = NewMemory();
        var ring = new DriverRing(memory, 8);
        var features = VirtioConstants.Bit(VirtioConstants.FeatureVersion1);
        QueueState[] queues = [ring.State(), ring.State(), ring.State()]; // only the event queue (2) is driven here
        using var before = new VirtioVsock(new VsockConfig(3, Path.Combine(dir, "a.sock")));
        before.Start(new NoWatcher());
        Assert.True(before.Activate(memory, features, queues, _ => { }, () => { }));
        ring.SetDesc(0, 0x50000, 8, WRITE, 0);
        ring.Publish(0);
        before.NotifyQueue(2);
        Assert.Equal(0, ring.UsedIdx); // a device that booted with its driver owes it nothing
        var state = before.SaveState();

        using var after = new VirtioVsock(new VsockConfig(3, Path.Combine(dir, "b.sock")));
        after.Start(new NoWatcher());
        memory.Write(new Memory.GuestAddress(0x50000), [0xff, 0xff, 0xff, 0xff]);
        Assert.True(after.TryRestore(memory, state, _ => { }, () => { }, out var error), error);
        after.NotifyQueue(2);
        Assert.Equal(1, ring.UsedIdx);
        Assert.Equal((0u, 4u), ring.Used(0)); // the buffer the driver gave before the save, 4 bytes written
        Assert.Equal(0u, memory.ReadObj<uint>(new Memory.GuestAddress(0x50000))); // VIRTIO_VSOCK_EVENT_TRANSPORT_RESET
        ring.SetDesc(1, 0x51000, 8, WRITE, 0);
        ring.Publish(1);
        after.NotifyQueue(2);
        Assert.Equal(1, ring.UsedIdx); // once
    }

    [Fact]
    public void Random_packets_and_chains_never_escape()
    {
        string path = Path.Combine(Vireo.Tests.TempDirectory.Create("vireo-vsockfuzz"), "v.sock");
        using var vsock = new VirtioVsock(new VsockConfig(3, path));
        vsock.Start(new NoWatcher());
        using var memory = NewMemory();
        var rng = new Random(17);
        var features = VirtioConstants.Bit(VirtioConstants.FeatureVersion1) | VirtioConstants.Bit(VirtioConstants.FeatureIndirectDesc);
        for (int i = 0; i < 5_000; i++)
        {
            var ring = new DriverRing(memory, 8);
            QueueFuzzTests.Scramble(memory, ring, rng, 8);
            // Some packets look like real ones: guest cid 3 to the host, a plausible op.
            var packet = memory.GetSpan(new Memory.GuestAddress((ulong)rng.Next(0, 0xf0000) & ~0xfUL), 44);
            if (rng.Next(2) == 0)
            {
                rng.NextBytes(packet);
                packet[0] = 3;
                packet[8] = 2;
                packet[28] = 1;
                packet[30] = (byte)rng.Next(0, 9);
            }
            vsock.Reset();
            var states = new QueueState[3];
            int q = rng.Next(3);
            states[q] = ring.State(indirect: rng.Next(2) == 0);
            Assert.True(vsock.Activate(memory, features, states, _ => { }, () => { }));
            ring.SetAvailIdx((ushort)rng.Next(0, 10));
            vsock.NotifyQueue(q);
        }
    }
}
