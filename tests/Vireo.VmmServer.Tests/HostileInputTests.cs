using System.Text.Json;
using Vireo.Tests;

namespace Vireo.VmmServer.Tests;

/// <summary>
/// vireo-vmm given hostile files and bodies: every refusal is a 400 whose fault_message names the
/// field in the API's words, the process keeps serving, and nothing it was given can block it.
/// </summary>
public class HostileInputTests
{
    private static string Kernel(string guest) => TestEnvironment.Guest(guest);

    private static string Fault(string body) => VmmProcess.Fault(body);

    private static async Task<string> StartRefused(VmmProcess vmm)
    {
        var (status, body) = await vmm.Put("actions", """{"action_type": "InstanceStart"}""");
        Assert.True(status == 400, $"{status} {body}");
        Assert.Equal("NotStarted", (await vmm.Info())!.State); // refused, and GET /vm still answers
        return Fault(body);
    }

    [KvmFact]
    public async Task Special_files_are_refused_at_start_without_blocking_the_api()
    {
        string fifo = HostileFiles.Fifo();
        using var vmm = new VmmProcess();
        foreach (var (boot, drive, message) in new[]
        {
            ($$"""{"kernel_image_path": "{{fifo}}"}""", null, $"InstanceStart: kernel: {fifo} is a FIFO, not a regular file"),
            ("""{"kernel_image_path": "/dev/zero"}""", null, "InstanceStart: kernel: /dev/zero is a character device, not a regular file"),
            ($$"""{"kernel_image_path": "{{Kernel("hello")}}", "initrd_path": "/dev/zero"}""", null, "InstanceStart: initrd: /dev/zero is a character device, not a regular file"),
            ($$"""{"kernel_image_path": "{{Kernel("hello")}}", "initrd_path": "{{fifo}}"}""", null, $"InstanceStart: initrd: {fifo} is a FIFO, not a regular file"),
            ($$"""{"kernel_image_path": "{{Kernel("hello")}}"}""", $$"""{"drive_id": "root", "path_on_host": "{{fifo}}"}""", $"InstanceStart: disk: {fifo} is a FIFO, not a regular file or block device"),
            ($$"""{"kernel_image_path": "{{Kernel("hello")}}"}""", $$"""{"drive_id": "root", "path_on_host": "{{fifo}}", "is_read_only": true}""", $"InstanceStart: disk: {fifo} is a FIFO, not a regular file or block device"),
        })
        {
            await vmm.Ok("boot-source", boot);
            if (drive is not null)
            {
                await vmm.Ok("drives/root", drive);
            }
            var start = StartRefused(vmm);
            Assert.True(await Task.WhenAny(start, Task.Delay(20_000)) == start, $"InstanceStart with {boot} {drive} did not answer");
            Assert.Equal(message, await start);
        }
        // The same process, corrected, still starts a VM (the drive too must be usable: a real file).
        string disk = HostileFiles.Sparse(1 << 20);
        await vmm.Ok("drives/root", $$"""{"drive_id": "root", "path_on_host": "{{disk}}"}""");
        await vmm.Ok("boot-source", $$"""{"kernel_image_path": "{{Kernel("hello")}}"}""");
        await vmm.Ok("machine-config", """{"vcpu_count": 1, "mem_size_mib": 64}""");
        await vmm.Ok("actions", """{"action_type": "InstanceStart"}""");
        Assert.Equal(0, vmm.WaitForExit());
    }

    [Fact]
    public async Task An_image_larger_than_guest_ram_is_refused_without_being_read()
    {
        string big = HostileFiles.Sparse(100L << 30);
        using var vmm = new VmmProcess();
        await vmm.Ok("boot-source", $$"""{"kernel_image_path": "{{big}}"}""");
        await vmm.Ok("machine-config", """{"vcpu_count": 1, "mem_size_mib": 64}""");
        Assert.Equal($"InstanceStart: kernel: {big} is 102400 MiB, larger than the guest's RAM (64 MiB)", await StartRefused(vmm));
    }

    [KvmFact]
    public async Task A_kernel_with_a_2_gib_bss_starts_and_where_ram_is_short_the_400_says_why()
    {
        string kernel = HostileFiles.WithBss(Kernel("hello"), 0x8000_0000);
        using var vmm = new VmmProcess();
        await vmm.Ok("boot-source", $$"""{"kernel_image_path": "{{kernel}}"}""");
        await vmm.Ok("machine-config", """{"vcpu_count": 1, "mem_size_mib": 1024}""");
        Assert.Equal("InstanceStart: ELF64 (PVH) segment at 0x100000 (0x80000000 bytes) lies outside guest RAM (1024 MiB)", await StartRefused(vmm));
        await vmm.Ok("machine-config", """{"vcpu_count": 1, "mem_size_mib": 3072}""");
        await vmm.Ok("actions", """{"action_type": "InstanceStart"}""");
        Assert.Equal(0, vmm.WaitForExit(60_000));
        Assert.Contains("Hello from a Vireo test guest!", vmm.Output);
    }

    [KvmFact]
    public async Task A_reboot_uses_the_files_opened_at_start_even_when_their_paths_are_gone_or_replaced()
    {
        // Without ACPI the hello guest reboots through the i8042 as soon as it has printed.
        string kernel = HostileFiles.Copy(Kernel("hello"));
        string disk = HostileFiles.Sparse(1 << 20);
        using var vmm = new VmmProcess();
        await vmm.Ok("boot-source", $$"""{"kernel_image_path": "{{kernel}}"}""");
        await vmm.Ok("machine-config", """{"vcpu_count": 1, "mem_size_mib": 64, "acpi": false}""");
        await vmm.Ok("drives/data", $$"""{"drive_id": "data", "path_on_host": "{{disk}}"}""");
        await vmm.Ok("actions", """{"action_type": "InstanceStart"}""");
        File.Delete(kernel);
        File.Delete(disk);
        int bootsThen = (await vmm.Info())!.Boots;
        await Eventually.Until(async () => (await vmm.Info())!.Boots >= bootsThen + 2, "two boots after the files were deleted");
        File.WriteAllBytes(kernel, new byte[8192]); // and a garbage file where the kernel was
        bootsThen = (await vmm.Info())!.Boots;
        await Eventually.Until(async () => (await vmm.Info())!.Boots >= bootsThen + 2, "two boots after the kernel was replaced");
        var info = (await vmm.Info())!;
        Assert.Equal("Running", info.State);
        Assert.Contains("i8042 reset", info.LastOutcome);
    }

    [Theory]
    [InlineData("""{"vcpu_count": 0, "mem_size_mib": 64}""", "machine-config: vcpu_count 0 is outside 1..254")]
    [InlineData("""{"vcpu_count": 300, "mem_size_mib": 64}""", "machine-config: vcpu_count 300 is outside 1..254")]
    [InlineData("""{"vcpu_count": -1, "mem_size_mib": 64}""", "machine-config: vcpu_count -1 is outside 1..254")]
    [InlineData("""{"vcpu_count": 1, "mem_size_mib": 0}""", "machine-config: mem_size_mib 0 is outside 16..1048576")]
    [InlineData("""{"vcpu_count": 1, "mem_size_mib": 8}""", "machine-config: mem_size_mib 8 is outside 16..1048576")]
    [InlineData("""{"vcpu_count": 1, "mem_size_mib": 9223372036854775807}""", "machine-config: mem_size_mib 9223372036854775807 is outside 16..1048576")]
    [InlineData("""{"vcpu_count": 1, "mem_size_mib": 1048576}""", "machine-config: mem_size_mib 1048576 is more than this host's RAM (")]
    public async Task Machine_config_sizes_are_refused_when_put_not_at_start(string body, string message)
    {
        using var vmm = new VmmProcess();
        var (status, text) = await vmm.Put("machine-config", body);
        Assert.Equal(400, status);
        Assert.StartsWith(message, Fault(text));
        Assert.Equal(256, (await vmm.Info())!.MemSizeMib); // the refused config was not taken
    }
}
