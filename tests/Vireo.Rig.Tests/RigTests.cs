using System.Security.Cryptography;
using Vireo.Tests;

namespace Vireo.Rig.Tests;

/// <summary>
/// The hardware-virtualization rig (rig/rig): QEMU in software mode with AMD-V, where Vireo
/// boots Debian's own cloud kernel. Nothing here needs this host's /dev/kvm, so nothing skips.
/// </summary>
public class RigTests
{
    private static readonly Lazy<string> Images = new(() =>
    {
        // Published and built on the host first: inside the rig every step runs emulated.
        Check(TestEnvironment.Run(Path.Combine(TestEnvironment.Root, "vireo"), "--help", timeoutMs: 600_000), "./vireo --help");
        Check(TestEnvironment.Run(Path.Combine(TestEnvironment.Root, "guests/linux/build"), "", timeoutMs: 600_000), "guests/linux/build");
        return Path.Combine(TestEnvironment.Root, ".build", "images");
    });

    private static TestEnvironment.ProcessResult Check(TestEnvironment.ProcessResult r, string what)
    {
        Assert.True(r.ExitCode == 0, $"{what} exited {r.ExitCode}\n{r.Output}\n{r.Error}");
        return r;
    }

    /// <summary>rig/rig exec -- COMMAND; arguments are split as .NET does (double quotes group).</summary>
    private static TestEnvironment.ProcessResult Rig(string command) =>
        TestEnvironment.Run(Path.Combine(TestEnvironment.Root, "rig/rig"), "exec -- " + command, timeoutMs: 900_000);

    [Fact]
    public void Exec_runs_a_command_with_kvm_in_the_repository_and_returns_its_output_and_status()
    {
        var r = Rig("sh -c \"test -c /dev/kvm && echo kvm-ok; pwd; echo to-stderr >&2; exit 3\"");
        Assert.True(r.ExitCode == 3, $"exit {r.ExitCode}\n{r.Output}\n{r.Error}");
        Assert.Equal(["kvm-ok", TestEnvironment.Root], r.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        Assert.Contains("to-stderr", r.Error);
    }

    [Fact]
    public void Debian_cloud_kernel_boots_from_its_bzimage_and_uses_the_virtio_disk()
    {
        string images = Images.Value;
        string dir = TempDirectory.Create("vireo-rig", under: Path.Combine(TestEnvironment.Root, ".build"));
        string disk = Path.Combine(dir, "disk.ext4");
        File.Copy(Path.Combine(images, "disk.ext4"), disk);
        var r = Rig($"./vireo run --kernel {images}/vmlinuz --initrd {images}/initramfs.gz --disk {disk} --memory 512M --timeout 600 "
            + "--cmdline \"console=ttyS0 reboot=k panic=1 script=probe\"");
        string log = $"exit {r.ExitCode}\n{r.Output}\n{r.Error}";
        Assert.True(r.ExitCode == 0, log);
        Assert.Contains("vireo-guest: init reached at", r.Output);
        Assert.Contains("vireo-guest: virtio device virtio0 id 0x0002 driver virtio_blk", r.Output);
        Assert.Contains("vireo-guest: disk pattern verified", r.Output);
        Assert.Contains("vireo-guest: probe exited 0", r.Output);

        // On the host, after the VM: the file system is clean and holds what the guest wrote.
        Check(TestEnvironment.Run("/sbin/e2fsck", $"-fn {disk}"), "e2fsck");
        var written = ReadFile(disk, "/written");
        Assert.Equal(1 << 20, written.Length);
        Assert.Equal(System.Text.Encoding.ASCII.GetString(ReadFile(disk, "/written.sha256")).Trim(),
            Convert.ToHexStringLower(SHA256.HashData(written)));
    }

    private static byte[] ReadFile(string image, string path)
    {
        string dest = Path.Combine(TempDirectory.Create("vireo-rig-out"), "file");
        Check(TestEnvironment.Run("/sbin/debugfs", $"-R \"dump {path} {dest}\" {image}"), "debugfs dump");
        return File.ReadAllBytes(dest);
    }
}
