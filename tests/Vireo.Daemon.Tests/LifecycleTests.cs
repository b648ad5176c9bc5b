using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Vireo.Api;
using Vireo.Tests;

namespace Vireo.Daemon.Tests;

/// <summary>xl/virsh lifecycle through vireod: graceful shutdown, on_reboot, rename, redefine, console, events.</summary>
public class LifecycleTests
{
    private static readonly HttpMethod Post = HttpMethod.Post, Put = HttpMethod.Put;

    [KvmFact]
    public async Task Shutdown_presses_the_power_button_and_a_guest_that_answers_powers_off()
    {
        using var d = new DaemonProcess();
        await d.Ok(Post, "vms", DaemonProcess.Definition("polite", guest: "powerbutton"));
        await d.Ok(Post, "vms/polite/start");
        await Eventually.Until(() => Task.FromResult(File.ReadAllText(ConsoleLog(d, "polite")).Contains("waiting")), "the guest to wait for the button");
        var (status, _) = await d.Send(Post, "vms/polite/shutdown", """{"timeout_seconds": 30}""");
        Assert.Equal(202, status);
        await Eventually.Until(async () => (await d.Get("polite")).State == DomainState.ShutOff, "the guest to power off");
        Assert.Contains("powered off", (await d.Get("polite")).LastExit);
        Assert.DoesNotContain("shutdown-forced", d.Log);
    }

    [KvmFact]
    public async Task Shutdown_destroys_a_guest_that_ignores_the_button_once_the_timeout_passes()
    {
        using var d = new DaemonProcess();
        await d.Ok(Post, "vms", DaemonProcess.Definition("deaf", extra: """, "on_poweroff": "restart" """));
        await d.Ok(Post, "vms/deaf/start");
        var started = DateTime.UtcNow;
        Assert.Equal(202, (await d.Send(Post, "vms/deaf/shutdown", """{"timeout_seconds": 1}""")).Status);
        Assert.Equal(DomainState.Running, (await d.Get("deaf")).State);
        await Eventually.Until(async () => (await d.Get("deaf")).State == DomainState.ShutOff, "the forced destroy");
        Assert.True(DateTime.UtcNow - started >= TimeSpan.FromSeconds(1));
        await Task.Delay(500);
        Assert.Equal(DomainState.ShutOff, (await d.Get("deaf")).State); // a forced shutdown is a destroy: on_poweroff=restart does not apply
        await Eventually.Until(() => Task.FromResult(d.Log.Contains("shutdown-forced", StringComparison.Ordinal)), "shutdown-forced in the log");
    }

    [KvmFact]
    public async Task A_paused_vm_refuses_a_graceful_shutdown()
    {
        using var d = new DaemonProcess();
        await d.Ok(Post, "vms", DaemonProcess.Definition("sleepy"));
        await d.Ok(Post, "vms/sleepy/start");
        await d.Ok(Post, "vms/sleepy/pause");
        var (status, body) = await d.Send(Post, "vms/sleepy/shutdown");
        Assert.Equal((409, true), (status, body.Contains("paused")));
        await d.Ok(Post, "vms/sleepy/destroy");
    }

    [KvmTheory]
    [InlineData("restart")]
    [InlineData("destroy")]
    public async Task On_reboot_restarts_in_the_same_vmm_or_shuts_the_vm_off(string policy)
    {
        // Without ACPI the kit's hello guest ends with an i8042 reset: a reboot.
        using var d = new DaemonProcess();
        await d.Ok(Post, "vms", DaemonProcess.Definition("bouncy", guest: "hello", extra: $$""", "acpi": false, "on_reboot": "{{policy}}" """));
        int pid = (await d.Ok(Post, "vms/bouncy/start")).Pid!.Value;
        if (policy == "restart")
        {
            await Eventually.Until(() => Task.FromResult(Boots(d) >= 3), "three boots");
            var vm = await d.Get("bouncy");
            Assert.Equal((DomainState.Running, pid), (vm.State, vm.Pid)); // rebuilt inside the same VMM process
            await d.Ok(Post, "vms/bouncy/destroy");
        }
        else
        {
            await Eventually.Until(async () => (await d.Get("bouncy")).State == DomainState.ShutOff, "the VM to be shut off");
            Assert.Equal(1, Boots(d));
            // The event is logged just after the state is stored, and the log comes through a pipe: wait for it, do not race it.
            await Eventually.Until(() => Task.FromResult(d.Log.Contains("on_reboot=destroy", StringComparison.Ordinal)), "on_reboot=destroy in the log");
        }
    }

    private static int Boots(DaemonProcess d) => File.ReadAllText(ConsoleLog(d, "bouncy")).Split("Hello from a Vireo test guest!").Length - 1;

    [KvmFact]
    public async Task Rename_moves_a_stopped_vm_and_is_refused_while_it_runs()
    {
        using var d = new DaemonProcess();
        await d.Ok(Post, "vms", DaemonProcess.Definition("old"));
        await d.Ok(Post, "vms", DaemonProcess.Definition("taken"));
        await d.Ok(Post, "vms/old/start");
        Assert.Equal(409, (await d.Send(Post, "vms/old/rename", """{"new_name": "new"}""")).Status);
        await d.Ok(Post, "vms/old/destroy");
        Assert.Equal(409, (await d.Send(Post, "vms/old/rename", """{"new_name": "taken"}""")).Status);
        var (status, body) = await d.Send(Post, "vms/old/rename", """{"new_name": "no good"}""");
        Assert.Equal((400, true), (status, body.Contains("new_name")));
        var renamed = await d.Ok(Post, "vms/old/rename", """{"new_name": "new"}""");
        Assert.Equal(("new", 1, "new"), (renamed.Name, renamed.Id, renamed.Definition.Name));
        Assert.Equal(404, (await d.Send(HttpMethod.Get, "vms/old")).Status);
        Assert.True(Directory.Exists(Path.Combine(d.StateDir, "vms", "new")));
        Assert.Equal(DomainState.Running, (await d.Ok(Post, "vms/new/start")).State);
        await d.Ok(Post, "vms/new/destroy");
    }

    [KvmFact]
    public async Task A_yaml_definition_is_accepted_and_an_edit_takes_effect_at_the_next_start()
    {
        using var d = new DaemonProcess();
        string yaml = $"""
            # a comment
            name: shaped
            kernel: {TestEnvironment.Guest("idle")}
            vcpus: 2
            memory_mib: 48
            """;
        var vm = await d.Ok(Post, "vms", yaml);
        Assert.Equal((2, 48L), (vm.Vcpus, vm.MemoryMib));
        var (status, body) = await d.Send(Put, "vms/shaped", yaml.Replace("memory_mib: 48", "memory_mib: banana"));
        Assert.Equal(400, status);
        Assert.Contains("line 5: memory_mib: expected an integer", body);
        Assert.Equal(400, (await d.Send(Put, "vms/shaped", yaml.Replace("name: shaped", "name: other"))).Status);
        Assert.Equal(64L, (await d.Ok(Put, "vms/shaped", yaml.Replace("memory_mib: 48", "memory_mib: 64"))).MemoryMib);
        await d.Ok(Post, "vms/shaped/start");
        await d.Ok(Post, "vms/shaped/destroy");
    }

    [KvmFact]
    public async Task The_console_is_proxied_from_the_vmm_with_history_and_input()
    {
        using var d = new DaemonProcess();
        await d.Ok(Post, "vms", DaemonProcess.Definition("talky", guest: "console"));
        await d.Ok(Post, "vms/talky/start");
        using var stream = await d.Http.GetStreamAsync("vms/talky/console");
        var seen = new StringBuilder();
        var reader = Task.Run(async () =>
        {
            var buffer = new byte[4096];
            int n;
            while ((n = await stream.ReadAsync(buffer)) > 0)
            {
                lock (seen)
                {
                    seen.Append(Encoding.UTF8.GetString(buffer, 0, n));
                }
            }
        });
        string Seen()
        {
            lock (seen)
            {
                return seen.ToString();
            }
        }
        await Eventually.Until(() => Task.FromResult(Seen().Contains("console: type")), "the guest's prompt (history)");
        using var input = new ByteArrayContent("hello daemon\r"u8.ToArray());
        Assert.Equal(204, (int)(await d.Http.PutAsync("vms/talky/console/input", input)).StatusCode);
        await Eventually.Until(() => Task.FromResult(Seen().Contains("echo: hello daemon")), "the echo (live)");
        using var quit = new ByteArrayContent("q\r"u8.ToArray());
        await d.Http.PutAsync("vms/talky/console/input", quit);
        await reader.WaitAsync(TimeSpan.FromSeconds(30)); // the stream ends with the VM
        await Eventually.Until(async () => (await d.Get("talky")).State == DomainState.ShutOff, "the guest to power off");
        string logs = await d.Http.GetStringAsync("vms/talky/logs");
        Assert.Contains("echo: hello daemon", logs);
        Assert.Equal(409, (await d.Send(HttpMethod.Get, "vms/talky/console")).Status);
    }

    [KvmFact]
    public async Task Lifecycle_changes_stream_as_server_sent_events_and_replay_after_last_event_id()
    {
        using var d = new DaemonProcess();
        using var request = new HttpRequestMessage(HttpMethod.Get, "events");
        using var response = await d.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        var events = new List<LifecycleEvent>();
        var reading = Task.Run(async () =>
        {
            await foreach (var item in System.Net.ServerSentEvents.SseParser.Create(await response.Content.ReadAsStreamAsync()).EnumerateAsync())
            {
                lock (events)
                {
                    events.Add(JsonSerializer.Deserialize(item.Data, DaemonJson.Default.LifecycleEvent)!);
                }
            }
        });
        string[] Seen()
        {
            lock (events)
            {
                return [.. events.Select(e => $"{e.Vm} {e.Event} {e.State}")];
            }
        }
        await d.Ok(Post, "vms", DaemonProcess.Definition("watched"));
        await d.Ok(Post, "vms/watched/start");
        await d.Ok(Post, "vms/watched/pause");
        await d.Ok(Post, "vms/watched/resume");
        await d.Ok(Post, "vms/watched/destroy");
        string[] expected = ["watched defined shut off", "watched started running", "watched paused paused", "watched resumed running", "watched stopped shut off", "watched destroyed shut off"];
        await Eventually.Until(() => Task.FromResult(Seen().Length >= expected.Length), "six events");
        Assert.Equal(expected, Seen());

        // A client that reconnects with Last-Event-ID gets what came after it.
        using var replay = new HttpRequestMessage(HttpMethod.Get, "events");
        replay.Headers.Add("Last-Event-ID", "4");
        using var again = await d.Http.SendAsync(replay, HttpCompletionOption.ResponseHeadersRead);
        var replayed = new List<string>();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        await foreach (var item in System.Net.ServerSentEvents.SseParser.Create(await again.Content.ReadAsStreamAsync(cts.Token)).EnumerateAsync(cts.Token))
        {
            replayed.Add(item.EventId!);
            if (replayed.Count == 2)
            {
                break;
            }
        }
        Assert.Equal(["5", "6"], replayed);
    }

    private static string ConsoleLog(DaemonProcess d, string vm) => Path.Combine(d.StateDir, "vms", vm, "console.log") is var p && File.Exists(p) ? p : "/dev/null";
}
