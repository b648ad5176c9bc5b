using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Vireo.Tests;
using Vireo.Vmm.Migration;
using Vireo.Vmm.Snapshot;
using Running = Vireo.Vmm.Tests.SnapshotTests.Running;

namespace Vireo.Vmm.Tests;

/// <summary>Live migration between two machines in this process, over real sockets, on the real /dev/kvm.</summary>
public class MigrationTests
{
    private static VmConfig Config(MemoryBacking backing = MemoryBacking.Anonymous, int vcpus = 1) =>
        new() { KernelPath = TestEnvironment.Guest("snapshot"), MemoryBytes = 128 << 20, Vcpus = vcpus, DebugExit = true, MemoryBacking = backing };

    private static MigrationUrl UnixUrl() =>
        MigrationUrl.Parse("url", "unix:" + Path.Combine(TempDirectory.Create("vireo-mig"), "m.sock"));

    private static readonly MigrationOptions Defaults = new(MigrationOptions.DefaultDowntime, TimeSpan.FromSeconds(60), ForceOnTimeout: false, Local: false);

    /// <summary>A destination listening on <paramref name="url"/>: its machine once received (running), or why not.</summary>
    private sealed class Destination : IDisposable
    {
        private readonly Socket _listener;
        public Task<Running> Received { get; }

        public Destination(MigrationUrl url)
        {
            _listener = url.Listen();
            Received = Task.Factory.StartNew(() => new Running(o =>
            {
                var receiver = new MigrationReceiver(o);
                var (m, f) = receiver.Receive(_listener);
                f.Dispose();
                return m;
            }), TaskCreationOptions.LongRunning);
        }

        public void Dispose()
        {
            _listener.Dispose();
            if (Received.IsCompletedSuccessfully)
            {
                Received.Result.Dispose();
            }
        }
    }

    [KvmTheory]
    [InlineData(MemoryBacking.Anonymous, 1, false)]
    [InlineData(MemoryBacking.Memfd, 2, false)]
    [InlineData(MemoryBacking.Memfd, 1, true)] // local: the memfd is handed over, nothing copied
    public void A_running_guest_moves_with_its_counter_timer_clock_and_console(MemoryBacking backing, int vcpus, bool local)
    {
        var url = UnixUrl();
        using var source = new Running(o => Machine.Create(Config(backing, vcpus), o));
        source.WaitFor("snapshot: up");
        source.Type("c\n");
        source.WaitFor("count=1");
        source.Type("t\n");
        long tscBefore = source.WaitForTicks().Tsc;
        source.Type("half");
        Thread.Sleep(100);
        using var destination = new Destination(url);
        var sender = new MigrationSender(source.Machine, url, Defaults with { Local = local });
        sender.Run();
        var status = sender.Status;
        Assert.Equal(MigrationStatus.Completed, status.State);
        Assert.NotNull(status.DowntimeMs);
        if (local)
        {
            Assert.Equal(0, status.Round); // no copy rounds
            Assert.True(status.BytesSent < 1 << 20, $"{status.BytesSent} bytes crossed a local migration");
        }
        else
        {
            Assert.True(status.Round >= 1);
            Assert.True(status.BytesSent > 0);
        }
        source.Machine.RequestStop(new VmOutcome(StopReason.Migrated, Message: "test"));
        Assert.Equal(StopReason.Migrated, source.Outcome.Result.Reason);

        using var target = destination.Received.Result;
        target.Type("way\n");
        target.WaitFor("echo: halfway");
        target.Type("c\n");
        target.WaitFor("count=2");
        target.Type("t\n");
        var (_, tscAfter) = target.WaitForTicks();
        Assert.True(tscAfter > tscBefore, $"the TSC went back: {tscBefore} then {tscAfter}");
        target.Type("q\n");
        Assert.Equal(StopReason.DebugExit, target.Outcome.Result.Reason);
    }

    /// <summary>A destination that reads <paramref name="limit"/> bytes (answering the config first when <paramref name="answer"/>) and dies.</summary>
    private static Task Dying(Socket listener, bool answer, long limit) => Task.Run(() =>
    {
        using var s = listener.Accept();
        s.ReceiveTimeout = 2000; // once the source waits on us, we die
        var buffer = new byte[1 << 16];
        long got = 0;
        try
        {
            if (answer)
            {
                var head = new byte[12 + 8];
                for (int n = 0; n < head.Length; n += s.Receive(head, n, head.Length - n, SocketFlags.None)) { }
                int length = (int)BinaryPrimitives.ReadUInt32LittleEndian(head.AsSpan(16));
                var config = new byte[length];
                for (int n = 0; n < length; n += s.Receive(config, n, length - n, SocketFlags.None)) { }
                s.Send(Encoding.ASCII.GetBytes("OKAY\0\0\0\0"));
            }
            while (got < limit)
            {
                int n = s.Receive(buffer, 0, (int)Math.Min(buffer.Length, limit - got), SocketFlags.None);
                if (n == 0)
                {
                    break;
                }
                got += n;
            }
        }
        catch (SocketException)
        {
            // the timeout: the source is waiting for an answer that never comes
        }
    });

    [KvmTheory]
    [InlineData(false, 0L)]        // accepts and closes
    [InlineData(false, 64L)]       // reads part of the config and closes
    [InlineData(true, 1L << 20)]   // dies in the first pass over RAM
    [InlineData(true, long.MaxValue)] // takes everything, then never says it is ready: the source had stopped and copied
    public void A_destination_that_dies_leaves_the_source_running(bool answer, long limit)
    {
        var url = UnixUrl();
        using var source = new Running(o => Machine.Create(Config(), o));
        source.WaitFor("snapshot: up");
        source.Type("c\n");
        source.WaitFor("count=1");
        using (var listener = url.Listen())
        {
            var dying = Dying(listener, answer, limit);
            var sender = new MigrationSender(source.Machine, url, Defaults);
            var e = Assert.Throws<MigrationException>(sender.Run);
            Assert.Equal(MigrationStatus.Failed, sender.Status.State);
            Assert.False(string.IsNullOrEmpty(e.Message));
            dying.Wait();
        }
        Assert.False(source.Machine.IsPaused);
        source.Type("c\n");
        source.WaitFor("count=2");
    }

    [KvmTheory]
    [InlineData("")]
    [InlineData(",direct")] // reads land in guest RAM through Linux AIO, behind the device's back
    public void A_guest_writing_and_reading_its_disk_moves_mid_stream_and_verifies_every_byte_at_the_destination(string options)
    {
        // The blk guest writes a pattern over 128 MiB, reads it back into one buffer and checks each
        // chunk: a page the device filled at the source but the last round missed is a MISMATCH.
        string disk = Path.Combine(TempDirectory.Create("vireo-migblk"), "disk.img");
        using (var f = File.Create(disk))
        {
            f.SetLength(160L << 20);
        }
        var config = Config() with
        {
            KernelPath = TestEnvironment.Guest("blk"),
            Cmdline = "console=ttyS0 mib=128 keep=1", // keep: only the device writes the buffer it reads into
            Disks = [Virtio.Block.BlockConfig.Parse(disk + options)],
        };
        var url = UnixUrl();
        using var source = new Running(o => Machine.Create(config, o));
        source.WaitFor("flushed"); // reading back now: the device fills the guest's buffer, chunk after chunk
        using var destination = new Destination(url);
        new MigrationSender(source.Machine, url, Defaults).Run();
        source.Machine.RequestStop(new VmOutcome(StopReason.Migrated, Message: "test"));
        source.Outcome.Wait();
        Assert.DoesNotContain("read back", source.Output); // it moved mid-stream
        using var target = destination.Received.Result;
        target.WaitFor("write-zeroes, discard and out-of-range checks ok");
        Assert.Contains("blk: read back 128 MiB, verified", source.Output + target.Output);
        Assert.DoesNotContain("MISMATCH", target.Output);
        Assert.Equal(0, target.Outcome.Result.ExitCode);
    }

    [KvmFact]
    public void A_local_migration_hands_the_tap_over_with_the_memory()
    {
        // A TAP opens once: the destination on this host cannot open it while the source holds it.
        string tap = $"vmg{Guid.NewGuid().ToString("n")[..8]}";
        Assert.Equal(0, TestEnvironment.Run("ip", $"tuntap add dev {tap} mode tap vnet_hdr").ExitCode);
        try
        {
            var url = UnixUrl();
            var config = Config(MemoryBacking.Memfd) with { Nets = [Virtio.Net.NetConfig.Parse($"tap={tap}", 0)] };
            var sourceFiles = VmFiles.Open(config);
            using var source = new Running(o => MachineBuilder.Boot(config, sourceFiles, o)) { Files = sourceFiles };
            source.WaitFor("snapshot: up");
            source.Type("c\n");
            source.WaitFor("count=1");
            // Without the handover, the destination cannot have the TAP.
            var busy = Assert.ThrowsAny<Exception>(() => VmFiles.OpenForRestore(config).Dispose());
            Assert.Contains(tap, busy.Message);

            VmFiles? received = null;
            using var listener = url.Listen();
            var destination = Task.Factory.StartNew(() => new Running(o =>
            {
                var (m, f) = new MigrationReceiver(o).Receive(listener);
                received = f;
                return m;
            }), TaskCreationOptions.LongRunning);
            new MigrationSender(source.Machine, url, Defaults with { Local = true }, sourceFiles.TapFd).Run();
            source.Machine.RequestStop(new VmOutcome(StopReason.Migrated, Message: "test"));
            source.Outcome.Wait();
            using var target = destination.Result;
            Assert.True(received!.TapFd(0) >= 0);
            target.Type("c\n");
            target.WaitFor("count=2");
            target.Stop();
            received.Dispose();
        }
        finally
        {
            TestEnvironment.Run("ip", $"link del {tap}");
        }
    }

    /// <summary>A frame of the migration stream as a scripted destination writes it: tag, u32 length, payload.</summary>
    private static byte[] WireFrame(string tag, ReadOnlySpan<byte> payload)
    {
        var frame = new byte[8 + payload.Length];
        Encoding.ASCII.GetBytes(tag, frame);
        BinaryPrimitives.WriteUInt32LittleEndian(frame.AsSpan(4), (uint)payload.Length);
        payload.CopyTo(frame.AsSpan(8));
        return frame;
    }

    [KvmFact]
    public void A_destination_that_refuses_the_state_leaves_the_source_running_and_a_timeout_cancels()
    {
        var url = UnixUrl();
        using var source = new Running(o => Machine.Create(Config(), o));
        source.WaitFor("snapshot: up");
        // A destination that answers everything with FAIL: the source says why and goes on.
        using (var listener = url.Listen())
        {
            var refuser = Task.Run(() =>
            {
                using var s = listener.Accept();
                var header = new byte[12 + 8];
                s.Receive(header);
                s.Send(WireFrame("FAIL", "no room here"u8));
            });
            var e = Assert.Throws<MigrationException>(new MigrationSender(source.Machine, url, Defaults).Run);
            Assert.Contains("no room here", e.Message);
            refuser.Wait();
        }
        source.Type("c\n");
        source.WaitFor("count=1");
    }

    [KvmFact]
    public void A_destination_that_cannot_run_the_state_after_the_commit_gives_the_vm_back()
    {
        var url = UnixUrl();
        using var source = new Running(o => Machine.Create(Config(), o));
        source.WaitFor("snapshot: up");
        // A destination that takes everything, the state with OKAY, then answers the commit with
        // FAIL, as one whose KVM refused the state it had accepted: the source goes on.
        using (var listener = url.Listen())
        {
            var destination = Task.Run(() =>
            {
                using var s = listener.Accept();
                using var stream = new NetworkStream(s);
                stream.ReadExactly(new byte[12]);
                var head = new byte[8];
                void Answer(string tag, ReadOnlySpan<byte> payload) => stream.Write(WireFrame(tag, payload));
                while (true)
                {
                    stream.ReadExactly(head);
                    string tag = Encoding.ASCII.GetString(head, 0, 4);
                    stream.ReadExactly(new byte[BinaryPrimitives.ReadUInt32LittleEndian(head.AsSpan(4))]);
                    if (tag is "CONF" or "STOP" or "STAT")
                    {
                        Answer("OKAY", []);
                    }
                    else if (tag == "CMIT")
                    {
                        Answer("FAIL", "KVM said no"u8);
                        return;
                    }
                }
            });
            var e = Assert.Throws<MigrationException>(new MigrationSender(source.Machine, url, Defaults).Run);
            Assert.Contains("after the commit: KVM said no", e.Message);
            Assert.True(destination.Wait(TimeSpan.FromSeconds(30)));
        }
        source.Type("c\n");
        source.WaitFor("count=1"); // it runs here again, as it was
    }

    [KvmFact]
    public void Nothing_listening_is_an_error_naming_the_url()
    {
        using var source = new Running(o => Machine.Create(Config(), o));
        source.WaitFor("snapshot: up");
        var url = UnixUrl();
        var e = Assert.Throws<MigrationException>(new MigrationSender(source.Machine, url, Defaults).Run);
        Assert.Contains(url.Text, e.Message);
        var anon = Assert.Throws<MigrationException>(new MigrationSender(source.Machine, url, Defaults with { Local = true }).Run);
        Assert.Contains("memfd", anon.Message);
        source.Type("c\n");
        source.WaitFor("count=1");
    }

    [Theory]
    [InlineData("tcp:localhost:0")]
    [InlineData("tcp:localhost")]
    [InlineData("tcp::99999")]
    [InlineData("udp:localhost:4000")]
    [InlineData("unix:")]
    [InlineData("")]
    public void Bad_urls_are_refused_by_name(string url)
    {
        var e = Assert.Throws<MigrationException>(() => MigrationUrl.Parse("destination_url", url));
        Assert.StartsWith("destination_url", e.Message);
    }
}
