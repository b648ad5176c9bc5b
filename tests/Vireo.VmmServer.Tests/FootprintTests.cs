using Vireo.Tests;

namespace Vireo.VmmServer.Tests;

/// <summary>What a running VMM keeps resident beyond its guest (issue 13).</summary>
public class FootprintTests
{
    private static long ResidentKib(int pid) =>
        long.Parse(File.ReadAllLines($"/proc/{pid}/status").First(l => l.StartsWith("VmRSS:")).Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);

    [KvmFact]
    public async Task A_running_vm_keeps_no_copy_of_its_kernel_or_initrd()
    {
        // 64 MiB that do not compress or share: the guest's copy of them is resident in its RAM; a
        // second copy held by the VMM (the images as read for the boot) would be as large again.
        const int Mib = 64;
        string initrd = Path.Combine(TempDirectory.Create("vmm-initrd"), "initrd.img");
        var bytes = new byte[Mib << 20];
        Random.Shared.NextBytes(bytes);
        File.WriteAllBytes(initrd, bytes);

        using var vmm = new VmmProcess();
        await vmm.Ok("boot-source", $$"""{"kernel_image_path": "{{TestEnvironment.Guest("idle")}}", "initrd_path": "{{initrd}}"}""");
        await vmm.Ok("machine-config", """{"vcpu_count": 1, "mem_size_mib": 256}""");
        await vmm.Ok("actions", """{"action_type": "InstanceStart"}""");
        await Eventually.Until(async () => (await vmm.Info())!.State == "Running", "the VM to run");
        long rss = ResidentKib(vmm.Pid);
        // The guest's copy, plus the VMM itself (about 20 MiB); a kept copy would add 64.
        Assert.True(rss < (Mib + 40) * 1024, $"vireo-vmm holds {rss / 1024} MiB with a {Mib} MiB initrd loaded: it kept a copy of the image");
        Assert.True(rss > Mib * 1024, $"vireo-vmm holds {rss / 1024} MiB: the initrd was not loaded into guest RAM");
        await vmm.Ok("actions", """{"action_type": "Stop"}""");
        Assert.Equal(0, vmm.WaitForExit());
    }
}
