using Vireo.Tests;
using Vireo.Virtio.Block;

namespace Vireo.Vmm.Tests;

/// <summary>The guest kit's virtio drivers against Vireo's devices on the real /dev/kvm, data checked on the host.</summary>
public class VirtioGuestTests
{
    /// <summary>The pattern blk.c writes: one 64-bit word per 8 bytes of disk.</summary>
    internal static ulong Pattern(ulong byteOffset) => (byteOffset / 8) * 0x9e3779b97f4a7c15UL ^ 0x5eed;

    internal static string NewDisk(long bytes)
    {
        string path = Path.Combine(Path.GetTempPath(), $"vireo-disk-{Guid.NewGuid():n}.img");
        using (var f = File.Create(path))
        {
            f.SetLength(bytes);
        }
        return path;
    }

    /// <summary>Checks the file holds blk.c's pattern over [from, to).</summary>
    internal static void AssertPattern(string path, long from, long to)
    {
        var bytes = File.ReadAllBytes(path);
        for (long off = from; off < to; off += 8)
        {
            ulong got = BitConverter.ToUInt64(bytes, (int)off);
            Assert.True(got == Pattern((ulong)off), $"byte {off:x}: {got:x}, want {Pattern((ulong)off):x}");
        }
    }

    private static GuestRun BootWith(string guest, VmConfigChange change, int vcpus = 1, string cmdline = "", Action<Machine>? whileRunning = null) =>
        GuestRun.Boot(guest, vcpus, cmdline: cmdline, whileRunning: whileRunning, configure: change);

    [KvmTheory]
    [InlineData(1, "", VirtioTransportKind.Pci)]
    [InlineData(2, ",queues=2", VirtioTransportKind.Pci)]
    [InlineData(1, ",direct", VirtioTransportKind.Pci)]
    [InlineData(1, "", VirtioTransportKind.Mmio)]
    [InlineData(2, ",queues=2", VirtioTransportKind.Mmio)]
    [InlineData(1, ",direct", VirtioTransportKind.Mmio)]
    public void Blk_writes_flushes_and_reads_back_what_lands_in_the_file(int vcpus, string options, VirtioTransportKind transport)
    {
        string disk = NewDisk(16 << 20);
        try
        {
            var run = BootWith("blk", c => c with { Disks = [BlockConfig.Parse(disk + options)], Transport = transport }, vcpus, "mib=8").ExitedWith(0);
            Assert.Contains("blk: 32768 sectors", run.Output);
            Assert.Contains($"blk: id \"{Path.GetFileName(disk)[..20]}\"", run.Output);
            Assert.Contains("blk: wrote 8 MiB, flushed", run.Output);
            Assert.Contains("blk: read back 8 MiB, verified", run.Output);
            Assert.Contains("blk: write-zeroes, discard and out-of-range checks ok", run.Output);
            var bytes = File.ReadAllBytes(disk);
            Assert.True(bytes.AsSpan(0, 128 << 10).IndexOfAnyExcept((byte)0) < 0, "write-zeroes and discard left data");
            AssertPattern(disk, 128 << 10, 8 << 20);
            Assert.True(bytes.AsSpan(8 << 20).IndexOfAnyExcept((byte)0) < 0, "data beyond what the guest wrote");
        }
        finally
        {
            File.Delete(disk);
        }
    }

    [KvmFact]
    public void Blk_read_only_refuses_writes_and_leaves_the_file_alone()
    {
        string disk = NewDisk(1 << 20);
        try
        {
            var before = File.ReadAllBytes(disk);
            var run = BootWith("blk", c => c with { Disks = [new BlockConfig(disk, ReadOnly: true)] }, cmdline: "ro=1").ExitedWith(0);
            Assert.Contains("(read-only)", run.Output);
            Assert.Contains("write on a read-only disk -> status 1 refused", run.Output);
            Assert.Equal(before, File.ReadAllBytes(disk));
        }
        finally
        {
            File.Delete(disk);
        }
    }

    [KvmTheory]
    [InlineData(VirtioTransportKind.Pci)]
    [InlineData(VirtioTransportKind.Mmio)]
    public void Rng_hands_out_random_bytes(VirtioTransportKind transport)
    {
        var run = BootWith("rng", c => c with { Rng = true, Transport = transport }).ExitedWith(0);
        Assert.Matches(@"rng: 8192 bytes, chi-square \d+ \(255 dof\), buffers differ", run.Output);
    }

    [KvmFact]
    public void Pci_msix_interrupts_reach_the_guest_through_irqfd_and_gsi_routing()
    {
        var run = BootWith("rng", c => c with { Rng = true }, cmdline: "msix=1").ExitedWith(0);
        Assert.Matches(@"rng: MSI-X interrupt on vector 0x45 \(\d+\)", run.Output);
    }

    [KvmTheory]
    [InlineData(1, VirtioTransportKind.Pci)]
    [InlineData(2, VirtioTransportKind.Mmio)]
    public void Virtio_console_carries_output_and_input(int vcpus, VirtioTransportKind transport)
    {
        var run = BootWith("vcons", c => c with { VirtioConsole = true, Transport = transport }, vcpus, whileRunning: m =>
        {
            Thread.Sleep(300);
            m.EnqueueConsoleInput("from the host\n"u8);
            Thread.Sleep(300);
            m.EnqueueConsoleInput("q\n"u8);
        }).ExitedWith(0);
        Assert.Contains("vcons: hello on hvc0", run.Output);
        Assert.Contains("vcons: got from the host", run.Output);
    }

    [KvmTheory]
    [InlineData(VirtioTransportKind.Pci)]
    [InlineData(VirtioTransportKind.Mmio)]
    public void Several_devices_share_one_vm_each_in_its_own_window(VirtioTransportKind transport)
    {
        string disk = NewDisk(4 << 20);
        try
        {
            VmConfigChange config = c => c with { Disks = [new BlockConfig(disk)], Rng = true, VirtioConsole = true, Transport = transport };
            BootWith("blk", config, cmdline: "mib=2").ExitedWith(0);
            BootWith("rng", config).ExitedWith(0);
            var hello = BootWith("hello", config);
            if (transport == VirtioTransportKind.Mmio)
            {
                Assert.Contains("virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 virtio_mmio.device=4K@0xd0002000:7", hello.Output);
            }
            else
            {
                Assert.DoesNotContain("virtio_mmio.device", hello.Output);
            }
        }
        finally
        {
            File.Delete(disk);
        }
    }

    [Fact]
    public void A_missing_or_tiny_disk_is_refused_before_the_vm_starts()
    {
        var missing = new VmConfig { KernelPath = TestEnvironment.Guest("hello"), Disks = [new BlockConfig("/nonexistent/disk.img")] };
        Assert.Contains("disk: no such file", Assert.Throws<VmConfigException>(missing.Validate).Message);
        string tiny = NewDisk(100);
        try
        {
            var config = new VmConfig { KernelPath = TestEnvironment.Guest("hello"), Disks = [new BlockConfig(tiny)] };
            var e = Assert.Throws<VmConfigException>(() => Machine.Create(config, _ => { }).Dispose());
            Assert.Contains("smaller than one 512-byte sector", e.Message);
        }
        finally
        {
            File.Delete(tiny);
        }
    }
}
