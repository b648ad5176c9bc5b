using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text;
using Vireo.Tests;

namespace Vireo.VmmServer.Tests;

/// <summary>Cloud Hypervisor's migration API on the shipped vireo-vmm: PUT /migration/receive, PUT /migration/send, GET /migration, between two processes.</summary>
public class MigrationApiTests
{
    private static string Kernel(string guest) => TestEnvironment.Guest(guest);

    private static async Task Type(VmmProcess vmm, string text)
    {
        using var r = await vmm.Http.PutAsync("console/input", new ByteArrayContent(Encoding.ASCII.GetBytes(text)));
        Assert.Equal(204, (int)r.StatusCode);
    }

    private static Task Seen(VmmProcess vmm, string text) =>
        Eventually.Until(() => Task.FromResult(vmm.Output.Contains(text)), $"'{text}' on the console");

    private static Task<Api.MigrationInfo?> Migration(VmmProcess vmm) => vmm.Http.GetFromJsonAsync("migration", Api.VmmJson.Default.MigrationInfo);

    private static async Task<VmmProcess> Booted(string backing = "Auto")
    {
        var vmm = new VmmProcess();
        await vmm.Ok("boot-source", $$"""{"kernel_image_path": "{{Kernel("snapshot")}}"}""");
        await vmm.Ok("machine-config", $$"""{"vcpu_count": 2, "mem_size_mib": 128, "memory_backing": "{{backing}}"}""");
        await vmm.Ok("actions", """{"action_type": "InstanceStart"}""");
        await Seen(vmm, "snapshot: up");
        return vmm;
    }

    private static int FreePort()
    {
        using var l = new TcpListener(System.Net.IPAddress.Loopback, 0);
        l.Start();
        return ((System.Net.IPEndPoint)l.LocalEndpoint).Port;
    }

    [KvmTheory]
    [InlineData("unix", false)]
    [InlineData("tcp", false)]
    [InlineData("unix", true)] // local: the memfd crosses, not the RAM
    public async Task A_running_vm_moves_to_a_fresh_vmm_and_the_source_ends_migrated(string scheme, bool local)
    {
        string url = scheme == "unix" ? "unix:" + Path.Combine(TempDirectory.Create("vireo-migapi"), "mig.sock") : $"tcp:127.0.0.1:{FreePort()}";
        using var source = await Booted(local ? "Memfd" : "Auto");
        await Type(source, "c\n");
        await Seen(source, "count=1");
        using var destination = new VmmProcess();
        Assert.Equal("None", (await Migration(destination))!.State);
        await destination.Ok("migration/receive", $$"""{"receiver_url": "{{url}}"}""");
        Assert.Equal("Receiving", (await destination.Info())!.State);
        var (again, againBody) = await destination.Put("migration/receive", $$"""{"receiver_url": "{{url}}"}""");
        Assert.Equal(400, again);
        Assert.Contains("Receiving", VmmProcess.Fault(againBody));

        await source.Ok("migration/send", $$"""{"destination_url": "{{url}}", "downtime_ms": 300, "timeout_s": 60, "timeout_strategy": "cancel", "local": {{(local ? "true" : "false")}}}""");
        var progress = (await Migration(source))!;
        Assert.Equal("Completed", progress.State);
        Assert.NotNull(progress.DowntimeMs);
        Assert.Equal(local ? 0 : 1, Math.Min(progress.Round, 1));
        Assert.Equal(0, source.WaitForExit()); // Migrated: a clean end

        await Eventually.Until(async () => (await destination.Info())!.State == "Running", "the destination running");
        var info = (await destination.Info())!;
        Assert.Equal(2, info.VcpuCount);
        Assert.Equal(128, info.MemSizeMib);
        await Type(destination, "c\n");
        await Seen(destination, "count=2");
        Assert.Equal("Completed", (await Migration(destination))!.State);
        await Type(destination, "q\n");
        Assert.Equal(0, destination.WaitForExit());
    }

    [KvmFact]
    public async Task Migrations_that_cannot_happen_are_refused_by_field_and_the_source_runs_on()
    {
        using var source = await Booted();
        string dir = TempDirectory.Create("vireo-migapi");
        async Task Refused(string body, string says)
        {
            var (status, reply) = await source.Put("migration/send", body);
            Assert.True(status == 400, $"{body}: {status} {reply}");
            Assert.Contains(says, VmmProcess.Fault(reply));
            Assert.DoesNotContain("System.", reply);
        }
        await Refused("""{"destination_url": "ftp:host:1"}""", "destination_url");
        await Refused("""{"destination_url": "tcp:localhost:0"}""", "destination_url");
        await Refused("""{}""", "destination_url");
        await Refused($$"""{"destination_url": "unix:{{dir}}/nobody.sock", "timeout_strategy": "later"}""", "timeout_strategy");
        await Refused($$"""{"destination_url": "unix:{{dir}}/nobody.sock", "downtime_ms": 0}""", "downtime_ms");
        await Refused($$"""{"destination_url": "unix:{{dir}}/nobody.sock", "timeout_s": -1}""", "timeout_s");
        await Refused($$"""{"destination_url": "unix:{{dir}}/nobody.sock"}""", "nobody.sock");
        await Refused($$"""{"destination_url": "unix:{{dir}}/nobody.sock", "local": true}""", "memfd"); // Auto is anonymous here
        Assert.Equal("Failed", (await Migration(source))!.State);
        Assert.Equal("Running", (await source.Info())!.State);
        await Type(source, "c\n");
        await Seen(source, "count=1");

        var (s, b) = await source.Put("migration/receive", $$"""{"receiver_url": "unix:{{dir}}/r.sock"}""");
        Assert.Equal(400, s);
        Assert.Contains("Running", VmmProcess.Fault(b));
        using var fresh = new VmmProcess();
        (s, b) = await fresh.Put("migration/send", $$"""{"destination_url": "unix:{{dir}}/r.sock"}""");
        Assert.Equal(400, s);
        Assert.Contains("NotStarted", VmmProcess.Fault(b));
        (s, b) = await fresh.Put("migration/receive", $$"""{"receiver_url": "unix:{{dir}}"}""");
        Assert.Equal(400, s);
        Assert.Contains("directory", VmmProcess.Fault(b));
        Assert.Equal("NotStarted", (await fresh.Info())!.State);
        (s, b) = await fresh.Put("machine-config", """{"vcpu_count": 1, "mem_size_mib": 64, "memory_backing": "Hugetlb"}""");
        Assert.Equal(400, s);
        Assert.Contains("memory_backing", VmmProcess.Fault(b));
    }

    [KvmFact]
    public async Task A_destination_killed_mid_stream_leaves_the_source_running_and_it_can_migrate_again()
    {
        using var source = await Booted();
        string dir = TempDirectory.Create("vireo-migapi");
        string url = $"unix:{dir}/mig.sock";
        using (var doomed = new VmmProcess())
        {
            await doomed.Ok("migration/receive", $$"""{"receiver_url": "{{url}}"}""");
            doomed.Kill();
        }
        var (status, body) = await source.Put("migration/send", $$"""{"destination_url": "{{url}}"}""");
        Assert.Equal(400, status);
        Assert.Equal("Running", (await source.Info())!.State);
        await Type(source, "c\n");
        await Seen(source, "count=1");

        using var destination = new VmmProcess();
        await destination.Ok("migration/receive", $$"""{"receiver_url": "{{url}}"}""");
        await source.Ok("migration/send", $$"""{"destination_url": "{{url}}"}""");
        Assert.Equal(0, source.WaitForExit());
        await Eventually.Until(async () => (await destination.Info())!.State == "Running", "the destination running");
        await Type(destination, "c\n");
        await Seen(destination, "count=2");
    }
}
