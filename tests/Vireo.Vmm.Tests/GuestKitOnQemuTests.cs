using Vireo.Tests;

namespace Vireo.Vmm.Tests;

/// <summary>
/// The same guest files on QEMU's microvm and its virtio-mmio devices: if the kit's drivers pass
/// there too, they test the virtio spec and not merely Vireo's reading of it.
/// </summary>
public class GuestKitOnQemuTests
{
    /// <summary>virtio-mmio on microvm (devices announced on the command line), or virtio-pci on pc (BARs from SeaBIOS).</summary>
    private static TestEnvironment.ProcessResult Qemu(bool pci, string guest, string devices, string append = "", string? stdin = null)
    {
        string machine = pci ? "-M pc" : "-M microvm,acpi=off -global virtio-mmio.force-legacy=false";
        devices = pci ? System.Text.RegularExpressions.Regex.Replace(devices, @"(virtio-[a-z]+)-device", "$1-pci,disable-legacy=on") : devices;
        string args = $"{machine} -enable-kvm -cpu host,-arch-capabilities -m 128M -nodefaults -no-user-config " +
            "-display none -device isa-debug-exit,iobase=0xf4,iosize=4 " +
            $"-kernel {TestEnvironment.Guest(guest)} {devices}" + (append.Length > 0 ? $" -append \"{append}\"" : "");
        return TestEnvironment.Run("qemu-system-x86_64", args, stdin, timeoutMs: 60_000);
    }

    /// <summary>QEMU's isa-debug-exit turns guest status N into exit code 2N+1.</summary>
    private static void AssertGuestStatus0(TestEnvironment.ProcessResult r) =>
        Assert.True(r.ExitCode == 1, $"QEMU exit {r.ExitCode} (guest status {(r.ExitCode - 1) / 2})\n{r.Output}\n{r.Error}");

    [KvmTheory]
    [InlineData(false)]
    [InlineData(true)]
    public void Blk_driver_passes_on_qemu_virtio_blk(bool pci)
    {
        string disk = VirtioGuestTests.NewDisk(16 << 20);
        try
        {
            var r = Qemu(pci, "blk", $"-serial stdio -drive id=d0,file={disk},format=raw,if=none -device virtio-blk-device,drive=d0", "mib=4");
            AssertGuestStatus0(r);
            Assert.Contains("blk: read back 4 MiB, verified", r.Output);
            VirtioGuestTests.AssertPattern(disk, 128 << 10, 4 << 20);
        }
        finally
        {
            File.Delete(disk);
        }
    }

    [KvmTheory]
    [InlineData(false)]
    [InlineData(true)]
    public void Rng_driver_passes_on_qemu_virtio_rng(bool pci)
    {
        var r = Qemu(pci, "rng", "-serial stdio -device virtio-rng-device");
        AssertGuestStatus0(r);
        Assert.Contains("buffers differ", r.Output);
    }

    [KvmFact]
    public void Net_driver_passes_between_two_qemu_vms()
    {
        string dir = Vireo.Tests.TempDirectory.Create("vireo-qnet");
        string a = Path.Combine(dir, "a.sock"), b = Path.Combine(dir, "b.sock");
        static string Dgram(string local, string remote) =>
            $"-serial stdio -netdev dgram,id=n0,local.type=unix,local.path={local},remote.type=unix,remote.path={remote} -device virtio-net-device,netdev=n0";
        var echo = Task.Factory.StartNew(() => Qemu(false, "net", Dgram(b, a), "role=echo"), TaskCreationOptions.LongRunning);
        var ping = Qemu(false, "net", Dgram(a, b), "frames=300");
        AssertGuestStatus0(ping);
        AssertGuestStatus0(echo.GetAwaiter().GetResult());
        Assert.Contains("net: 300 frames echoed", ping.Output);
    }

    [KvmFact]
    public void Msix_setup_passes_on_qemu_virtio_pci()
    {
        var r = Qemu(true, "rng", "-serial stdio -device virtio-rng-device", "msix=1");
        AssertGuestStatus0(r);
        Assert.Contains("rng: MSI-X interrupt on vector 0x45", r.Output);
    }

    [KvmTheory]
    [InlineData(false)]
    [InlineData(true)]
    public void Console_driver_passes_on_qemu_virtconsole(bool pci)
    {
        string serial = Path.GetTempFileName();
        try
        {
            var r = Qemu(pci, "vcons", $"-serial file:{serial} -device virtio-serial-device -chardev stdio,id=c0 -device virtconsole,chardev=c0",
                stdin: "from the host\nq\n");
            AssertGuestStatus0(r);
            Assert.Contains("vcons: hello on hvc0", r.Output);
            Assert.Contains("vcons: got from the host", r.Output);
        }
        finally
        {
            File.Delete(serial);
        }
    }
}
