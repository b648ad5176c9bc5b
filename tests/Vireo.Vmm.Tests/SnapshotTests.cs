using System.Text;
using Vireo.Tests;
using Vireo.Virtio.Block;
using Vireo.Vmm.Snapshot;

namespace Vireo.Vmm.Tests;

/// <summary>A kit guest saved to two files and built again from them, in this process, on the real /dev/kvm.</summary>
public class SnapshotTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vireo-snap-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>A machine running on its own thread, its console collected.</summary>
    internal sealed class Running : IDisposable
    {
        private readonly StringBuilder _out = new();
        public Machine Machine { get; }
        public VmFiles? Files { get; init; }
        public Task<VmOutcome> Outcome { get; }

        public Running(Func<Action<byte>, Machine> build)
        {
            Machine = build(b =>
            {
                lock (_out)
                {
                    _out.Append((char)b);
                }
            });
            Outcome = Task.Factory.StartNew(() => Machine.Run(TimeSpan.FromSeconds(60)), TaskCreationOptions.LongRunning);
        }

        public string Output
        {
            get
            {
                lock (_out)
                {
                    return _out.ToString();
                }
            }
        }

        public void WaitFor(string text, int from = 0)
        {
            var deadline = DateTime.UtcNow.AddSeconds(30);
            while (Output.IndexOf(text, from, StringComparison.Ordinal) < 0)
            {
                Assert.True(DateTime.UtcNow < deadline && !Outcome.IsCompleted, $"no '{text}' on the console; it says:\n{Output}\n{(Outcome.IsCompleted ? Outcome.Result : "")}");
                Thread.Sleep(5);
            }
        }

        /// <summary>Waits for a whole "ticks=N tsc=T" line after <paramref name="from"/> and returns its two numbers.</summary>
        public (long Ticks, long Tsc) WaitForTicks(int from = 0)
        {
            var deadline = DateTime.UtcNow.AddSeconds(30);
            while (true)
            {
                var m = System.Text.RegularExpressions.Regex.Match(Output[from..], @"ticks=(\d+) tsc=(\d+)\r?\n");
                if (m.Success)
                {
                    return (long.Parse(m.Groups[1].Value), long.Parse(m.Groups[2].Value));
                }
                Assert.True(DateTime.UtcNow < deadline && !Outcome.IsCompleted, $"no ticks line on the console; it says:\n{Output}");
                Thread.Sleep(5);
            }
        }

        public void Type(string line)
        {
            var bytes = Encoding.ASCII.GetBytes(line);
            int sent = 0;
            while (sent < bytes.Length)
            {
                sent += Machine.EnqueueConsoleInput(bytes.AsSpan(sent));
            }
        }

        public VmOutcome Stop()
        {
            Machine.RequestStop(new VmOutcome(StopReason.HostRequest, Message: "test"));
            return Outcome.Result;
        }

        public void Dispose()
        {
            if (!Outcome.IsCompleted)
            {
                Stop();
            }
            Machine.Dispose();
            Files?.Dispose();
        }
    }

    private static VmConfig Config(int vcpus = 1, VmConfigChange? change = null)
    {
        var config = new VmConfig { KernelPath = TestEnvironment.Guest("snapshot"), MemoryBytes = 128 << 20, Vcpus = vcpus, DebugExit = true };
        return change is null ? config : change(config);
    }

    private (string State, string Mem) Paths(string name = "vm") => (Path.Combine(_dir, name + ".snap"), Path.Combine(_dir, name + ".mem"));

    [KvmTheory]
    [InlineData(1, MemoryBacking.Anonymous)]
    [InlineData(2, MemoryBacking.Memfd)]
    public void A_restored_guest_keeps_its_counter_its_timer_its_clock_and_its_console(int vcpus, MemoryBacking backing)
    {
        var (state, mem) = Paths();
        long tscBefore;
        using (var first = new Running(o => Machine.Create(Config(vcpus, c => c with { MemoryBacking = backing }), o)))
        {
            first.WaitFor("snapshot: up");
            first.Type("c\n");
            first.WaitFor("count=1");
            first.Type("c\n");
            first.WaitFor("count=2");
            first.Type("t\n");
            tscBefore = first.WaitForTicks().Tsc;
            first.Type("half"); // half a line: in the guest's buffer, not yet echoed
            Thread.Sleep(200);
            first.Machine.Pause();
            var result = Snapshots.Create(first.Machine, SnapshotKind.Full, state, mem);
            Assert.True(result.MemoryBytesWritten > 0 && result.MemoryBytesWritten < 128 << 20, $"{result.MemoryBytesWritten} bytes of RAM written");
            Assert.Equal(128L << 20, new FileInfo(mem).Length);
            Assert.Equal(StopReason.HostRequest, first.Stop().Reason);
        }

        var (machine, files) = Snapshots.Load(state, mem, _ => { }, resume: true);
        machine.Dispose();
        files.Dispose(); // a restore can be built and thrown away: nothing else holds the files

        (machine, files) = Snapshots.Load(state, mem, _ => { }, resume: false);
        machine.Dispose();
        files.Dispose();

        using var second = new Running(o =>
        {
            var (m, f) = Snapshots.Load(state, mem, o, resume: true);
            f.Dispose(); // what is open stays open in the machine's devices; the test owns nothing more
            return m;
        });
        second.Type("way\n");
        second.WaitFor("echo: halfway"); // the line typed before the snapshot goes on
        second.Type("c\n");
        second.WaitFor("count=3");
        second.Type("t\n");
        var (ticks, tscAfter) = second.WaitForTicks();
        Assert.True(tscAfter > tscBefore, $"the TSC went back: {tscBefore} then {tscAfter}");
        Thread.Sleep(300);
        int mark = second.Output.Length;
        second.Type("t\n");
        var (laterTicks, _) = second.WaitForTicks(mark);
        Assert.True(laterTicks > ticks, $"the LAPIC timer ticks on after the restore: {ticks} then, 300 ms later, {laterTicks}");
        second.Type("q\n");
        var outcome = second.Outcome.Result;
        Assert.Equal(StopReason.DebugExit, outcome.Reason);
        Assert.Equal(0, outcome.ExitCode);
        Assert.DoesNotContain("TSC went back", second.Output);
    }

    private static long Allocated(string path) => long.Parse(RunStat(path)) * 512;

    private static string RunStat(string path)
    {
        var psi = new System.Diagnostics.ProcessStartInfo("stat", ["-c", "%b", path]) { RedirectStandardOutput = true };
        using var p = System.Diagnostics.Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd().Trim();
        p.WaitForExit();
        return output;
    }

    [KvmFact]
    public void A_diff_snapshot_writes_only_what_changed_and_onto_the_base_restores_the_guest_as_it_is_now()
    {
        var (fullState, baseMem) = Paths("full");
        var (diffState, _) = Paths("diff");
        var (layerState, layerMem) = Paths("layer");
        using (var first = new Running(o => Machine.Create(Config(change: c => c with { TrackDirtyPages = true }), o)))
        {
            first.WaitFor("snapshot: up");
            first.Type("c\n");
            first.WaitFor("count=1");
            first.Machine.Pause();
            var full = Snapshots.Create(first.Machine, SnapshotKind.Full, fullState, baseMem);
            File.Copy(baseMem, baseMem + ".orig");
            first.Machine.Resume();
            first.Type("c\n");
            first.WaitFor("count=2");
            first.Machine.Pause();
            // A layer: a new file holding only the pages written since the full one.
            var layer = Snapshots.Create(first.Machine, SnapshotKind.Diff, layerState, layerMem);
            Assert.Equal(128L << 20, new FileInfo(layerMem).Length);
            Assert.True(layer.MemoryBytesWritten > 0 && layer.MemoryBytesWritten < full.MemoryBytesWritten / 4,
                $"the diff wrote {layer.MemoryBytesWritten} bytes; the full one {full.MemoryBytesWritten}");
            Assert.True(Allocated(layerMem) <= layer.MemoryBytesWritten + (1 << 20), $"the layer holds {Allocated(layerMem)} bytes on disk");
            // The layer took its pages from the tracker: merge it into the base (as Firecracker's
            // rebase-snap does), so that the next diff onto the base leaves it whole.
            MergeLayer(layerMem, baseMem);
            first.Machine.Resume();
            first.Type("c\n");
            first.WaitFor("count=3");
            first.Machine.Pause();
            // Onto the base: the pages since the layer are written into the full one's memory file.
            // The layer took its pages: this diff has only those written since the layer.
            var onto = Snapshots.Create(first.Machine, SnapshotKind.Diff, diffState, baseMem);
            Assert.True(onto.MemoryBytesWritten < full.MemoryBytesWritten / 4, $"{onto.MemoryBytesWritten} bytes");
        }
        // The layer alone is not a whole RAM: refused, by name.
        var e = Assert.Throws<SnapshotException>(() => Snapshots.Load(layerState, layerMem, _ => { }, resume: false));
        Assert.Contains("Diff", e.Message);

        using var second = new Running(o =>
        {
            var (m, f) = Snapshots.Load(diffState, baseMem, o, resume: true, trackDirtyPages: true);
            f.Dispose();
            return m;
        });
        Assert.NotNull(second.Machine.Dirty);
        second.Type("c\n");
        second.WaitFor("count=4");
        second.Stop();

        // Without the later diff, the full snapshot's own memory goes back to count=1.
        using var third = new Running(o =>
        {
            var (m, f) = Snapshots.Load(fullState, baseMem + ".orig", o, resume: true, trackDirtyPages: false);
            f.Dispose();
            return m;
        });
        Assert.Null(third.Machine.Dirty);
        third.Type("c\n");
        third.WaitFor("count=2");
    }

    /// <summary>Copies the data extents of a sparse layer over <paramref name="target"/> (what `rebase-snap` does for Firecracker).</summary>
    private static void MergeLayer(string layer, string target)
    {
        using var from = File.OpenHandle(layer);
        using var to = File.OpenHandle(target, FileMode.Open, FileAccess.Write);
        var page = new byte[4096];
        long length = RandomAccess.GetLength(from);
        for (long at = 0; at < length; at += page.Length)
        {
            RandomAccess.Read(from, page, at);
            if (page.AsSpan().ContainsAnyExcept((byte)0))
            {
                RandomAccess.Write(to, page, at);
            }
        }
    }

    [KvmFact]
    public void A_diff_snapshot_needs_dirty_tracking_from_the_start()
    {
        var (state, mem) = Paths();
        using var vm = new Running(o => Machine.Create(Config(), o));
        vm.WaitFor("snapshot: up");
        vm.Machine.Pause();
        var e = Assert.Throws<SnapshotException>(() => Snapshots.Create(vm.Machine, SnapshotKind.Diff, state, mem));
        Assert.Contains("track_dirty_pages", e.Message);
        Assert.False(File.Exists(mem));
        vm.Machine.Resume();
        vm.Type("c\n");
        vm.WaitFor("count=1");
    }

    [KvmFact]
    public void A_paused_restore_runs_nothing_until_resumed()
    {
        var (state, mem) = Paths();
        using (var first = new Running(o => Machine.Create(Config(), o)))
        {
            first.WaitFor("snapshot: up");
            first.Machine.Pause();
            Snapshots.Create(first.Machine, SnapshotKind.Full, state, mem);
        }
        using var second = new Running(o =>
        {
            var (m, f) = Snapshots.Load(state, mem, o, resume: false);
            f.Dispose();
            return m;
        });
        Thread.Sleep(300);
        Assert.True(second.Machine.IsPaused);
        Assert.Equal(0, second.Machine.Exits);
        second.Machine.Resume();
        second.Type("c\n");
        second.WaitFor("count=1");
    }

    [KvmFact]
    public void A_snapshot_of_a_running_vm_is_refused_and_the_vm_goes_on()
    {
        var (state, mem) = Paths();
        using var vm = new Running(o => Machine.Create(Config(), o));
        vm.WaitFor("snapshot: up");
        var e = Assert.Throws<SnapshotException>(() => Snapshots.Create(vm.Machine, SnapshotKind.Full, state, mem));
        Assert.Contains("not paused", e.Message);
        Assert.Contains("Diff", Assert.Throws<SnapshotException>(() => Snapshots.Create(vm.Machine, SnapshotKind.Diff, state, mem)).Message);
        Assert.False(File.Exists(state));
        vm.Type("c\n");
        vm.WaitFor("count=1");
    }
}
