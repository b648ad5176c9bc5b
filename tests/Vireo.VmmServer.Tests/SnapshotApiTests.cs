using System.Text;
using Vireo.Tests;

namespace Vireo.VmmServer.Tests;

/// <summary>Firecracker's snapshot API on the shipped vireo-vmm: PATCH /vm, PUT /snapshot/create, PUT /snapshot/load into a fresh process.</summary>
public class SnapshotApiTests
{
    private static string Kernel(string guest) => TestEnvironment.Guest(guest);

    private static async Task<(int Status, string Body)> Patch(VmmProcess vmm, string path, string json)
    {
        using var r = await vmm.Http.PatchAsync(path, new StringContent(json, Encoding.UTF8, "application/json"));
        return ((int)r.StatusCode, await r.Content.ReadAsStringAsync());
    }

    private static async Task Type(VmmProcess vmm, string text)
    {
        using var r = await vmm.Http.PutAsync("console/input", new ByteArrayContent(Encoding.ASCII.GetBytes(text)));
        Assert.Equal(204, (int)r.StatusCode);
    }

    private static Task Seen(VmmProcess vmm, string text) =>
        Eventually.Until(() => Task.FromResult(vmm.Output.Contains(text)), $"'{text}' on the console");

    [KvmFact]
    public async Task A_vm_saved_by_one_vmm_goes_on_in_another_and_bad_loads_are_refused_without_harm()
    {
        string dir = TempDirectory.Create("vireo-snapapi");
        string snap = Path.Combine(dir, "vm.snap"), mem = Path.Combine(dir, "vm.mem");
        using (var first = new VmmProcess())
        {
            await first.Ok("boot-source", $$"""{"kernel_image_path": "{{Kernel("snapshot")}}"}""");
            await first.Ok("machine-config", """{"vcpu_count": 2, "mem_size_mib": 128}""");
            await first.Ok("actions", """{"action_type": "InstanceStart"}""");
            await Seen(first, "snapshot: up");
            await Type(first, "c\n");
            await Seen(first, "count=1");

            var (status, body) = await first.Put("snapshot/create", $$"""{"snapshot_path": "{{snap}}", "mem_file_path": "{{mem}}"}""");
            Assert.Equal(400, status);
            Assert.Contains("pause it first", VmmProcess.Fault(body));
            (status, body) = await Patch(first, "vm", """{"state": "Sleeping"}""");
            Assert.Equal(400, status);
            Assert.Contains("'Sleeping'", VmmProcess.Fault(body));

            Assert.Equal(204, (await Patch(first, "vm", """{"state": "Paused"}""")).Status);
            Assert.Equal("Paused", (await first.Info())!.State);
            (status, body) = await first.Put("snapshot/create", $$"""{"snapshot_type": "Diff", "snapshot_path": "{{snap}}", "mem_file_path": "{{mem}}"}""");
            Assert.Equal(400, status);
            Assert.Contains("track_dirty_pages", VmmProcess.Fault(body));
            Assert.False(File.Exists(mem));
            await first.Ok("snapshot/create", $$"""{"snapshot_type": "Full", "snapshot_path": "{{snap}}", "mem_file_path": "{{mem}}"}""");
            Assert.Equal("Paused", (await first.Info())!.State);
            Assert.Equal(204, (await Patch(first, "vm", """{"state": "Resumed"}""")).Status);
            await Type(first, "c\n");
            await Seen(first, "count=2"); // the source goes on after a snapshot
        }

        using var second = new VmmProcess();
        string truncated = Path.Combine(dir, "truncated.snap");
        File.WriteAllBytes(truncated, File.ReadAllBytes(snap)[..100]);
        string text = Path.Combine(dir, "text.snap");
        File.WriteAllText(text, "hello, I am not a snapshot\n");
        string[] bad =
        [
            $$$"""{"snapshot_path": "{{{dir}}}/none.snap", "mem_backend": {"backend_type": "File", "backend_path": "{{{mem}}}"}}""",
            $$$"""{"snapshot_path": "{{{truncated}}}", "mem_backend": {"backend_type": "File", "backend_path": "{{{mem}}}"}}""",
            $$$"""{"snapshot_path": "{{{mem}}}", "mem_backend": {"backend_type": "File", "backend_path": "{{{mem}}}"}}""",
            $$$"""{"snapshot_path": "{{{text}}}", "mem_backend": {"backend_type": "File", "backend_path": "{{{mem}}}"}}""",
            $$$"""{"snapshot_path": "{{{snap}}}", "mem_backend": {"backend_type": "File", "backend_path": "{{{snap}}}"}}""",
            $$$"""{"snapshot_path": "{{{snap}}}", "mem_backend": {"backend_type": "Uffd", "backend_path": "/tmp/uffd.sock"}}""",
            $$"""{"snapshot_path": "{{snap}}"}""",
        ];
        string[] expected = ["no such file", "truncated", "a snapshot is a regular file of at most 64 MiB", "not a Vireo snapshot", "RAM is", "Uffd", "mem_backend is required"];
        for (int i = 0; i < bad.Length; i++)
        {
            var (status, body) = await second.Put("snapshot/load", bad[i]);
            Assert.True(status == 400, $"{bad[i]}: {status} {body}");
            Assert.Contains(expected[i], VmmProcess.Fault(body));
            Assert.Equal("NotStarted", (await second.Info())!.State); // and it goes on serving
        }
        await second.Ok("snapshot/load", $$$"""{"snapshot_path": "{{{snap}}}", "mem_backend": {"backend_type": "File", "backend_path": "{{{mem}}}"}, "resume_vm": true}""");
        var info = (await second.Info())!;
        Assert.Equal("Running", info.State);
        Assert.Equal(2, info.VcpuCount);
        Assert.Equal(128, info.MemSizeMib);
        await Type(second, "c\n");
        await Seen(second, "count=2"); // the snapshot's count: 1, and one more
        var (again, againBody) = await second.Put("snapshot/load", $$$"""{"snapshot_path": "{{{snap}}}", "mem_backend": {"backend_type": "File", "backend_path": "{{{mem}}}"}}""");
        Assert.Equal(400, again);
        Assert.Contains("Running", VmmProcess.Fault(againBody));
        await Type(second, "q\n");
        Assert.Equal(0, second.WaitForExit());
    }

    [KvmFact]
    public async Task A_snapshot_loaded_without_resume_waits_paused()
    {
        string dir = TempDirectory.Create("vireo-snapapi");
        string snap = Path.Combine(dir, "vm.snap"), mem = Path.Combine(dir, "vm.mem");
        using (var first = new VmmProcess())
        {
            await first.Ok("boot-source", $$"""{"kernel_image_path": "{{Kernel("snapshot")}}"}""");
            await first.Ok("actions", """{"action_type": "InstanceStart"}""");
            await Seen(first, "snapshot: up");
            Assert.Equal(204, (await Patch(first, "vm", """{"state": "Paused"}""")).Status);
            await first.Ok("snapshot/create", $$"""{"snapshot_path": "{{snap}}", "mem_file_path": "{{mem}}"}""");
        }
        using var second = new VmmProcess();
        await second.Ok("snapshot/load", $$"""{"snapshot_path": "{{snap}}", "mem_file_path": "{{mem}}"}""");
        Assert.Equal("Paused", (await second.Info())!.State);
        // A paused restore prints nothing: GET /console still answers with its headers at once.
        using (var headers = new CancellationTokenSource(TimeSpan.FromSeconds(20)))
        using (var console = await second.Http.GetAsync("console", HttpCompletionOption.ResponseHeadersRead, headers.Token))
        {
            Assert.Equal(200, (int)console.StatusCode);
        }
        Assert.Equal(204, (await Patch(second, "vm", """{"state": "Resumed"}""")).Status);
        await Type(second, "c\n");
        await Seen(second, "count=1");
    }

    [KvmFact]
    public async Task With_track_dirty_pages_a_diff_snapshot_onto_the_last_memory_file_restores_the_guest_as_it_is_now()
    {
        string dir = TempDirectory.Create("vireo-snapapi");
        string full = Path.Combine(dir, "full.snap"), diff = Path.Combine(dir, "diff.snap"), mem = Path.Combine(dir, "vm.mem");
        using (var first = new VmmProcess())
        {
            await first.Ok("boot-source", $$"""{"kernel_image_path": "{{Kernel("snapshot")}}"}""");
            await first.Ok("machine-config", """{"vcpu_count": 1, "mem_size_mib": 128, "track_dirty_pages": true}""");
            await first.Ok("actions", """{"action_type": "InstanceStart"}""");
            await Seen(first, "snapshot: up");
            Assert.Equal(204, (await Patch(first, "vm", """{"state": "Paused"}""")).Status);
            await first.Ok("snapshot/create", $$"""{"snapshot_type": "Full", "snapshot_path": "{{full}}", "mem_file_path": "{{mem}}"}""");
            Assert.Equal(204, (await Patch(first, "vm", """{"state": "Resumed"}""")).Status);
            await Type(first, "c\n");
            await Seen(first, "count=1");
            Assert.Equal(204, (await Patch(first, "vm", """{"state": "Paused"}""")).Status);
            await first.Ok("snapshot/create", $$"""{"snapshot_type": "Diff", "snapshot_path": "{{diff}}", "mem_file_path": "{{mem}}"}""");
        }
        using var second = new VmmProcess();
        await second.Ok("snapshot/load", $$"""{"snapshot_path": "{{diff}}", "mem_backend": {"backend_type": "File", "backend_path": "{{mem}}"}, "resume_vm": true, "track_dirty_pages": true}""");
        await Type(second, "c\n");
        await Seen(second, "count=2");
        Assert.Equal(204, (await Patch(second, "vm", """{"state": "Paused"}""")).Status);
        // The restored VM tracks from its restore on: another diff lands on the same file.
        await second.Ok("snapshot/create", $$"""{"snapshot_type": "Diff", "snapshot_path": "{{diff}}", "mem_file_path": "{{mem}}"}""");
        string other = Path.Combine(dir, "other.mem");
        File.WriteAllBytes(other, new byte[4096]);
        var (status, body) = await second.Put("snapshot/create", $$"""{"snapshot_type": "Diff", "snapshot_path": "{{diff}}.x", "mem_file_path": "{{other}}"}""");
        Assert.Equal(400, status);
        Assert.Contains("not a memory file of this VM", VmmProcess.Fault(body));
        Assert.Equal(4096, new FileInfo(other).Length);
    }
}
