using System.Diagnostics;
using Vireo.Tests;

namespace Vireo.Cli.Tests;

/// <summary>`vireo run` with virtio devices, including a flushed write surviving kill -9 of the VMM.</summary>
public class VirtioCommandTests
{
    private static ulong Pattern(ulong byteOffset) => (byteOffset / 8) * 0x9e3779b97f4a7c15UL ^ 0x5eed;

    private static string NewDisk(long bytes)
    {
        string path = Path.Combine(Path.GetTempPath(), $"vireo-cli-disk-{Guid.NewGuid():n}.img");
        using var f = File.Create(path);
        f.SetLength(bytes);
        return path;
    }

    [KvmFact]
    public void A_write_the_guest_saw_flushed_survives_kill_minus_9_of_the_vmm()
    {
        _ = TestEnvironment.GuestDir;
        string disk = NewDisk(16 << 20);
        var psi = new ProcessStartInfo(VireoProcess.Program,
            $"run --kernel {TestEnvironment.Guest("blk")} --disk {disk} --cmdline \"mib=6 hold=1\" --timeout 60")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        try
        {
            using var vmm = Process.Start(psi)!;
            string? line;
            bool flushed = false;
            while ((line = vmm.StandardOutput.ReadLine()) is not null)
            {
                if (line.Contains("blk: wrote 6 MiB, flushed"))
                {
                    flushed = true;
                    break;
                }
            }
            if (!flushed)
            {
                Assert.Fail("the guest never reported its flush: " + vmm.StandardError.ReadToEnd());
            }
            vmm.Kill(); // SIGKILL: no clean-up runs in the VMM
            vmm.WaitForExit();
            Assert.Equal(137, vmm.ExitCode);
            var bytes = File.ReadAllBytes(disk);
            for (int off = 0; off < 6 << 20; off += 8)
            {
                ulong got = BitConverter.ToUInt64(bytes, off);
                Assert.True(got == Pattern((ulong)off), $"byte {off:x} lost after kill -9: {got:x}");
            }
        }
        finally
        {
            File.Delete(disk);
        }
    }

    [KvmFact]
    public void Disk_rng_and_virtio_console_options_reach_the_guest()
    {
        string disk = NewDisk(4 << 20);
        try
        {
            var r = VireoProcess.Run($"run --kernel {TestEnvironment.Guest("blk")} --disk {disk},id=data --rng --debug-exit --cmdline mib=1");
            Assert.True(r.ExitCode == 0, r.Output + r.Error);
            Assert.Contains("blk: id \"data\"", r.Output);
            var c = VireoProcess.Run($"run --kernel {TestEnvironment.Guest("vcons")} --console virtio --debug-exit", stdin: "via hvc0\nq\n");
            Assert.True(c.ExitCode == 0, c.Output + c.Error);
            Assert.Contains("vcons: got via hvc0", c.Output);
        }
        finally
        {
            File.Delete(disk);
        }
    }

    [Theory]
    [InlineData("run --disk /tmp/x.img,fast", "vireo: disk: unknown option 'fast' (known: ro, direct, queues=N, id=NAME)")]
    [InlineData("run --disk /nonexistent/x.img", "vireo: disk: no such file: /nonexistent/x.img")]
    [InlineData("run --console tty", "vireo: Argument 'tty' not recognized. Must be one of:\n\t'serial'\n\t'virtio'")]
    [InlineData("run --vsock cid=1,socket=/tmp/v.sock", "vireo: vsock: cid 1 is reserved; use 3 or more")]
    [InlineData("run --net tap=x,unix=/a,peer=/b", "vireo: net: give exactly one backend: tap=NAME or unix=PATH,peer=PATH")]
    [InlineData("run --transport virtio-ccw", "vireo: Argument 'virtio-ccw' not recognized. Must be one of:\n\t'pci'\n\t'mmio'")]
    public void Bad_device_options_exit_2_with_a_clear_message(string args, string message)
    {
        var r = VireoProcess.Run(args);
        Assert.Equal(2, r.ExitCode);
        Assert.Equal(message, r.Error.Trim());
    }
}
