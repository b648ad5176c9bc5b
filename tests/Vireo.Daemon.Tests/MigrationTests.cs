using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Vireo.Api;
using Vireo.Tests;

namespace Vireo.Daemon.Tests;

/// <summary>
/// Live migration between two real vireod (vireo migrate), with real VMMs and the kit's snapshot
/// guest, whose counter lives in RAM: "c" on its console prints count=N, one more each time. The VM
/// has a disk, so the destination must hand its fresh VMM the same files on the fd numbers the
/// source's had. The second vireod runs in its own network namespace: a unix socket is a file, and crosses.
/// </summary>
public class MigrationTests
{
    private static readonly HttpMethod Post = HttpMethod.Post;

    /// <summary>Two daemons that allow the same image directory (one with a disk in it): A, and B in a network namespace.</summary>
    private sealed class Pair : IDisposable
    {
        public string Images { get; } = TempDirectory.Create("vireo-mig-images");
        public DaemonProcess A { get; }
        public DaemonProcess B { get; }
        private readonly string? _netns;

        public Pair(string extraA = "", string extraB = "")
        {
            File.WriteAllBytes(Path.Combine(Images, "disk.img"), new byte[1 << 20]);
            A = new DaemonProcess(extraArgs: $"--image-dir {Images} {extraA}");
            _netns = $"vireo-mig-{Environment.ProcessId}-{Interlocked.Increment(ref _namespaces)}";
            if (!Ip($"netns add {_netns}"))
            {
                _netns = null; // not root: the same namespace then
            }
            B = new DaemonProcess(extraArgs: $"--image-dir {Images} {extraB}", netns: _netns);
        }

        private static int _namespaces;

        private static bool Ip(string args)
        {
            using var p = Process.Start(new ProcessStartInfo("ip", args) { RedirectStandardError = true, RedirectStandardOutput = true })!;
            p.WaitForExit();
            return p.ExitCode == 0;
        }

        public string Netns => _netns ?? "";

        public async Task Start(DaemonProcess d, string name)
        {
            await d.Ok(Post, "vms", DaemonProcess.Definition(name, guest: "snapshot",
                extra: $$""", "disks": [{"path": "{{Path.Combine(Images, "disk.img")}}"}]"""));
            await d.Ok(Post, $"vms/{name}/start");
            await Eventually.Until(() => Task.FromResult(Console(d, name).Contains("snapshot: up")), "the guest to come up");
        }

        public void Dispose()
        {
            A.Dispose();
            B.Dispose();
            if (_netns is not null)
            {
                Ip($"netns del {_netns}");
            }
        }
    }

    private static string Console(DaemonProcess d, string name)
    {
        string log = Path.Combine(d.StateDir, "vms", name, "console.log");
        return File.Exists(log) ? File.ReadAllText(log) : "";
    }

    private static List<int> Counts(DaemonProcess d, string name) =>
        [.. System.Text.RegularExpressions.Regex.Matches(Console(d, name), @"count=(\d+)").Select(m => int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture))];

    /// <summary>Types "c" on the VM's console through the daemon and waits for the count it prints, which must be <paramref name="expected"/>.</summary>
    private static async Task Count(DaemonProcess d, string name, int expected)
    {
        int before = Counts(d, name).Count;
        using var content = new ByteArrayContent("c\r"u8.ToArray());
        using var r = await d.Http.PutAsync($"vms/{name}/console/input", content);
        Assert.True(r.IsSuccessStatusCode, await r.Content.ReadAsStringAsync());
        await Eventually.Until(() => Task.FromResult(Counts(d, name).Count > before), $"count={expected}");
        Assert.Equal(expected, Counts(d, name)[^1]);
    }

    private static string Migrate(string socket, string extra = "") => $$"""{"destination": "unix:{{socket}}"{{extra}}}""";

    private static string Fault(string body) => JsonSerializer.Deserialize(body, DaemonJson.Default.ApiError)!.FaultMessage;

    [KvmFact]
    public async Task A_running_vm_moves_to_the_other_vireod_and_its_counter_goes_on_there()
    {
        using var pair = new Pair();
        var (a, b) = (pair.A, pair.B);
        await pair.Start(a, "mover");
        await Count(a, "mover", 1);
        int sourcePid = (await a.Get("mover")).Pid!.Value;

        var (status, body) = await a.Send(Post, "vms/mover/migrate", Migrate(b.Socket));
        Assert.True(status == 200, body);
        using (var doc = JsonDocument.Parse(body))
        {
            Assert.Equal(["name", "destination", "state", "pid", "elapsed_ms", "downtime_ms", "bytes_sent", "rounds"], doc.RootElement.EnumerateObject().Select(p => p.Name));
        }
        var result = JsonSerializer.Deserialize(body, DaemonJson.Default.MigrationResult)!;
        Assert.Equal(("mover", b.Socket, DomainState.Running), (result.Name, result.Destination, result.State));
        Assert.True(result.BytesSent > 0 && result.Rounds >= 1 && result.ElapsedMs > 0, body);

        // The domain moved: gone from A (its VMM ended), running on B, whose supervisor has it.
        Assert.Empty(await a.List());
        Assert.Equal(404, (await a.Send(HttpMethod.Get, "vms/mover")).Status);
        Assert.False(File.Exists($"/proc/{sourcePid}/cmdline") && File.ReadAllText($"/proc/{sourcePid}/cmdline").Contains("vireo-vmm"));
        var there = (await b.List()).Single();
        Assert.Equal(("mover", DomainState.Running, result.Pid), (there.Name, there.State, there.Pid));
        Assert.Contains(Path.Combine(pair.Images, "disk.img"), (await b.Get("mover")).Definition.Disks!.Single().Path);
        if (pair.Netns.Length > 0)
        {
            // B is in a network namespace of its own, A is not, and the VMM B runs the VM in is in its jail's, neither's.
            static string? Net(int pid) => new FileInfo($"/proc/{pid}/ns/net").LinkTarget;
            Assert.NotEqual(Net(a.Pid), Net(b.Pid));
            Assert.DoesNotContain(Net(result.Pid!.Value), new[] { Net(a.Pid), Net(b.Pid) });
        }
        await Count(b, "mover", 2); // RAM came over: the counter goes on from 1
        await Count(b, "mover", 3);

        // B keeps it across its own restart, as any VM it runs, and destroys it when asked.
        b.KillAndRestart();
        Assert.Equal(DomainState.Running, (await b.Get("mover")).State);
        await Count(b, "mover", 4);
        await b.Ok(Post, "vms/mover/destroy");
        Assert.Equal(DomainState.ShutOff, (await b.Get("mover")).State);
    }

    [KvmFact]
    public async Task A_sandboxed_vm_moves_between_sandboxed_vireods_its_stream_carried_by_the_source_vireod()
    {
        const uint UidsA = 3_200_000, UidsB = 3_300_000;
        using var pair = new Pair($"--sandbox --sandbox-uids {UidsA}", $"--sandbox --sandbox-uids {UidsB}");
        var (a, b) = (pair.A, pair.B);
        await pair.Start(a, "jailed");
        await Count(a, "jailed", 1);
        static uint Uid(int pid) => uint.Parse(File.ReadLines($"/proc/{pid}/status").First(l => l.StartsWith("Uid:", StringComparison.Ordinal)).Split('\t')[1],
            System.Globalization.CultureInfo.InvariantCulture);
        var source = await a.Get("jailed");
        Assert.Equal(UidsA + (uint)source.Id, Uid(source.Pid!.Value));

        var (status, body) = await a.Send(Post, "vms/jailed/migrate", Migrate(b.Socket));
        Assert.True(status == 200, body);
        var there = await b.Get("jailed");
        Assert.Equal(DomainState.Running, there.State);
        Assert.Equal(UidsB + (uint)there.Id, Uid(there.Pid!.Value)); // in B's jail, as B's uid for it
        Assert.Equal("0000000000000000", File.ReadLines($"/proc/{there.Pid}/status").First(l => l.StartsWith("CapEff:", StringComparison.Ordinal))[7..].Trim());
        Assert.Empty(await a.List());
        await Count(b, "jailed", 2); // its RAM came over through A's relay
        // And back to A, from B's jail to A's.
        (status, body) = await b.Send(Post, "vms/jailed/migrate", Migrate(a.Socket));
        Assert.True(status == 200, body);
        await Count(a, "jailed", 3);
        await a.Ok(Post, "vms/jailed/destroy");
    }

    [KvmFact]
    public async Task A_vm_moves_from_a_vireod_without_the_sandbox_into_one_with_it_and_back()
    {
        using var pair = new Pair("--no-sandbox", "--sandbox-uids 3400000");
        var (a, b) = (pair.A, pair.B);
        await pair.Start(a, "crossing");
        await Count(a, "crossing", 1);
        static string Uid(int pid) => File.ReadLines($"/proc/{pid}/status").First(l => l.StartsWith("Uid:", StringComparison.Ordinal)).Split('\t')[1];
        Assert.Equal("0", Uid((await a.Get("crossing")).Pid!.Value)); // vireod's user: root

        var (status, body) = await a.Send(Post, "vms/crossing/migrate", Migrate(b.Socket));
        Assert.True(status == 200, body);
        var there = await b.Get("crossing");
        Assert.Equal($"{3_400_000 + there.Id}", Uid(there.Pid!.Value));
        await Count(b, "crossing", 2);
        (status, body) = await b.Send(Post, "vms/crossing/migrate", Migrate(a.Socket));
        Assert.True(status == 200, body);
        Assert.Equal("0", Uid((await a.Get("crossing")).Pid!.Value));
        await Count(a, "crossing", 3);
        await a.Ok(Post, "vms/crossing/destroy");
    }

    [KvmFact]
    public async Task Migrations_that_cannot_happen_are_refused_by_field_and_the_vm_runs_on_here()
    {
        using var pair = new Pair();
        var (a, b) = (pair.A, pair.B);
        await pair.Start(a, "stay");
        await Count(a, "stay", 1);
        int pid = (await a.Get("stay")).Pid!.Value;
        await b.Ok(Post, "vms", DaemonProcess.Definition("stay")); // the name is taken there (an idle guest, not started)
        using var strict = new DaemonProcess(); // allows the guests only: not the disk's directory
        using var dead = new DaemonProcess();
        dead.KillProcess(); // its socket stays, and no one answers on it
        string dir = TempDirectory.Create("vireo-mig");

        async Task Refused(string vm, string body, int status, string says)
        {
            var (got, reply) = await a.Send(Post, $"vms/{vm}/migrate", body);
            Assert.True(got == status, $"{body}: {got} {reply}");
            Assert.Contains(says, Fault(reply));
            Assert.DoesNotContain("System.", reply);
        }
        await Refused("ghost", Migrate(b.Socket), 404, "no VM named 'ghost'");
        await Refused("stay", Migrate(Path.Combine(dir, "nobody.sock")), 400, $"destination: no socket at {dir}/nobody.sock");
        await Refused("stay", """{"destination": "relative.sock"}""", 400, "destination: 'relative.sock'");
        await Refused("stay", """{"destination": "tcp:10.0.0.2:4444"}""", 400, "only a vireod on this host");
        await Refused("stay", $$"""{"destination": "{{dir}}"}""", 400, "is not a socket");
        await Refused("stay", """{}""", 400, "destination");
        await Refused("stay", Migrate(b.Socket, """, "downtime_ms": 0"""), 400, "downtime_ms");
        await Refused("stay", Migrate(b.Socket, """, "timeout_s": 0"""), 400, "timeout_s");
        await Refused("stay", Migrate(b.Socket, """, "timeout_strategy": "later" """), 400, "timeout_strategy");
        await Refused("stay", Migrate(b.Socket), 409, "name: a VM named 'stay' is already defined here");
        await Refused("stay", Migrate(strict.Socket), 400, "disks[0].path");
        await Refused("stay", Migrate(dead.Socket), 409, "did not answer");
        await a.Ok(Post, "vms/stay/pause");
        await Refused("stay", Migrate(strict.Socket), 409, "'stay' is paused: resume it to migrate it");
        await a.Ok(Post, "vms/stay/resume");

        // Nothing moved, nothing was left behind: A runs it in the same VMM, B has only its own, unchanged.
        Assert.Equal((DomainState.Running, pid), ((await a.Get("stay")).State, (await a.Get("stay")).Pid));
        await Count(a, "stay", 2);
        var theirs = await b.Get("stay");
        Assert.Equal((DomainState.ShutOff, TestEnvironment.Guest("idle")), (theirs.State, theirs.Definition.Kernel));
        Assert.Empty(await strict.List());
        Assert.Single(await b.List());
    }

    [KvmFact]
    public async Task A_destination_that_hangs_up_mid_way_is_told_to_drop_it_and_the_vm_runs_on_here_then_moves_elsewhere()
    {
        using var pair = new Pair();
        var (a, b) = (pair.A, pair.B);
        await pair.Start(a, "wanderer");
        await Count(a, "wanderer", 1);
        int pid = (await a.Get("wanderer")).Pid!.Value;
        using var fake = new FakeDestination(TempDirectory.Create("vireo-mig-fake"), hangUpAfter: 64 << 10);

        var (status, body) = await a.Send(Post, "vms/wanderer/migrate", Migrate(fake.Socket));
        Assert.True(status == 409, body);
        Assert.Contains("'wanderer' was not migrated (it runs on here): migration/send:", Fault(body));
        Assert.True(fake.Received > 0, "the VMM sent nothing");
        Assert.Equal(["POST /migrations/incoming", "DELETE /migrations/incoming/wanderer"], fake.Requests);
        Assert.Equal((DomainState.Running, pid), ((await a.Get("wanderer")).State, (await a.Get("wanderer")).Pid));
        await Count(a, "wanderer", 2);
        var progress = JsonSerializer.Deserialize(await a.Http.GetStringAsync("vms/wanderer/progress"), DaemonJson.Default.OperationProgress)!;
        Assert.Equal((null, null), (progress.Operation, progress.Migration));

        // The same VM then moves to a real vireod, and its counter goes on there.
        (status, body) = await a.Send(Post, "vms/wanderer/migrate", Migrate(b.Socket));
        Assert.True(status == 200, body);
        await Count(b, "wanderer", 3);
        Assert.Empty(await a.List());
    }

    [KvmFact]
    public async Task The_destination_drops_an_incoming_vm_whose_vmm_dies_or_that_the_source_calls_off_and_refuses_what_does_not_fit()
    {
        using var b = new DaemonProcess();
        string Incoming(string name, string fds = """{"kernel": 40}""") =>
            $$"""{"name": "{{name}}", "definition": {{DaemonProcess.Definition(name)}}, "running": {{DaemonProcess.Definition(name)}}, "fds": {{fds}}}""";
        async Task<string> Expect(string name)
        {
            var (status, body) = await b.Send(Post, "migrations/incoming", Incoming(name));
            Assert.True(status == 201, body);
            var answer = JsonSerializer.Deserialize(body, DaemonJson.Default.IncomingMigrationAnswer)!;
            Assert.Equal($"unix:{Path.Combine(b.StateDir, "vms", name, "migration.sock")}", answer.ReceiverUrl);
            Assert.Equal((DomainState.Incoming, null), ((await b.Get(name)).State, (await b.Get(name)).Pid));
            return answer.ReceiverUrl;
        }

        // Waiting: it cannot be started, undefined or renamed meanwhile.
        await Expect("arriving");
        var (s, r) = await b.Send(Post, "vms/arriving/start");
        Assert.Equal((409, true), (s, Fault(r).Contains("arriving from another vireod")));
        (s, r) = await b.Send(HttpMethod.Delete, "vms/arriving");
        Assert.Equal((409, true), (s, Fault(r).Contains("arriving from another vireod")));
        (s, r) = await b.Send(Post, "vms/arriving/rename", """{"new_name": "other"}""");
        Assert.Equal(409, s);
        (s, r) = await b.Send(Post, "migrations/incoming", Incoming("arriving"));
        Assert.Equal((409, true), (s, Fault(r).Contains("already defined here")));

        // Its VMM dies: the definition goes.
        int vmm = VmmOf(b, "arriving");
        Process.GetProcessById(vmm).Kill();
        await Eventually.Until(async () => (await b.List()).Length == 0, "the incoming VM dropped");

        // The source calls it off: the VMM ends, the definition goes.
        await Expect("called-off");
        vmm = VmmOf(b, "called-off");
        (s, r) = await b.Send(HttpMethod.Delete, "migrations/incoming/called-off");
        Assert.True(s == 204, r);
        Assert.Empty(await b.List());
        Assert.False(File.Exists($"/proc/{vmm}/cmdline") && File.ReadAllText($"/proc/{vmm}/cmdline").Contains("vireo-vmm"));
        (s, r) = await b.Send(HttpMethod.Delete, "migrations/incoming/called-off");
        Assert.Equal(404, s);

        // A daemon restarted while one is arriving watches its VMM again; one whose VMM is gone meanwhile is dropped.
        await Expect("orphan");
        vmm = VmmOf(b, "orphan");
        b.KillAndRestart();
        Assert.Equal((DomainState.Incoming, vmm), ((await b.Get("orphan")).State, VmmOf(b, "orphan")));
        b.KillProcess();
        Process.GetProcessById(vmm).Kill();
        b.Relaunch();
        Assert.Empty(await b.List());

        // What does not fit is refused by field.
        async Task Refused(string body, string says)
        {
            var (status, reply) = await b.Send(Post, "migrations/incoming", body);
            Assert.True(status == 400, $"{body}: {status} {reply}");
            Assert.Contains(says, Fault(reply));
        }
        await Refused(Incoming("odd", """{"kernel": 40, "initrd": 41}"""), "fds: names initrd, kernel");
        await Refused(Incoming("odd", """{"kernel": 1}"""), "fds: each file needs its own number");
        await Refused(Incoming("odd").Replace("\"definition\": {\"name\": \"odd\"", "\"definition\": {\"name\": \"even\""), "definition.name: 'even' differs");
        await Refused(Incoming("odd").Replace(TestEnvironment.Guest("idle"), "/etc/passwd"), "kernel");
        await Refused(Incoming("bad name"), "name:");
        Assert.Empty(await b.List());
    }

    /// <summary>
    /// The kit's dirty guest keeps 1 GiB of its RAM written, so the copy takes a while; once the
    /// destination's VMM waits for it, that VMM is stopped (SIGSTOP), so the migration cannot end
    /// before the test has killed what it kills. Its VMM killed, or the whole destination (daemon
    /// and VMM): the VM runs on here. The daemon alone killed and restarted: the restarted one
    /// watches the VMM still receiving, and the migration (forced at its timeout) completes there.
    /// </summary>
    [KvmTheory]
    [InlineData("vmm")]
    [InlineData("destination")]
    [InlineData("daemon")]
    public async Task A_destination_killed_mid_way_leaves_exactly_one_vm_running(string killed)
    {
        using var pair = new Pair();
        var (a, b) = (pair.A, pair.B);
        await a.Ok(Post, "vms", DaemonProcess.Definition("busy", guest: "dirty", extra: """, "cmdline": "mib=1024 rate=400" """).Replace("\"memory_mib\": 32", "\"memory_mib\": 2048"));
        await a.Ok(Post, "vms/busy/start");
        int Beats(DaemonProcess d) => System.Text.RegularExpressions.Regex.Matches(Console(d, "busy"), @"dirty: beat \d+").Count;
        await Eventually.Until(() => Task.FromResult(Beats(a) > 1), "the guest's second heartbeat (its working set all written)");
        int pid = (await a.Get("busy")).Pid!.Value;

        string limits = killed == "daemon" ? """, "downtime_ms": 1, "timeout_s": 8, "timeout_strategy": "force" """ : """, "downtime_ms": 1, "timeout_s": 120""";
        var migrating = a.Send(Post, "vms/busy/migrate", Migrate(b.Socket, limits));
        await Eventually.Until(async () => (await b.Send(HttpMethod.Get, "vms/busy")).Body.Contains("\"incoming\""), "the destination to wait for it");
        int receiver = VmmOf(b, "busy");
        Signal("STOP", receiver);
        await Eventually.Until(async () =>
        {
            var p = JsonSerializer.Deserialize(await a.Http.GetStringAsync("vms/busy/progress"), DaemonJson.Default.OperationProgress)!;
            // Connecting or Copying, as far as the stopped receiver let it get
            return p is { Operation: "migrate", Migration.State: "Connecting" or "Copying" } && p.BytesTotal == 2048L << 20;
        }, "the migration under way");
        switch (killed)
        {
            case "vmm":
                Process.GetProcessById(receiver).Kill();
                break;
            case "destination":
                b.KillProcess();
                Process.GetProcessById(receiver).Kill();
                break;
            case "daemon":
                b.KillAndRestart(); // its VMM stopped: too busy to answer, and so watched again
                Signal("CONT", receiver);
                break;
        }
        var (status, body) = await migrating;
        if (killed == "daemon")
        {
            // It moved: B, restarted, had the VMM receiving it still.
            Assert.True(status == 200, body);
            Assert.Equal(DomainState.Running, JsonSerializer.Deserialize(body, DaemonJson.Default.MigrationResult)!.State);
            Assert.Empty(await a.List());
            Assert.Equal((DomainState.Running, receiver), ((await b.Get("busy")).State, (await b.Get("busy")).Pid));
            int there = Beats(b);
            await Eventually.Until(() => Task.FromResult(Beats(b) > there + 1), "the guest's heartbeat going on there");
            return;
        }
        Assert.True(status == 409, body);
        Assert.Contains("'busy' was not migrated (it runs on here): migration/send:", Fault(body));
        if (killed == "destination")
        {
            Assert.Contains("could not be told to drop it", Fault(body));
            b.Relaunch(); // it finds the VM it was receiving gone, and drops it
        }
        Assert.Equal((DomainState.Running, pid), ((await a.Get("busy")).State, (await a.Get("busy")).Pid));
        int beats = Beats(a);
        await Eventually.Until(() => Task.FromResult(Beats(a) > beats + 1), "the guest's heartbeat going on here");
        await Eventually.Until(async () => (await b.List()).Length == 0, "the destination to drop it");
        Assert.DoesNotContain(Process.GetProcessesByName("vireo-vmm"), p => File.ReadAllText($"/proc/{p.Id}/cmdline").Contains(b.StateDir, StringComparison.Ordinal));
        var progress = JsonSerializer.Deserialize(await a.Http.GetStringAsync("vms/busy/progress"), DaemonJson.Default.OperationProgress)!;
        Assert.Equal((null, null), (progress.Operation, progress.Migration));
    }

    private static void Signal(string signal, int pid)
    {
        using var kill = Process.Start("kill", $"-{signal} {pid}")!;
        kill.WaitForExit();
        Assert.Equal(0, kill.ExitCode);
    }

    /// <summary>The VMM process waiting under the daemon's state directory for VM <paramref name="name"/>.</summary>
    private static int VmmOf(DaemonProcess d, string name) => Process.GetProcessesByName("vireo-vmm")
        .Single(p => File.ReadAllText($"/proc/{p.Id}/cmdline").Contains(Path.Combine(d.StateDir, "vms", name) + "/", StringComparison.Ordinal)).Id;

    /// <summary>
    /// A hostile destination: it answers POST /migrations/incoming as a vireod would, then reads the
    /// VM's first bytes on its receiver socket and hangs up. It records the requests it was sent.
    /// </summary>
    private sealed class FakeDestination : IDisposable
    {
        private readonly Socket _api, _receiver;
        private long _received;
        private readonly ConcurrentQueue<string> _requests = new();
        public string Socket { get; }
        public long Received => Interlocked.Read(ref _received);
        public string[] Requests => [.. _requests];

        public FakeDestination(string dir, long hangUpAfter)
        {
            Socket = Path.Combine(dir, "vireod.sock");
            string receiver = Path.Combine(dir, "receiver.sock");
            _api = Listen(Socket);
            _receiver = Listen(receiver);
            _ = Task.Run(async () =>
            {
                while (true)
                {
                    System.Net.Sockets.Socket c;
                    try
                    {
                        c = await _api.AcceptAsync();
                    }
                    catch (Exception e) when (e is SocketException or ObjectDisposedException)
                    {
                        return;
                    }
                    _ = Task.Run(() => Serve(c, receiver));
                }
            });
            _ = Task.Run(async () =>
            {
                try
                {
                    using var c = await _receiver.AcceptAsync();
                    var buffer = new byte[8192];
                    c.ReceiveTimeout = 2000;
                    while (Received < hangUpAfter)
                    {
                        int n = c.Receive(buffer);
                        if (n <= 0)
                        {
                            break;
                        }
                        Interlocked.Add(ref _received, n);
                    }
                    c.LingerState = new LingerOption(true, 0); // a reset, as a process that died
                }
                catch (Exception e) when (e is SocketException or ObjectDisposedException)
                {
                }
            });
        }

        private static Socket Listen(string path)
        {
            var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            s.Bind(new UnixDomainSocketEndPoint(path));
            s.Listen();
            return s;
        }

        private void Serve(Socket c, string receiver)
        {
            using var stream = new NetworkStream(c, ownsSocket: true);
            try
            {
                while (true)
                {
                    var head = new StringBuilder();
                    while (!head.ToString().EndsWith("\r\n\r\n", StringComparison.Ordinal))
                    {
                        int ch = stream.ReadByte();
                        if (ch < 0)
                        {
                            return;
                        }
                        head.Append((char)ch);
                    }
                    string[] lines = head.ToString().Split("\r\n");
                    string[] start = lines[0].Split(' ');
                    int length = lines.Select(l => l.Split(':', 2)).Where(kv => kv.Length == 2 && kv[0].Trim().Equals("Content-Length", StringComparison.OrdinalIgnoreCase))
                        .Select(kv => int.Parse(kv[1].Trim(), System.Globalization.CultureInfo.InvariantCulture)).FirstOrDefault();
                    var body = new byte[length];
                    stream.ReadExactly(body);
                    _requests.Enqueue($"{start[0]} {start[1]}");
                    var (status, json) = (start[0], start[1]) switch
                    {
                        ("POST", "/migrations/incoming") => (201, $$"""{"name": "wanderer", "receiver_url": "unix:{{receiver}}"}"""),
                        ("DELETE", _) => (204, ""),
                        _ => (404, """{"fault_message": "no such resource"}"""),
                    };
                    stream.Write(Encoding.ASCII.GetBytes($"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {json.Length}\r\n\r\n{json}"));
                }
            }
            catch (IOException)
            {
            }
        }

        public void Dispose()
        {
            _api.Dispose();
            _receiver.Dispose();
        }
    }
}
