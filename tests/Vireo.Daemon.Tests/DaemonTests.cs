using System.Diagnostics;
using Vireo.Api;
using Vireo.Tests;

namespace Vireo.Daemon.Tests;

/// <summary>vireod over its socket: definitions in SQLite, one supervised vireo-vmm per running VM.</summary>
public class DaemonTests
{
    private static readonly HttpMethod Post = HttpMethod.Post, Delete = HttpMethod.Delete;

    [KvmFact]
    public async Task Twenty_vms_are_created_started_paused_resumed_and_destroyed_concurrently()
    {
        using var d = new DaemonProcess();
        var names = Enumerable.Range(1, 20).Select(i => $"vm{i:D2}").ToArray();
        await Task.WhenAll(names.Select(async n =>
        {
            await d.Ok(Post, "vms", DaemonProcess.Definition(n));
            Assert.Equal(DomainState.Running, (await d.Ok(Post, $"vms/{n}/start")).State);
            Assert.Equal(DomainState.Paused, (await d.Ok(Post, $"vms/{n}/pause")).State);
            Assert.Equal(DomainState.Running, (await d.Ok(Post, $"vms/{n}/resume")).State);
        }));
        var list = await d.List();
        Assert.Equal(names, list.Select(v => v.Name).Order()); // listed by id: the order they were defined in
        Assert.All(list, v => Assert.True(v.State == DomainState.Running && v.Pid is > 0, $"{v.Name}: {v.State} pid {v.Pid}"));
        Assert.Equal(20, list.Select(v => v.Pid).Distinct().Count()); // one VMM process each
        Assert.Equal(Enumerable.Range(1, 20), list.Select(v => v.Id));
        Assert.Equal(list.OrderBy(v => v.Id).Select(v => v.Name), list.Select(v => v.Name));
        await Task.WhenAll(names.Select(async n => Assert.Equal(DomainState.ShutOff, (await d.Ok(Post, $"vms/{n}/destroy")).State)));
        Assert.All(list, v => Assert.False(Directory.Exists($"/proc/{v.Pid}") && !File.ReadAllText($"/proc/{v.Pid}/stat").Contains(") Z ")));
        await Task.WhenAll(names.Select(n => d.Send(Delete, $"vms/{n}")));
        Assert.Empty(await d.List());
    }

    [KvmFact]
    public async Task A_daemon_killed_with_sigkill_comes_back_to_find_its_vms_running_and_controllable()
    {
        using var d = new DaemonProcess();
        await d.Ok(Post, "vms", DaemonProcess.Definition("keep"));
        var started = await d.Ok(Post, "vms/keep/start");
        d.KillAndRestart();
        var after = await d.Get("keep");
        Assert.Equal((DomainState.Running, started.Pid), (after.State, after.Pid)); // the same VMM process, re-attached
        Assert.Equal(DomainState.Paused, (await d.Ok(Post, "vms/keep/pause")).State);
        Assert.Equal(DomainState.ShutOff, (await d.Ok(Post, "vms/keep/destroy")).State);
    }

    [KvmFact]
    public async Task A_vmm_killed_is_noticed_and_on_crash_applied()
    {
        using var d = new DaemonProcess();
        await d.Ok(Post, "vms", DaemonProcess.Definition("phoenix", extra: """, "on_crash": "restart" """));
        await d.Ok(Post, "vms", DaemonProcess.Definition("mortal", extra: """, "on_crash": "destroy" """));
        await d.Ok(Post, "vms", DaemonProcess.Definition("kept", extra: """, "on_crash": "preserve" """));
        var pids = new Dictionary<string, int>();
        foreach (var n in new[] { "phoenix", "mortal", "kept" })
        {
            pids[n] = (await d.Ok(Post, $"vms/{n}/start")).Pid!.Value;
            Process.GetProcessById(pids[n]).Kill(); // SIGKILL
        }
        await Eventually.Until(async () => (await d.Get("phoenix")) is { State: DomainState.Running, Pid: int p } && p != pids["phoenix"], "phoenix to run again");
        await Eventually.Until(async () => (await d.Get("mortal")).State == DomainState.ShutOff, "mortal to be shut off");
        await Eventually.Until(async () => (await d.Get("kept")).State == DomainState.Crashed, "kept to be marked crashed");
        Assert.Equal("the VMM process died", (await d.Get("mortal")).LastExit);
        await d.Ok(Post, "vms/phoenix/destroy");
    }

    [KvmFact]
    public async Task A_guest_that_powers_off_is_shut_off()
    {
        using var d = new DaemonProcess();
        await d.Ok(Post, "vms", DaemonProcess.Definition("brief", guest: "hello"));
        await d.Ok(Post, "vms/brief/start");
        await Eventually.Until(async () => (await d.Get("brief")).State == DomainState.ShutOff, "the guest to power off");
        Assert.Contains("powered off", (await d.Get("brief")).LastExit);
        Assert.Contains("Hello from a Vireo test guest!", File.ReadAllText(Path.Combine(d.StateDir, "vms", "brief", "console.log")));
    }

    [Theory]
    [InlineData("""{"name": "x", "kernel": "/etc/passwd"}""", 400, "kernel: /etc/passwd is outside the image directories")]
    [InlineData("""{"name": "bad name!", "kernel": "K"}""", 400, "name: \"bad name!\" does not match")]
    [InlineData("""{"name": "x", "kernel": "K", "vcpus": 0}""", 400, "vcpus: 0 is below the minimum 1")]
    [InlineData("""{"name": "x", "kernel": "K", "memory_mib": 99999999}""", 400, "memory_mib: 99999999 is above the maximum 1048576")]
    [InlineData("""{"name": "x", "kernel": "K", "on_crash": "panic"}""", 400, "on_crash: \"panic\" is not one of \"destroy\", \"restart\", \"preserve\"")]
    [InlineData("""{"name": "x", "kernel": "K", "colour": "red"}""", 400, "colour: unknown field")]
    [InlineData("""{"name": "x", "kernel": "K", "vcpus": "two"}""", 400, "vcpus: expected an integer, got the string \"two\"")]
    [InlineData("""{"name": "x"}""", 400, "kernel: required, but missing")]
    [InlineData("""{"name": "x", "kern""", 400, "malformed JSON")]
    public async Task Bad_definitions_get_a_4xx_that_names_the_field_and_the_daemon_keeps_serving(string json, int status, string message)
    {
        using var d = new DaemonProcess();
        var (got, body) = await d.Send(Post, "vms", json.Replace("\"K\"", $"\"{TestEnvironment.Guest("idle")}\""));
        Assert.Equal(status, got);
        Assert.Contains(message, System.Text.Json.JsonDocument.Parse(body).RootElement.GetProperty("fault_message").GetString());
        Assert.Empty(await d.List());
    }

    [Fact]
    public async Task Duplicate_names_unknown_vms_and_undefining_a_running_vm_are_refused()
    {
        using var d = new DaemonProcess();
        await d.Ok(Post, "vms", DaemonProcess.Definition("one"));
        var (status, body) = await d.Send(Post, "vms", DaemonProcess.Definition("one"));
        Assert.Equal((409, true), (status, body.Contains("already defined")));
        Assert.Equal(404, (await d.Send(Post, "vms/nobody/start")).Status);
        Assert.Equal(404, (await d.Send(HttpMethod.Get, "vms/nobody")).Status);
        Assert.Equal(409, (await d.Send(Post, "vms/one/pause")).Status); // not running
        Assert.Equal(204, (await d.Send(Delete, "vms/one")).Status);
    }

    [Theory]
    [InlineData("shutdown", """{"timeout_seconds": "soon"}""", "shutdown: timeout_seconds must be a whole number, got \"soon\"")]
    [InlineData("shutdown", """{"timeout": 5}""", "shutdown: unknown field 'timeout' (known: timeout_seconds)")]
    [InlineData("shutdown", """{"timeout_seconds": 5""", "body: malformed JSON at byte 21")]
    [InlineData("rename", """{}""", "rename: new_name is required")]
    [InlineData("rename", """{"new_name": 7}""", "rename: new_name must be a string, got 7")]
    public async Task Bad_action_bodies_are_refused_in_the_apis_words(string action, string json, string message)
    {
        using var d = new DaemonProcess();
        await d.Ok(Post, "vms", DaemonProcess.Definition("one"));
        var (status, body) = await d.Send(Post, $"vms/one/{action}", json);
        Assert.Equal(400, status);
        string fault = System.Text.Json.JsonDocument.Parse(body).RootElement.GetProperty("fault_message").GetString()!;
        Assert.Equal(message, fault);
        Assert.DoesNotContain("System.", fault);
    }

    [Theory]
    [InlineData("shutdown", "{\"timeout_seconds\": 5, \"\xff\": 1}")]
    [InlineData("rename", "{\"new_name\": \"a\xc3\"}")]
    public async Task Action_bodies_with_invalid_utf8_are_a_400_naming_the_byte(string action, string latin1)
    {
        using var d = new DaemonProcess();
        await d.Ok(Post, "vms", DaemonProcess.Definition("one"));
        byte[] body = System.Text.Encoding.Latin1.GetBytes(latin1); // one byte a char: not UTF-8
        using var r = await d.Http.PostAsync($"vms/one/{action}", new ByteArrayContent(body) { Headers = { ContentType = new("application/json") } });
        string text = await r.Content.ReadAsStringAsync();
        Assert.True((int)r.StatusCode == 400, $"{(int)r.StatusCode} {text}");
        string fault = System.Text.Json.JsonDocument.Parse(text).RootElement.GetProperty("fault_message").GetString()!;
        Assert.Equal($"body: invalid UTF-8 at byte {Array.FindIndex(body, b => b >= 0x80)}", fault);
    }
}
