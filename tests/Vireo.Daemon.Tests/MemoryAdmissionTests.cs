using Vireo.Api;
using Vireo.Tests;

namespace Vireo.Daemon.Tests;

/// <summary>Admission against host memory: the policy fed numbers, then through a real vireod.</summary>
public class MemoryAdmissionTests
{
    private static readonly HttpMethod Post = HttpMethod.Post;

    [Theory]
    [InlineData(1024, 0, 24_000, true)]
    [InlineData(24_000, 0, 24_000, true)]    // exactly the host: fits
    [InlineData(24_001, 0, 24_000, false)]
    [InlineData(22_528, 22_528, 24_000, false)] // a second 22 GiB VM on a 24 GiB host
    [InlineData(1_000, 23_000, 24_000, true)]
    [InlineData(1_001, 23_000, 24_000, false)]
    public void Start_admits_only_what_fits_beside_the_running_vms(long ask, long committed, long host, bool fits)
    {
        string? refused = MemoryAdmission.CheckStart("vm", ask, committed, host);
        Assert.Equal(fits, refused is null);
        if (refused is not null)
        {
            Assert.Contains($"asks for {ask} MiB", refused);
            Assert.Contains($"{committed} MiB are committed to running VMs", refused);
            Assert.Contains($"this host has {host} MiB", refused);
        }
    }

    [Fact]
    public void Define_refuses_only_a_vm_larger_than_the_host()
    {
        Assert.Null(MemoryAdmission.CheckDefine(24_000, 24_000));
        Assert.Contains("more than this host's 24000 MiB", MemoryAdmission.CheckDefine(1_048_576, 24_000));
    }

    [Fact]
    public async Task A_vm_larger_than_the_host_is_refused_at_define_naming_memory_mib_and_the_host_size()
    {
        using var d = new DaemonProcess();
        var (status, body) = await d.Send(Post, "vms", DaemonProcess.Definition("huge").Replace("\"memory_mib\": 32", "\"memory_mib\": 1048576"));
        Assert.Equal(400, status);
        Assert.Contains($"memory_mib: 1048576 MiB is more than this host's {HostMib()} MiB", Fault(body));
        Assert.Empty(await d.List());
    }

    [KvmFact]
    public async Task Vms_whose_memory_together_exceeds_the_host_are_refused_at_start_with_the_numbers()
    {
        using var d = new DaemonProcess();
        long each = HostMib() * 4 / 10; // two fit, a third does not; guest RAM is mapped lazily, so an idle guest costs little
        foreach (var n in new[] { "big1", "big2", "big3" })
        {
            await d.Ok(Post, "vms", DaemonProcess.Definition(n).Replace("\"memory_mib\": 32", $"\"memory_mib\": {each}"));
        }
        await d.Ok(Post, "vms/big1/start");
        await d.Ok(Post, "vms/big2/start");
        var (status, body) = await d.Send(Post, "vms/big3/start");
        Assert.Equal(409, status);
        Assert.Contains($"'big3' asks for {each} MiB, but {2 * each} MiB are committed to running VMs and this host has {HostMib()} MiB", Fault(body));
        Assert.Equal(DomainState.ShutOff, (await d.Get("big3")).State);
        await d.Ok(Post, "vms/big1/destroy");
        Assert.Equal(DomainState.Running, (await d.Ok(Post, "vms/big3/start")).State); // the memory big1 held is free again
        await d.Ok(Post, "vms/big2/destroy");
        await d.Ok(Post, "vms/big3/destroy");
    }

    [KvmFact]
    public async Task A_restarted_daemon_counts_what_a_running_vm_was_started_with_not_its_edited_definition()
    {
        using var d = new DaemonProcess();
        long each = HostMib() * 4 / 10;
        foreach (var n in new[] { "big1", "big2", "big3" })
        {
            await d.Ok(Post, "vms", DaemonProcess.Definition(n).Replace("\"memory_mib\": 32", $"\"memory_mib\": {each}"));
        }
        await d.Ok(Post, "vms/big1/start");
        await d.Ok(HttpMethod.Put, "vms/big1", DaemonProcess.Definition("big1")); // 32 MiB from its next start
        d.KillAndRestart();
        await d.Ok(Post, "vms/big2/start");
        var (status, body) = await d.Send(Post, "vms/big3/start");
        Assert.Equal(409, status);
        Assert.Contains($"{2 * each} MiB are committed to running VMs", Fault(body));
        await d.Ok(Post, "vms/big1/destroy");
        await d.Ok(Post, "vms/big2/destroy");
    }

    private static string Fault(string body) => System.Text.Json.JsonDocument.Parse(body).RootElement.GetProperty("fault_message").GetString()!;

    private static long HostMib() =>
        long.Parse(File.ReadLines("/proc/meminfo").First(l => l.StartsWith("MemTotal:", StringComparison.Ordinal)).Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) / 1024;
}
