using System.Diagnostics;
using System.Text;
using Vireo.Tests;

namespace Vireo.VmmServer.Tests;

/// <summary>`vireo-vmm --restore KEY=VALUE,...` (Cloud Hypervisor's option, PUT /snapshot/load's keys): parsed strictly, and a real restore before the API starts.</summary>
public class RestoreOptionTests
{
    [Theory]
    [InlineData("snapshot_path=/s", "mem_file_path is required")]
    [InlineData("mem_file_path=/m", "snapshot_path is required")]
    [InlineData("snapshot_path=/s,mem_file_path=/m,resume_vm=yes", "resume_vm must be on, off, true or false, got 'yes'")]
    [InlineData("snapshot_path=/s,mem_file_path=/m,prefault=on", "unknown key 'prefault' (keys: snapshot_path, mem_file_path, resume_vm, track_dirty_pages, enable_diff_snapshots)")]
    [InlineData("snapshot_path=/s,snapshot_path=/t,mem_file_path=/m", "snapshot_path is given twice")]
    [InlineData("snapshot_path=,mem_file_path=/m", "snapshot_path is empty")]
    [InlineData("/just/a/path", "'/just/a/path' is not KEY=VALUE")]
    public void A_wrong_value_is_named(string value, string words)
    {
        Assert.StartsWith(words, RestoreOption.Parse(value, out var load));
        Assert.Null(load);
    }

    [Fact]
    public void The_keys_are_those_of_snapshot_load()
    {
        Assert.Null(RestoreOption.Parse("snapshot_path=/s,mem_file_path=/m,resume_vm=on,track_dirty_pages=true", out var load));
        Assert.Equal(new Api.SnapshotLoadParams("/s", MemFilePath: "/m", ResumeVm: true, TrackDirtyPages: true), load);
        Assert.Null(RestoreOption.Parse("snapshot_path=/s,mem_file_path=/m", out load));
        Assert.False(load!.ResumeVm);
    }

    [Fact]
    public void A_restore_that_cannot_be_done_is_one_line_and_exit_2()
    {
        string dir = TempDirectory.Create("vireo-restoreopt");
        File.WriteAllText(Path.Combine(dir, "text.snap"), "not a snapshot\n");
        foreach (var (option, words) in new[]
        {
            ("snapshot_path=/nonexistent.snap,mem_file_path=/nonexistent.mem", "vireo-vmm: --restore: snapshot/load: snapshot_path /nonexistent.snap: no such file"),
            ($"snapshot_path={dir}/text.snap,mem_file_path={dir}/text.snap", "vireo-vmm: --restore: snapshot/load: this is not a Vireo snapshot"),
            ("resume_vm=on", "vireo-vmm: --restore: snapshot_path is required"),
        })
        {
            var psi = new ProcessStartInfo(TestEnvironment.Shipped("vireo-vmm"), ["--api-sock", Path.Combine(dir, "api.sock"), "--restore", option])
            {
                RedirectStandardError = true,
                RedirectStandardOutput = true,
            };
            using var p = Process.Start(psi)!;
            string err = p.StandardError.ReadToEnd();
            Assert.True(p.WaitForExit(20_000));
            Assert.Equal(2, p.ExitCode);
            Assert.StartsWith(words, err);
            Assert.Single(err.TrimEnd('\n').Split('\n'));
            Assert.False(File.Exists(Path.Combine(dir, "api.sock")));
        }
    }

    [KvmFact]
    public async Task A_vm_restored_at_start_runs_before_its_api_and_is_then_driven_by_it()
    {
        string dir = TempDirectory.Create("vireo-restoreopt");
        string snap = Path.Combine(dir, "vm.snap"), mem = Path.Combine(dir, "vm.mem");
        using (var first = new VmmProcess())
        {
            await first.Ok("boot-source", $$"""{"kernel_image_path": "{{TestEnvironment.Guest("snapshot")}}"}""");
            await first.Ok("machine-config", """{"vcpu_count": 2, "mem_size_mib": 128}""");
            await first.Ok("actions", """{"action_type": "InstanceStart"}""");
            await Eventually.Until(() => Task.FromResult(first.Output.Contains("snapshot: up")), "the guest up");
            await Type(first, "c\n");
            await Eventually.Until(() => Task.FromResult(first.Output.Contains("count=1")), "count=1");
            using (var r = await first.Http.PatchAsync("vm", new StringContent("""{"state": "Paused"}""", Encoding.UTF8, "application/json")))
            {
                Assert.Equal(204, (int)r.StatusCode);
            }
            await first.Ok("snapshot/create", $$"""{"snapshot_path": "{{snap}}", "mem_file_path": "{{mem}}"}""");
            await first.Ok("actions", """{"action_type": "Stop"}""");
        }
        using var second = new VmmProcess(null, "--restore", $"snapshot_path={snap},mem_file_path={mem},resume_vm=on");
        var info = (await second.Info())!;
        Assert.Equal("Running", info.State); // by the time the API listens, the VM runs
        Assert.Equal(128, info.MemSizeMib);
        Assert.Equal(2, info.VcpuCount);
        await Type(second, "c\n");
        await Eventually.Until(() => Task.FromResult(second.Output.Contains("count=2")), "count=2 from the restored guest");
        var (status, body) = await second.Put("snapshot/load", $$"""{"snapshot_path": "{{snap}}", "mem_file_path": "{{mem}}"}""");
        Assert.Equal(400, status);
        Assert.Contains("Running", VmmProcess.Fault(body));
        await Type(second, "q\n");
        Assert.Equal(0, second.WaitForExit());
    }

    private static async Task Type(VmmProcess vmm, string text)
    {
        using var r = await vmm.Http.PutAsync("console/input", new ByteArrayContent(Encoding.ASCII.GetBytes(text)));
        Assert.Equal(204, (int)r.StatusCode);
    }
}
