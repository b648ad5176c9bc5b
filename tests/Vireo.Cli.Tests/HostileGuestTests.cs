using System.Diagnostics;
using System.Text;
using Vireo.Tests;

namespace Vireo.Cli.Tests;

/// <summary>
/// guests/hostile.c against `vireo run` on the real /dev/kvm: notification storms, chains into MMIO
/// and the PCI hole, queues moved under the device, configuration written mid-request, resets in a
/// loop. The VMM stays up and serves the devices again after a reset, it is idle when the guest is,
/// its log stays short, and a second VM beside it runs its disk test to the end untouched.
/// </summary>
public class HostileGuestTests
{
    private sealed class Vm : IDisposable
    {
        private readonly StringBuilder _out = new(), _err = new();
        public Process Process { get; }

        public Vm(string arguments)
        {
            var info = new ProcessStartInfo(TestEnvironment.Shipped("vireo"), arguments)
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                RedirectStandardInput = true,
            };
            Process = Process.Start(info)!;
            Process.OutputDataReceived += (_, e) => { lock (_out) { _out.AppendLine(e.Data); } };
            Process.ErrorDataReceived += (_, e) => { lock (_err) { _err.AppendLine(e.Data); } };
            Process.BeginOutputReadLine();
            Process.BeginErrorReadLine();
        }

        public string Output { get { lock (_out) { return _out.ToString(); } } }
        public string Error { get { lock (_err) { return _err.ToString(); } } }

        /// <summary>The process's CPU time so far, user and system, in seconds (/proc/PID/stat).</summary>
        public double CpuSeconds()
        {
            string stat = File.ReadAllText($"/proc/{Process.Id}/stat");
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return (long.Parse(fields[11], System.Globalization.CultureInfo.InvariantCulture) + long.Parse(fields[12], System.Globalization.CultureInfo.InvariantCulture)) / 100.0;
        }

        public void Dispose()
        {
            if (!Process.HasExited)
            {
                Process.Kill();
            }
            Process.WaitForExit();
            Process.Dispose();
        }
    }

    private static string Disk(long bytes) => HostileFiles.Sparse(bytes, "disk.img");

    [KvmTheory]
    [InlineData("pci")]
    [InlineData("mmio")]
    public void A_hostile_guest_leaves_its_vmm_up_and_idle_and_its_neighbour_untouched(string transport)
    {
        using var neighbour = new Vm($"run --kernel {TestEnvironment.Guest("blk")} --disk {Disk(8 << 20)} --debug-exit --timeout 120 --transport {transport} --cmdline \"console=ttyS0 mib=4\"");
        using var hostile = new Vm($"run --kernel {TestEnvironment.Guest("hostile")} --disk {Disk(1 << 20)} --rng --debug-exit --timeout 120 --transport {transport} " +
            "--cmdline \"console=ttyS0 rounds=20 storm=40000 idle=1\"");
        var deadline = DateTime.UtcNow.AddSeconds(90);
        while (!hostile.Output.Contains("hostile: idle") && !hostile.Process.HasExited && DateTime.UtcNow < deadline)
        {
            Thread.Sleep(50);
        }
        Assert.True(hostile.Output.Contains("the disk and the rng serve again") && !hostile.Process.HasExited,
            $"the hostile guest's VMM: {(hostile.Process.HasExited ? $"exited {hostile.Process.ExitCode}" : "running")}\n{hostile.Output}\n{hostile.Error}");
        Assert.Matches(@"hostile: 20 rounds, [1-9]\d* times NEEDS_RESET", hostile.Output);

        // At rest (the guest halted), the VMM uses next to no CPU: no device thread is left spinning.
        double before = hostile.CpuSeconds();
        Thread.Sleep(2000);
        double idle = hostile.CpuSeconds() - before;
        Assert.True(idle < 0.2, $"the VMM used {idle:F2} s of CPU in 2 s while its guest was halted");
        // Its log is bounded however often the guest failed its devices: each device's first
        // failures, then counted (at most one line a minute).
        int lines = hostile.Error.Split('\n').Count(l => l.Contains("device needs reset"));
        Assert.True(lines <= 2 * (Vireo.Virtio.VirtioDevice.LoggedFailures + 1), $"{lines} lines of device failures:\n{hostile.Error}");

        Assert.True(neighbour.Process.WaitForExit(TimeSpan.FromSeconds(90)), $"the neighbour did not finish:\n{neighbour.Output}");
        Assert.True(neighbour.Process.ExitCode == 0, $"the neighbour exited {neighbour.Process.ExitCode}:\n{neighbour.Output}\n{neighbour.Error}");
        Assert.Contains("blk: read back 4 MiB, verified", neighbour.Output);
        Assert.False(hostile.Process.HasExited, "the hostile guest's VMM exited");
    }
}
