using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using Vireo.Sandbox.Seccomp;
using Vireo.Tests;

namespace Vireo.VmmServer.Tests;

/// <summary>
/// The shipped vireo-vmm's seccomp lists (src/Vireo.Sandbox/Seccomp): on every thread, each
/// kind's own, a forbidden call ending the process by SIGSYS with its name in the log, and the
/// lists set against what the threads really call.
/// </summary>
public class SeccompTests
{
    private const int KilledBySigsys = 128 + 31; // how .NET reports a child that SIGSYS ended

    private static string Kernel(string guest) => TestEnvironment.Guest(guest);

    private static string Disk()
    {
        string path = Path.Combine(TempDirectory.Create("vireo-seccomp"), "disk.img");
        using (var f = File.Create(path))
        {
            f.SetLength(16 << 20);
        }
        return path;
    }

    private static Task Seen(VmmProcess vmm, string text, int seconds = 30) =>
        Eventually.Until(() => Task.FromResult(vmm.Output.Contains(text)), $"'{text}' on the console", seconds);

    [KvmTheory]
    [InlineData("vmm", "vireo-vmm", "getppid \\(110\\)")]
    [InlineData("vmm:ioctl", "vireo-vmm", "ioctl \\(16\\) with request KVM_RUN \\(0xae80\\)")]
    [InlineData("api", "vireo-api", "getppid \\(110\\)")]
    [InlineData("api:ioctl", "vireo-api", "ioctl \\(16\\) with request KVM_RUN \\(0xae80\\)")]
    public void A_forbidden_call_on_the_vmm_or_the_api_thread_ends_the_vmm_by_SIGSYS_and_the_log_names_it(string check, string thread, string call)
    {
        string dir = TempDirectory.Create("vireo-seccomp");
        var psi = new ProcessStartInfo(TestEnvironment.Shipped("vireo-vmm"), ["--api-sock", Path.Combine(dir, "api.sock"), "--seccomp-check", check])
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        };
        using var p = Process.Start(psi)!;
        string err = p.StandardError.ReadToEnd();
        Assert.True(p.WaitForExit(20_000));
        Assert.Equal(KilledBySigsys, p.ExitCode);
        Assert.Matches($@"^vireo-vmm: seccomp: the {check.Split(':')[0]} thread \d+ \({thread}\) made a system call its list does not allow: {call}\n$", err);
    }

    [KvmTheory]
    [InlineData("vcpu", "getppid \\(110\\)")]
    [InlineData("io", "getppid \\(110\\)")]
    [InlineData("vcpu:ioctl", "ioctl \\(16\\) with request KVM_CREATE_VM \\(0xae01\\)")]
    [InlineData("io:ioctl", "ioctl \\(16\\) with request KVM_RUN \\(0xae80\\)")]
    public async Task A_forbidden_call_on_a_vcpu_or_the_event_loop_ends_the_vmm_by_SIGSYS_and_the_log_names_it(string check, string call)
    {
        string kind = check.Split(':')[0];
        using var vmm = new VmmProcess(null, "--seccomp-check", check);
        await vmm.Ok("boot-source", $$"""{"kernel_image_path": "{{Kernel("blk")}}"}""");
        await vmm.Ok("machine-config", """{"vcpu_count": 1, "mem_size_mib": 64}""");
        await vmm.Ok("drives/root", $$"""{"drive_id": "root", "path_on_host": "{{Disk()}}"}""");
        try
        {
            await vmm.Put("actions", """{"action_type": "InstanceStart"}""");
        }
        catch (HttpRequestException)
        {
            // the process may be gone before it answers
        }
        Assert.Equal(KilledBySigsys, vmm.WaitForExit());
        Assert.Matches($@"^vireo-vmm: seccomp: the {kind} thread \d+ \((vcpu0|vireo-io)\) made a system call its list does not allow: {call}\n$", vmm.Errors);
        Assert.DoesNotContain("blk:", vmm.Output); // the guest never ran
    }

    [KvmFact]
    public async Task Every_thread_holds_its_kinds_filters_and_no_seccomp_leaves_them_off()
    {
        using (var vmm = new VmmProcess())
        {
            await vmm.Ok("boot-source", $$"""{"kernel_image_path": "{{Kernel("snapshot")}}"}""");
            await vmm.Ok("machine-config", """{"vcpu_count": 2, "mem_size_mib": 64}""");
            await vmm.Ok("drives/root", $$"""{"drive_id": "root", "path_on_host": "{{Disk()}}"}""");
            await vmm.Ok("actions", """{"action_type": "InstanceStart"}""");
            await Seen(vmm, "snapshot: up");
            var threads = Threads(vmm.Pid);
            // Filters stack: the union of the lists first (every thread), then the thread's own.
            Assert.Equal(2, threads["vcpu0"].Filters);
            Assert.Equal(2, threads["vcpu1"].Filters);
            Assert.Equal(2, threads["vireo-io"].Filters);
            Assert.Equal(2, threads["vireo-vmm"].Filters); // the main thread: union, then vmm
            Assert.Equal(2, threads["vireo-api"].Filters);
            Assert.Equal(1, threads["vireo-starter"].Filters);
            Assert.All(threads.Values, t => Assert.Equal((2, true), (t.Mode, t.NoNewPrivs)));
        }
        using (var plain = new VmmProcess(null, "--no-seccomp"))
        {
            Assert.All(Threads(plain.Pid).Values, t => Assert.Equal((0, 0), (t.Mode, t.Filters)));
        }
    }

    private static Dictionary<string, (int Mode, int Filters, bool NoNewPrivs)> Threads(int pid)
    {
        var result = new Dictionary<string, (int, int, bool)>(StringComparer.Ordinal);
        foreach (string task in Directory.GetDirectories($"/proc/{pid}/task"))
        {
            var fields = File.ReadAllLines(Path.Combine(task, "status")).Select(l => l.Split(':', 2)).ToDictionary(f => f[0], f => f[1].Trim());
            result[fields["Name"]] = (int.Parse(fields["Seccomp"]), int.Parse(fields["Seccomp_filters"]), fields["NoNewPrivs"] == "1");
        }
        return result;
    }

    /// <summary>
    /// Runs the guests through what the VMM does (2 vCPUs, a disk buffered and direct, vsock with a
    /// host connection, two NICs on TAPs exchanging frames, console input, MSI-X routes set by a guest, a snapshot and its load
    /// into another process, a migration over a socket and a local one with the RAM in a memfd), all under strace with the lists off, then holds each
    /// list against the calls its threads made: each call made is listed, and each listed call
    /// was made, unless its line says [rare] and why. (The rest of the suite runs with the lists
    /// on: there a call left out ends the VMM by SIGSYS.)
    /// </summary>
    [KvmFact]
    public async Task The_lists_hold_what_each_thread_kind_calls_and_no_more()
    {
        var traces = new List<string>();
        string Trace()
        {
            string d = TempDirectory.Create("vireo-strace");
            traces.Add(d);
            return d;
        }

        // Two vCPUs and a buffered disk, then a direct one.
        foreach (string direct in new[] { "false", "true" })
        {
            using var vmm = VmmProcess.Traced(Trace(), "--no-seccomp");
            // A relative path too, as the README's examples give: the VMM resolves it from its directory.
            await vmm.Ok("boot-source", $$"""{"kernel_image_path": "{{Path.GetRelativePath(Environment.CurrentDirectory, Kernel("blk"))}}"}""");
            await vmm.Ok("machine-config", """{"vcpu_count": 2, "mem_size_mib": 64}""");
            await vmm.Ok("drives/root", $$"""{"drive_id": "root", "path_on_host": "{{Disk()}}", "direct": {{direct}}}""");
            await vmm.Ok("actions", """{"action_type": "InstanceStart"}""");
            Assert.Equal(0, vmm.WaitForExit(60_000));
            Assert.Contains("write-zeroes, discard and out-of-range checks ok", vmm.Output);
        }

        // vsock: a host program connects to the guest's echo server.
        {
            string uds = Path.Combine(TempDirectory.Create("vireo-seccomp"), "v.sock");
            using var vmm = VmmProcess.Traced(Trace(), "--no-seccomp");
            await vmm.Ok("boot-source", $$"""{"kernel_image_path": "{{Kernel("vsock")}}"}""");
            await vmm.Ok("machine-config", """{"vcpu_count": 1, "mem_size_mib": 64}""");
            await vmm.Ok("vsock", $$"""{"guest_cid": 3, "uds_path": "{{uds}}"}""");
            await vmm.Ok("actions", """{"action_type": "InstanceStart"}""");
            await Seen(vmm, "vsock: cid 3");
            // The guest answers once its driver is up: until then a connection is reset.
            Socket? s = null;
            var buffer = new byte[256];
            string answer = "";
            await Eventually.Until(async () =>
            {
                s?.Dispose();
                s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await s.ConnectAsync(new UnixDomainSocketEndPoint(uds));
                    await s.SendAsync(Encoding.ASCII.GetBytes("CONNECT 1234\n"));
                    answer = "";
                    while (!answer.Contains('\n'))
                    {
                        int n = await s.ReceiveAsync(buffer);
                        if (n == 0)
                        {
                            return false;
                        }
                        answer += Encoding.ASCII.GetString(buffer, 0, n);
                    }
                    return answer.StartsWith("OK", StringComparison.Ordinal);
                }
                catch (SocketException)
                {
                    return false;
                }
            }, "the guest's vsock echo server");
            Assert.StartsWith("OK", answer);
            string echoed;
            try
            {
                await s!.SendAsync(Encoding.ASCII.GetBytes("ping"));
                echoed = Encoding.ASCII.GetString(buffer, 0, await s.ReceiveAsync(buffer));
            }
            catch (SocketException e)
            {
                throw new InvalidOperationException($"the echo of ping: {e.Message}; the guest said:\n{vmm.Output}");
            }
            Assert.Equal("ping", echoed);
            s.Dispose();
        }

        // vsock the other way: the guest connects to a host program's port, sends a line, reads the
        // reply and shuts the connection down.
        {
            string uds = Path.Combine(TempDirectory.Create("vireo-seccomp"), "v.sock");
            using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            listener.Bind(new UnixDomainSocketEndPoint(uds + "_7002"));
            listener.Listen();
            using var vmm = VmmProcess.Traced(Trace(), "--no-seccomp");
            await vmm.Ok("boot-source", $$"""{"kernel_image_path": "{{Kernel("vsock")}}", "boot_args": "connect=7002"}""");
            await vmm.Ok("machine-config", """{"vcpu_count": 1, "mem_size_mib": 64}""");
            await vmm.Ok("vsock", $$"""{"guest_cid": 3, "uds_path": "{{uds}}"}""");
            await vmm.Ok("actions", """{"action_type": "InstanceStart"}""");
            using var conn = await listener.AcceptAsync();
            var buffer = new byte[64];
            string line = "";
            while (!line.Contains('\n'))
            {
                int n = await conn.ReceiveAsync(buffer);
                Assert.True(n > 0, "the guest's line");
                line += Encoding.ASCII.GetString(buffer, 0, n);
            }
            await conn.SendAsync(Encoding.ASCII.GetBytes("hello from the host\n"));
            try
            {
                while (await conn.ReceiveAsync(buffer) > 0)
                {
                    // to the guest's shutdown
                }
            }
            catch (SocketException e)
            {
                vmm.WaitForExit(30_000);
                throw new InvalidOperationException($"the guest's shutdown: {e.Message}; the guest said:\n{vmm.Output}");
            }
            Assert.Equal(0, vmm.WaitForExit(30_000));
            Assert.Contains("vsock: host replied: hello from the host", vmm.Output);
        }

        // Two NICs on TAPs: one guest pings, the other echoes.
        using (var bridge = new TapBridge("sc"))
        {
            using var echo = VmmProcess.Traced(Trace(), "--no-seccomp");
            using var ping = VmmProcess.Traced(Trace(), "--no-seccomp");
            foreach (var (vmm, tap, args) in new[] { (echo, bridge.TapA, "role=echo"), (ping, bridge.TapB, "role=ping frames=50") })
            {
                await vmm.Ok("boot-source", $$"""{"kernel_image_path": "{{Kernel("net")}}", "boot_args": "{{args}}"}""");
                await vmm.Ok("machine-config", """{"vcpu_count": 1, "mem_size_mib": 64}""");
                await vmm.Ok("network-interfaces/eth0", $$"""{"iface_id": "eth0", "host_dev_name": "{{tap}}"}""");
                await vmm.Ok("actions", """{"action_type": "InstanceStart"}""");
            }
            Assert.Equal(0, ping.WaitForExit(60_000));
            Assert.Equal(0, echo.WaitForExit(60_000));
        }

        // Console input, a snapshot, its load into a second VMM, and a migration over TCP on to a third.
        {
            string dir = TempDirectory.Create("vireo-seccomp");
            string snap = Path.Combine(dir, "vm.snap"), mem = Path.Combine(dir, "vm.mem");
            using (var first = VmmProcess.Traced(Trace(), "--no-seccomp"))
            {
                // A disk whose queue the guest routes by MSI-X, as Linux does: its table writes
                // re-route on the vCPU's thread, and the restore puts the routes back.
                await first.Ok("boot-source", $$"""{"kernel_image_path": "{{Kernel("snapshot")}}", "boot_args": "msix=1"}""");
                await first.Ok("machine-config", """{"vcpu_count": 2, "mem_size_mib": 64}""");
                await first.Ok("drives/root", $$"""{"drive_id": "root", "path_on_host": "{{Disk()}}"}""");
                await first.Ok("actions", """{"action_type": "InstanceStart"}""");
                await Seen(first, "snapshot: up");
                await first.Put("console/input", "c\n");
                await Seen(first, "count=1");
                using var patch = await first.Http.PatchAsync("vm", new StringContent("""{"state": "Paused"}""", Encoding.UTF8, "application/json"));
                await first.Ok("snapshot/create", $$"""{"snapshot_path": "{{snap}}", "mem_file_path": "{{mem}}"}""");
            }
            using var second = VmmProcess.Traced(Trace(), "--no-seccomp");
            await second.Ok("snapshot/load", $$"""{"snapshot_path": "{{snap}}", "mem_backend": {"backend_type": "File", "backend_path": "{{mem}}"}, "resume_vm": true}""");
            await second.Put("console/input", "c\n");
            await Seen(second, "count=2");
            using var third = VmmProcess.Traced(Trace(), "--no-seccomp");
            int port;
            using (var l = new TcpListener(System.Net.IPAddress.Loopback, 0))
            {
                l.Start();
                port = ((System.Net.IPEndPoint)l.LocalEndpoint).Port;
            }
            string url = $"tcp:127.0.0.1:{port}";
            await third.Ok("migration/receive", $$"""{"receiver_url": "{{url}}"}""");
            await second.Ok("migration/send", $$"""{"destination_url": "{{url}}"}""");
            Assert.Equal(0, second.WaitForExit(60_000));
            await third.Put("console/input", "c\n");
            await Seen(third, "count=3");
            await third.Put("console/input", "q\n");
            Assert.Equal(0, third.WaitForExit(30_000));
        }

        // A restore that cannot be done: one line on standard error (.NET's console sets itself up).
        {
            Trace();
            var psi = new ProcessStartInfo("strace", ["-f", "-ff", "-qq", "-o", Path.Combine(traces[^1], "t"), TestEnvironment.Shipped("vireo-vmm"),
                "--api-sock", Path.Combine(traces[^1], "api.sock"), "--no-seccomp", "--restore", "snapshot_path=/nonexistent.snap,mem_file_path=/nonexistent.mem"])
            {
                RedirectStandardError = true,
            };
            using var p = Process.Start(psi)!;
            Assert.Contains("no such file", p.StandardError.ReadToEnd());
            p.WaitForExit();
        }

        // RAM in a memfd, handed to a second process on the same host (a local migration: the RAM
        // goes over the Unix socket as a descriptor).
        {
            string url = $"unix:{Path.Combine(TempDirectory.Create("vireo-seccomp"), "local.sock")}";
            using var source = VmmProcess.Traced(Trace(), "--no-seccomp");
            await source.Ok("boot-source", $$"""{"kernel_image_path": "{{Kernel("snapshot")}}"}""");
            await source.Ok("machine-config", """{"vcpu_count": 1, "mem_size_mib": 64, "memory_backing": "Memfd"}""");
            await source.Ok("actions", """{"action_type": "InstanceStart"}""");
            await Seen(source, "snapshot: up");
            using var destination = VmmProcess.Traced(Trace(), "--no-seccomp");
            await destination.Ok("migration/receive", $$"""{"receiver_url": "{{url}}"}""");
            await source.Ok("migration/send", $$"""{"destination_url": "{{url}}", "local": true}""");
            Assert.Equal(0, source.WaitForExit(60_000));
            await destination.Put("console/input", "q\n");
            Assert.Equal(0, destination.WaitForExit(30_000));
        }

        var calls = SyscallTrace.Read(traces);
        var problems = new List<string>();
        var runtime = SeccompPolicy.Parse("runtime", SeccompPolicy.Text("runtime"), SeccompPolicy.Text);
        var everyKind = calls.Values.SelectMany(c => c).ToHashSet();
        foreach (string kind in SeccompPolicy.Kinds)
        {
            var policy = SeccompPolicy.Load(kind);
            var made = calls.GetValueOrDefault(kind) ?? [];
            Assert.True(made.Count > 0, $"no {kind} thread was traced");
            var listed = policy.Rules.Select(Key).ToHashSet();
            foreach (string call in made.Where(c => !listed.Contains(c)))
            {
                problems.Add($"{kind}: made {call}, which its list does not name");
            }
            foreach (var rule in policy.Rules.Where(r => r.Allows && !r.Source.Contains("[rare]", StringComparison.Ordinal)))
            {
                bool shared = runtime.Rules.Any(r => r.Source == rule.Source);
                if (!(shared ? everyKind : made).Contains(Key(rule)))
                {
                    problems.Add($"{kind}: never made {Key(rule)}: {rule.Source}");
                }
            }
        }
        if (problems.Count > 0)
        {
            // The traces outlive the test, for a reader to see which thread made what.
            string kept = Path.Combine(Path.GetTempPath(), "vireo-seccomp-traces");
            if (Directory.Exists(kept))
            {
                Directory.Delete(kept, recursive: true);
            }
            foreach (var (d, i) in traces.Select((d, i) => (d, i)))
            {
                Directory.CreateDirectory(Path.Combine(kept, i.ToString()));
                foreach (string f in Directory.GetFiles(d))
                {
                    File.Copy(f, Path.Combine(kept, i.ToString(), Path.GetFileName(f)));
                }
            }
            Assert.Fail($"{string.Join("\n", problems.Distinct())}\n(the traces are in {kept})");
        }
    }

    /// <summary>How a rule shows in a trace: "ioctl KVM_RUN" for a request, the call's name otherwise.</summary>
    private static string Key(SeccompRule rule) =>
        rule.Syscall == "ioctl" && rule.Arg == 1 ? $"ioctl {SeccompNames.All.First(n => n.Value == rule.Value).Key}" : rule.Syscall;
}
