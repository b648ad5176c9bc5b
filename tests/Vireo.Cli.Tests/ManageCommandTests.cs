using System.Text.Json;
using Vireo.Api;
using Vireo.Daemon.Tests;
using Vireo.Tests;

namespace Vireo.Cli.Tests;

/// <summary>The operator's commands against a real vireod: output, --json shapes, exit statuses.</summary>
public class ManageCommandTests
{
    private static TestEnvironment.ProcessResult Vireo(DaemonProcess d, string arguments, string? stdin = null, (string, string)[]? env = null) =>
        VireoProcess.Run(arguments, stdin, env: [("VIREO_CONNECT", d.Socket), .. env ?? []]);

    private static string DefinitionFile(DaemonProcess d, string name, string guest = "idle", string extra = "")
    {
        string file = Path.Combine(d.StateDir, $"{name}.yaml");
        File.WriteAllText(file, $"name: {name}\nkernel: {TestEnvironment.Guest(guest)}\nmemory_mib: 32\n{extra}");
        return file;
    }

    [KvmFact]
    public void Create_list_info_pause_resume_destroy_undefine_and_their_exit_statuses()
    {
        using var d = new DaemonProcess();
        var created = Vireo(d, $"create {DefinitionFile(d, "web")}");
        Assert.True(created.ExitCode == 0, created.Error);
        Assert.Matches(@"web: defined \(id 1\), running as pid \d+", created.Output);

        var list = Vireo(d, "list");
        Assert.Equal(0, list.ExitCode);
        var lines = list.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(["Name", "ID", "Mem", "VCPUs", "State", "Time(s)"], lines[0].Split(' ', StringSplitOptions.RemoveEmptyEntries));
        Assert.Equal(["web", "1", "32", "1", "running"], lines[1].Split(' ', StringSplitOptions.RemoveEmptyEntries)[..5]);

        Assert.Equal(0, Vireo(d, "pause web").ExitCode);
        string infoJson = Vireo(d, "info web --json").Output;
        var info = JsonSerializer.Deserialize(infoJson, DaemonJson.Default.VmSummary)!;
        // docs/cli.md: every key present, null when empty (last_exit before any run has ended).
        using (var doc = JsonDocument.Parse(infoJson))
        {
            Assert.Equal(["name", "id", "state", "vcpus", "memory_mib", "pid", "uptime_seconds", "last_exit", "definition", "saved_to", "tenant"],
                doc.RootElement.EnumerateObject().Select(p => p.Name));
            Assert.Equal(JsonValueKind.Null, doc.RootElement.GetProperty("last_exit").ValueKind);
        }
        Assert.Equal((DomainState.Paused, 32L), (info.State, info.MemoryMib));
        Assert.Contains("State:", Vireo(d, "info web").Output);
        Assert.Equal(0, Vireo(d, "resume web").ExitCode);

        var duplicate = Vireo(d, $"create {DefinitionFile(d, "web")}");
        Assert.Equal((1, "vireo: name: a VM named 'web' is already defined"), (duplicate.ExitCode, duplicate.Error.Trim()));
        var missing = Vireo(d, "pause nobody");
        Assert.Equal((3, "vireo: no VM named 'nobody'"), (missing.ExitCode, missing.Error.Trim()));
        var running = Vireo(d, "undefine web");
        Assert.Equal(1, running.ExitCode);
        Assert.Contains("destroy it first", running.Error);

        Assert.Equal(0, Vireo(d, "destroy web").ExitCode);
        Assert.Equal(0, Vireo(d, "undefine web").ExitCode);
        Assert.Equal("[]", Vireo(d, "list --json").Output.Trim());
    }

    [Fact]
    public void A_bad_definition_exits_2_listing_every_field_with_its_line()
    {
        using var d = new DaemonProcess();
        string file = Path.Combine(d.StateDir, "bad.yaml");
        File.WriteAllText(file, "name: bad\nkernel: /k\nvcpus: 0\nmemory_mib: lots\ncolour: red\n");
        var r = Vireo(d, $"create {file}");
        Assert.Equal(2, r.ExitCode);
        Assert.Equal(
            ["vireo: invalid definition:", "line 3: vcpus: 0 is below the minimum 1", "line 4: memory_mib: expected an integer, got the string \"lots\"",
             "line 5: colour: unknown field (known: name, kernel, initrd, cmdline, vcpus, memory_mib, disks, nets, acpi, on_poweroff, on_reboot, on_crash, autostart)"],
            r.Error.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        Assert.Equal(2, Vireo(d, "create /no/such/file.yaml").ExitCode);
        var zero = Vireo(d, "create /dev/zero");
        Assert.Equal((2, "vireo: /dev/zero: longer than 1048576 characters; a definition is far smaller"), (zero.ExitCode, zero.Error.Trim()));
        var deep = Vireo(d, "create -", stdin: "name: " + new string('[', 100_000));
        Assert.Equal(2, deep.ExitCode);
        Assert.Contains("nested more than 16 levels deep", deep.Error);
        Assert.Equal(2, Vireo(d, "list --no-such-option").ExitCode);
    }

    [Fact]
    public void An_unreachable_daemon_exits_4_and_says_where_it_looked()
    {
        var r = VireoProcess.Run("list", env: [("VIREO_CONNECT", "/tmp/vireo-no-such-daemon.sock")]);
        Assert.Equal(4, r.ExitCode);
        Assert.Contains("no socket at /tmp/vireo-no-such-daemon.sock", r.Error);
    }

    [Fact]
    public void Over_tcp_the_commands_need_the_token_and_exit_5_without_it()
    {
        string dir = TempDirectory.Create("vireo-cli-tcp");
        string tokenFile = Path.Combine(dir, "token");
        File.WriteAllText(tokenFile, "a-token-of-at-least-sixteen-characters");
        var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        int port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        var pki = new TestPki(dir);
        using var d = new DaemonProcess(extraArgs: $"--listen 127.0.0.1:{port} --tls-cert {pki.CertFile} --tls-key {pki.KeyFile} --token-file {tokenFile}");
        string url = $"https://127.0.0.1:{port}";
        TestEnvironment.ProcessResult ok = null!;
        for (int i = 0; i < 50 && (ok = VireoProcess.Run($"--connect {url} --ca-file {pki.CaFile} --token-file {tokenFile} list --json")).ExitCode == 4; i++)
        {
            Thread.Sleep(100); // the TCP listener comes up a moment after the socket
        }
        Assert.True(ok.ExitCode == 0, ok.Error);
        Assert.Equal("[]", ok.Output.Trim());
        var refused = VireoProcess.Run($"--connect {url} --ca-file {pki.CaFile} list");
        Assert.Equal(5, refused.ExitCode);
        Assert.Contains("bearer token is required", refused.Error);
        // The certificate is checked: without the CA that signed it, nothing is sent.
        var untrusted = VireoProcess.Run($"--connect {url} --token-file {tokenFile} list");
        Assert.True(untrusted.ExitCode == 4 && untrusted.Error.Contains("its TLS certificate is not trusted here (give the certificate, or the CA that signed it, with --ca-file"), untrusted.Error);
        // Plain HTTP is refused by the CLI itself, with what to use instead.
        var plain = VireoProcess.Run($"--connect http://127.0.0.1:{port} --token-file {tokenFile} list");
        Assert.True(plain.ExitCode == 2 && plain.Error.Contains("https://"), plain.Error);
    }

    /// <summary>docs/cli.md documents this shape: these keys, in this order, always present.</summary>
    [KvmFact]
    public void List_json_has_the_documented_stable_shape()
    {
        using var d = new DaemonProcess();
        Assert.Equal(0, Vireo(d, $"create --no-start {DefinitionFile(d, "a")}").ExitCode);
        Assert.Equal(0, Vireo(d, $"create {DefinitionFile(d, "b")}").ExitCode);
        using var doc = JsonDocument.Parse(Vireo(d, "list --json").Output);
        string[] documented = ["name", "id", "state", "vcpus", "memory_mib", "uptime_seconds", "pid", "saved_to", "tenant"];
        Assert.All(doc.RootElement.EnumerateArray(), vm => Assert.Equal(documented, vm.EnumerateObject().Select(p => p.Name)));
        var a = doc.RootElement[0];
        Assert.Equal(("a", "shut off", JsonValueKind.Null, JsonValueKind.Null), (a.GetProperty("name").GetString(), a.GetProperty("state").GetString(),
            a.GetProperty("pid").ValueKind, a.GetProperty("uptime_seconds").ValueKind));
        Assert.Equal(JsonValueKind.Number, doc.RootElement[1].GetProperty("pid").ValueKind);
        string docs = File.ReadAllText(Path.Combine(TestEnvironment.Root, "docs", "cli.md"));
        foreach (var key in documented)
        {
            Assert.Contains($"`{key}`", docs);
        }
        Assert.Equal(0, Vireo(d, "destroy b").ExitCode);
    }

    [KvmFact]
    public void Shutdown_waits_for_the_guest_or_destroys_it_after_the_timeout()
    {
        using var d = new DaemonProcess();
        Vireo(d, $"create {DefinitionFile(d, "polite", guest: "powerbutton")}");
        Vireo(d, $"create {DefinitionFile(d, "deaf")}");
        Thread.Sleep(300); // the powerbutton guest arms its handler
        var polite = Vireo(d, "shutdown polite --timeout 30");
        Assert.True(polite.ExitCode == 0, polite.Error);
        Assert.Contains("polite: shut off (guest powered off (ACPI S5))", polite.Output);
        var deaf = Vireo(d, "shutdown deaf --timeout 1");
        Assert.True(deaf.ExitCode == 0, deaf.Error);
        Assert.Contains("deaf: shut off (destroyed: the guest did not power off within 1 s of the power button)", deaf.Output);
    }

    [KvmFact]
    public void Console_attaches_from_two_terminals_and_ends_when_the_vm_stops()
    {
        using var d = new DaemonProcess();
        Vireo(d, $"create {DefinitionFile(d, "talky", guest: "console")}");
        // A first terminal only watches; a second one types, and the guest quits on "q".
        var watcher = Task.Run(() => Vireo(d, "console talky"));
        Thread.Sleep(500);
        var typist = Vireo(d, "console talky", stdin: "from the second terminal\rq\r");
        var watched = watcher.Wait(TimeSpan.FromSeconds(60)) ? watcher.Result : throw new TimeoutException("the watching console did not end");
        foreach (var r in new[] { typist, watched })
        {
            Assert.True(r.ExitCode == 0, r.Error);
            Assert.Contains("console: type; a line \"q\" quits", r.Output); // the history
            Assert.Contains("echo: from the second terminal", r.Output);
            Assert.Contains("[talky has stopped]", r.Error);
        }
        Assert.Contains("echo: from the second terminal", Vireo(d, "logs talky").Output);
    }

    [KvmFact]
    public void Ctrl_close_bracket_detaches_a_terminal_and_the_vm_goes_on()
    {
        using var d = new DaemonProcess();
        Vireo(d, $"create {DefinitionFile(d, "talky", guest: "console")}");
        // script(1) gives vireo a pseudo-terminal, as an operator's shell would.
        var r = TestEnvironment.Run("script", $"-qec \"{VireoProcess.Program} console talky\" /dev/null", stdin: "typed\r\u001d",
            env: [("VIREO_CONNECT", d.Socket)]);
        Assert.True(r.ExitCode == 0, r.Output + r.Error);
        Assert.Contains("Connected to talky; Ctrl-] detaches.", r.Output);
        Assert.Contains("[detached from talky; it goes on running]", r.Output);
        Assert.Equal(DomainState.Running, JsonSerializer.Deserialize(Vireo(d, "info talky --json").Output, DaemonJson.Default.VmSummary)!.State);
        Vireo(d, "destroy talky");
    }

    [KvmFact]
    public void Edit_saves_a_valid_change_and_keeps_a_refused_one_in_a_file()
    {
        using var d = new DaemonProcess();
        Vireo(d, $"create --no-start {DefinitionFile(d, "shaped")}");
        var ok = Vireo(d, "edit shaped", env: [("EDITOR", "sed -i 's/^memory_mib: 32/memory_mib: 48/'")]);
        Assert.True(ok.ExitCode == 0, ok.Error);
        Assert.Equal("shaped: definition updated", ok.Output.Trim());
        Assert.Equal(48L, JsonSerializer.Deserialize(Vireo(d, "info shaped --json").Output, DaemonJson.Default.VmSummary)!.MemoryMib);

        var bad = Vireo(d, "edit shaped", env: [("EDITOR", "sed -i 's/^vcpus: 1/vcpus: -3/'")]);
        Assert.Equal(2, bad.ExitCode);
        Assert.Contains("vcpus: -3 is below the minimum 1", bad.Error);
        string kept = bad.Error.Split("your edit is kept in ")[1].Trim();
        Assert.Contains("vcpus: -3", File.ReadAllText(kept));
        File.Delete(kept);
        Assert.Equal("shaped: no changes", Vireo(d, "edit shaped", env: [("EDITOR", "true")]).Output.Trim());
    }

    [KvmFact]
    public void Events_prints_lifecycle_changes_as_json_lines()
    {
        using var d = new DaemonProcess();
        Vireo(d, $"create {DefinitionFile(d, "watched")}");
        Vireo(d, "destroy watched");
        var r = Vireo(d, "events --after 0 --count 4 --json");
        Assert.True(r.ExitCode == 0, r.Error);
        var events = r.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonSerializer.Deserialize(l, DaemonJson.Default.LifecycleEvent)!).ToArray();
        Assert.Equal(["defined", "started", "stopped", "destroyed"], events.Select(e => e.Event));
        Assert.Equal([1L, 2, 3, 4], events.Select(e => e.Seq));
        // docs/cli.md: every key, null when empty ("defined" has no detail).
        using var first = JsonDocument.Parse(r.Output.Split('\n')[0]);
        Assert.Equal(["seq", "time", "vm", "event", "state", "detail", "tenant"], first.RootElement.EnumerateObject().Select(p => p.Name));
        Assert.Equal(JsonValueKind.Null, first.RootElement.GetProperty("detail").ValueKind);
    }

    [KvmFact]
    public void Console_from_a_script_ends_at_the_end_of_its_input()
    {
        using var d = new DaemonProcess();
        Vireo(d, $"create {DefinitionFile(d, "talky", guest: "console")}");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var r = Vireo(d, "console talky", stdin: "from a script\r");
        Assert.True(r.ExitCode == 0, r.Error);
        Assert.Contains("echo: from a script", r.Output);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"console took {clock.Elapsed} to end after its input");
        Assert.Equal(DomainState.Running, JsonSerializer.Deserialize(Vireo(d, "info talky --json").Output, DaemonJson.Default.VmSummary)!.State);
        Vireo(d, "destroy talky");
    }

    [Theory]
    [InlineData("logs web --tail-bytes abc", "vireo: --tail-bytes: 'abc' is not a whole number from 0 to 16777216")]
    [InlineData("shutdown web --timeout 99999999999", "vireo: --timeout: '99999999999' is not a whole number from 0 to 86400")]
    [InlineData("events --count 0", "vireo: --count: '0' is not a whole number from 1 to 2147483647")]
    [InlineData("events --after -1", "vireo: --after: '-1' is not a whole number from 0 to 9223372036854775807")]
    public void Bad_numbers_are_refused_in_words(string arguments, string message)
    {
        var r = VireoProcess.Run(arguments, env: [("VIREO_CONNECT", "/tmp/vireo-no-such-daemon.sock")]);
        Assert.Equal(2, r.ExitCode);
        Assert.Contains(message, r.Error);
        Assert.DoesNotContain("System.", r.Error);
    }

    [KvmFact]
    public async Task Logs_tail_bytes_gives_the_end_of_the_console()
    {
        using var d = new DaemonProcess();
        Vireo(d, $"create {DefinitionFile(d, "brief", guest: "hello")}");
        await Eventually.Until(() => Task.FromResult(Vireo(d, "logs brief").Output.Contains("Hello from a Vireo test guest!")), "the guest's greeting in its log");
        // The guest writes on after its greeting: the log is read once it has powered off and is whole.
        await Eventually.Until(() => Task.FromResult(JsonSerializer.Deserialize(Vireo(d, "info brief --json").Output, DaemonJson.Default.VmSummary)!.State == DomainState.ShutOff),
            "the guest's power-off");
        string all = Vireo(d, "logs brief").Output;
        var tail = Vireo(d, "logs brief --tail-bytes 10");
        Assert.True(tail.ExitCode == 0, tail.Error);
        Assert.Equal(all[^10..], tail.Output);
    }

    [KvmFact]
    public void Help_names_the_vm_argument_name_not_the_daemons_vms()
    {
        using var d = new DaemonProcess();
        Vireo(d, $"create --no-start {DefinitionFile(d, "web")}");
        var help = Vireo(d, "--help");
        Assert.Contains("start <name>", help.Output);
        Assert.DoesNotContain("<web>", help.Output);
        Assert.Contains("vireo info <name>", Vireo(d, "info --help").Output);
    }

    [KvmFact]
    public void Completion_offers_commands_and_vm_names_from_the_daemon()
    {
        using var d = new DaemonProcess();
        Vireo(d, $"create --no-start {DefinitionFile(d, "webserver")}");
        Assert.Contains("pause", Vireo(d, "[suggest:3] \"pau\"").Output.Split('\n'));
        Assert.Contains("webserver", Vireo(d, "[suggest:9] \"info webs\"").Output.Split('\n'));
        var script = VireoProcess.Run("completion bash");
        Assert.Contains("complete -o default -F _vireo_complete vireo", script.Output);
        var syntax = TestEnvironment.Run("bash", "-n", stdin: script.Output);
        Assert.True(syntax.ExitCode == 0, syntax.Error);
    }
}
