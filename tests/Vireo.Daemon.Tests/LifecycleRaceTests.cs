using Vireo.Api;
using Vireo.Tests;

namespace Vireo.Daemon.Tests;

/// <summary>
/// Lifecycle races and leftovers: undefine against a start in progress, a daemon killed in the
/// middle of a start, and what a VM leaves on disk. Never a 500, never two VMMs or an unseen one.
/// </summary>
public class LifecycleRaceTests
{
    private static readonly HttpMethod Post = HttpMethod.Post, Delete = HttpMethod.Delete;

    [KvmFact]
    public async Task Undefine_during_a_start_waits_for_it_and_is_refused_or_wins_and_no_vmm_is_left_unseen()
    {
        using var d = new DaemonProcess();
        foreach (int delayMs in new[] { 0, 50, 150, 300, 600 })
        {
            await d.Ok(Post, "vms", DaemonProcess.Definition("racy"));
            var start = d.Send(Post, "vms/racy/start");
            await Task.Delay(delayMs);
            var (undefine, why) = await d.Send(Delete, "vms/racy");
            var (started, body) = await start;
            Assert.True(started is 200 or 404 or 409, $"start: {started} {body}");
            Assert.True(undefine is 204 or 409, $"undefine after {delayMs} ms: {undefine} {why}");
            if (undefine == 409)
            {
                Assert.Contains("destroy it first", why);
                Assert.Equal(200, started);
                Assert.Equal([(await d.Get("racy")).Pid!.Value], ImagePolicyTests.VmmProcessesOf(d, "racy"));
                await d.Ok(Post, "vms/racy/destroy");
                Assert.Equal(204, (await d.Send(Delete, "vms/racy")).Status);
            }
            Assert.Empty(await d.List());
            Assert.Empty(ImagePolicyTests.VmmProcessesOf(d, "racy"));
        }
    }

    [KvmFact]
    public async Task A_daemon_killed_during_a_start_leaves_no_second_vmm_the_restarted_one_adopts_or_ends_it()
    {
        using var d = new DaemonProcess();
        await d.Ok(Post, "vms", DaemonProcess.Definition("halfway"));
        var start = d.Send(Post, "vms/halfway/start");
        await Eventually.Until(() => Task.FromResult(ImagePolicyTests.VmmProcessesOf(d, "halfway").Count > 0), "the VMM to be spawned");
        d.KillAndRestart(); // SIGKILL while the VMM is being configured
        await Assert.ThrowsAnyAsync<Exception>(() => start);

        var vm = await d.Get("halfway");
        var vmms = ImagePolicyTests.VmmProcessesOf(d, "halfway");
        if (vm.State == DomainState.Running)
        {
            Assert.Equal([vm.Pid!.Value], vmms); // it had started: adopted
        }
        else
        {
            Assert.Equal((DomainState.ShutOff, null), (vm.State, vm.Pid));
            Assert.Empty(vmms); // it had not: ended
            await d.Ok(Post, "vms/halfway/start");
        }
        vm = await d.Get("halfway");
        Assert.Equal([vm.Pid!.Value], ImagePolicyTests.VmmProcessesOf(d, "halfway"));
        Assert.Equal(409, (await d.Send(Post, "vms/halfway/start")).Status);
        await d.Ok(Post, "vms/halfway/destroy");
        Assert.Empty(ImagePolicyTests.VmmProcessesOf(d, "halfway"));
    }

    [KvmFact]
    public async Task Undefine_removes_the_vms_directory_and_its_logs_are_private_to_the_daemons_user()
    {
        using var d = new DaemonProcess();
        await d.Ok(Post, "vms", DaemonProcess.Definition("brief", guest: "hello"));
        await d.Ok(Post, "vms/brief/start");
        await Eventually.Until(async () => (await d.Get("brief")).State == DomainState.ShutOff, "the guest to power off");
        string dir = Path.Combine(d.StateDir, "vms", "brief");
        var owner = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        Assert.Equal(owner, File.GetUnixFileMode(Path.Combine(dir, "console.log")));
        Assert.Equal(owner, File.GetUnixFileMode(Path.Combine(dir, "vmm.log")));
        Assert.Equal(owner | UnixFileMode.UserExecute, File.GetUnixFileMode(dir));
        Assert.Contains("Hello from a Vireo test guest!", await d.Http.GetStringAsync("vms/brief/logs"));

        Assert.Equal(204, (await d.Send(Delete, "vms/brief")).Status);
        Assert.False(Directory.Exists(dir));
        await d.Ok(Post, "vms", DaemonProcess.Definition("brief"));
        Assert.Equal("", await d.Http.GetStringAsync("vms/brief/logs")); // a new VM of the same name shows none of the old one's output

        // A directory an earlier vireod left behind at undefine is not inherited either.
        string left = Directory.CreateDirectory(Path.Combine(d.StateDir, "vms", "heir")).FullName;
        File.WriteAllText(Path.Combine(left, "console.log"), "the old guest's secrets\n");
        await d.Ok(Post, "vms", DaemonProcess.Definition("heir"));
        Assert.Equal("", await d.Http.GetStringAsync("vms/heir/logs"));
    }

    [Fact]
    public async Task Renaming_onto_a_name_being_defined_at_the_same_moment_is_a_409_never_a_500()
    {
        using var d = new DaemonProcess();
        for (int i = 0; i < 10; i++)
        {
            await d.Ok(Post, "vms", DaemonProcess.Definition($"from{i}"));
            var define = d.Send(Post, "vms", DaemonProcess.Definition($"to{i}"));
            var rename = d.Send(Post, $"vms/from{i}/rename", $$"""{"new_name": "to{{i}}"}""");
            var (defined, body1) = await define;
            var (renamed, body2) = await rename;
            Assert.True(defined is 201 or 409 && renamed is 200 or 409 && (defined == 201) != (renamed == 200),
                $"define {defined} {body1}; rename {renamed} {body2}");
        }
        Assert.Equal(10, (await d.List()).Count(v => v.Name.StartsWith("to", StringComparison.Ordinal))); // one of the two made each
    }
}
