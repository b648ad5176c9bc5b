using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
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
        Check(TestEnvironment.Run(Path.Combine(TestEnvironment.Root, "guests/linux/debian-initramfs"), "", timeoutMs: 600_000), "guests/linux/debian-initramfs");
        return Path.Combine(TestEnvironment.Root, ".build", "images");
    });

    private static TestEnvironment.ProcessResult Check(TestEnvironment.ProcessResult r, string what)
    {
        Assert.True(r.ExitCode == 0, $"{what} exited {r.ExitCode}\n{r.Output}\n{r.Error}");
        return r;
    }

    /// <summary>
    /// rig/rig exec -- COMMAND; arguments are split as .NET does (double quotes group). The rig
    /// stops itself first (RIG_TIMEOUT), so that a hang still reports the rig kernel's log.
    /// <para>
    /// A run that ends the way the rig's software CPU fails (see rig/DESIGN.md: a nested guest's
    /// triple fault, or the rig hanging until its timeout) runs once more. Every such retry is
    /// written to .build/rig/retries.log and what the failed run printed to retry-TEST.log, which
    /// ./test prints; a second failure fails the test.
    /// </para>
    /// </summary>
    private static TestEnvironment.ProcessResult Rig(string command, [CallerMemberName] string test = "") =>
        Rig(() => command, test);

    /// <summary>As above, with the command made afresh for each run (a fresh disk, say).</summary>
    private static TestEnvironment.ProcessResult Rig(Func<string> makeCommand, [CallerMemberName] string test = "") =>
        Retried(() => RigOnce(makeCommand()), test);

    /// <summary>As above, for a run the test drives itself (its input, say).</summary>
    private static TestEnvironment.ProcessResult Retried(Func<TestEnvironment.ProcessResult> run, string test)
    {
        var first = run();
        string? fault = RigFault(first);
        if (fault is null)
        {
            return first;
        }
        // ./test prints both: the list, and the end of what each failed run printed.
        string dir = Path.Combine(TestEnvironment.Root, ".build", "rig");
        File.AppendAllText(Path.Combine(dir, "retries.log"), $"{DateTime.UtcNow:u} {test}: {fault}; ran it again\n");
        File.WriteAllText(Path.Combine(dir, $"retry-{test}.log"),
            $"stdout:\n{TestEnvironment.Tail(first.Output, 6000)}\nstderr (the rig's kernel log last, if it hung):\n{TestEnvironment.Tail(first.Error, 6000)}\n");
        return run();
    }

    private static TestEnvironment.ProcessResult RigOnce(string command)
    {
        try
        {
            return TestEnvironment.Run(Path.Combine(TestEnvironment.Root, "rig/rig"), "exec -- " + command, timeoutMs: 660_000,
                env: [("RIG_TIMEOUT", "600")]);
        }
        catch (TimeoutException e)
        {
            return new TestEnvironment.ProcessResult(124, "", e.Message);
        }
    }

    /// <summary>Why a run failed the way the rig's emulated CPU does, or null.</summary>
    internal static string? RigFault(TestEnvironment.ProcessResult r) =>
        r.ExitCode == 0 ? null
        : r.Error.Contains("vireo: TripleFault:") ? "the nested guest triple-faulted"
        : r.ExitCode == 124 || r.Error.Contains("rig: timed out") ? "the rig hung until its timeout"
        : null;

    [Fact]
    public void Exec_runs_a_command_with_kvm_in_the_repository_and_returns_its_output_and_status()
    {
        var r = Rig("sh -c \"test -c /dev/kvm && echo kvm-ok; pwd; echo to-stderr >&2; exit 3\"");
        Assert.True(r.ExitCode == 3, $"exit {r.ExitCode}\n{r.Output}\n{r.Error}");
        Assert.Equal(["kvm-ok", TestEnvironment.Root], r.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        Assert.Contains("to-stderr", r.Error);
    }

    [Fact]
    public void Only_the_emulated_cpus_own_failures_are_run_again()
    {
        Assert.NotNull(RigFault(new(1, "", "vireo: TripleFault: vCPU 0: triple fault (CPU shutdown)")));
        Assert.NotNull(RigFault(new(125, "", "rig: timed out after 600 s")));
        Assert.NotNull(RigFault(new(124, "", "did not finish in 660000 ms")));
        Assert.Null(RigFault(new(0, "", "vireo: TripleFault:")));
        Assert.Null(RigFault(new(1, "", "vireo: EmulationFailure: vCPU 0: instruction emulation failed")));
        Assert.Null(RigFault(new(3, "kvm-ok", "to-stderr")));
    }

    /// <summary>A fresh copy of the guest disk in the repository (so the rig reaches it), and its directory.</summary>
    private static (string Dir, string Disk) FreshDisk()
    {
        string dir = TempDirectory.Create("vireo-rig", under: Path.Combine(TestEnvironment.Root, ".build"));
        string disk = Path.Combine(dir, "disk.ext4");
        File.Copy(Path.Combine(Images.Value, "disk.ext4"), disk);
        return (dir, disk);
    }

    [Theory]
    [InlineData("vmlinuz", 1, false)] // bzImage, 64-bit boot protocol
    [InlineData("vmlinux", 2, true)]  // ELF with its PVH note, 32-bit PVH entry; in the sandbox, on the rig's cgroup v2
    public void Debian_cloud_kernel_finds_every_virtio_device_through_the_stock_drivers(string kernel, int vcpus, bool sandbox)
    {
        string disk = "";
        var r = Rig(() =>
        {
            (string dir, disk) = FreshDisk();
            return $"tests/Vireo.Rig.Tests/linux-guest.sh {dir} {Images.Value}/{kernel} {vcpus} probe{(sandbox ? " --sandbox" : "")}";
        });
        string log = $"exit {r.ExitCode}\n{r.Output}\n{r.Error}";
        Assert.True(r.ExitCode == 0, log); // the guest powered off through ACPI after its script passed
        Assert.Contains("vireo-guest: init reached at", r.Output);
        Assert.Contains($"vireo-guest: cpus {vcpus}", r.Output);
        var devices = new[] { ("0x0002", "virtio_blk"), ("0x0001", "virtio_net"), ("0x0003", "virtio_console"), ("0x0004", "virtio_rng"), ("0x0013", "vmw_vsock_virtio_transport") };
        foreach (var (id, driver) in sandbox ? devices[..^1] : devices) // a sandboxed run reaches no host socket: no vsock
        {
            Assert.Matches(new Regex($@"^vireo-guest: virtio device virtio\d id {id} driver {driver}\r*$", RegexOptions.Multiline), r.Output);
        }
        if (sandbox)
        {
            // The VM ran in its jail: a uid of the run's range, no capability, its own group in the rig's cgroup v2.
            Assert.Matches(new Regex(@"rig: jailed Uid: (3\d{6}) \1 \1 \1 CapEff: 0000000000000000 cgroup 0::/vireo/run/\d+"), r.Output);
        }
        Assert.Contains("vireo-guest: disk pattern verified", r.Output);
        Assert.Contains("vireo-guest: this line went through hvc0", r.Output);
        Assert.Contains("vireo-guest: rng source virtio_rng.0", r.Output);
        Assert.Contains("vireo-guest: rng read 64 bytes", r.Output);
        if (!sandbox)
        {
            Assert.Contains("vireo-guest: vsock reply: host got: hello from the guest", r.Output);
            Assert.Contains("host-peer: vsock received 'hello from the guest'", r.Output);
        }
        Assert.Contains("vireo-guest: probe exited 0", r.Output);

        // The megabyte the guest sent over virtio-net reached the host intact.
        string sent = Regex.Match(r.Output, "vireo-guest: net sent sha256 ([0-9a-f]{64})").Groups[1].Value;
        Assert.True(sent.Length == 64, log);
        Assert.Contains($"host-peer: net received 1048576 bytes sha256 {sent}", r.Output);

        // On the host, after the VM: the file system is clean and holds what the guest wrote.
        Check(TestEnvironment.Run("/sbin/e2fsck", $"-fn {disk}"), "e2fsck");
        var written = ReadFile(disk, "/written");
        Assert.Equal(1 << 20, written.Length);
        Assert.Equal(System.Text.Encoding.ASCII.GetString(ReadFile(disk, "/written.sha256")).Trim(),
            Convert.ToHexStringLower(SHA256.HashData(written)));
    }

    [Fact]
    public void Reboot_restarts_the_vm_and_poweroff_ends_it_with_pci_interrupts_routed_by_the_dsdt()
    {
        // pci=nomsi: virtio-pci falls back to INTx, which Linux finds only through the DSDT's _PRT.
        string disk = "";
        var r = Rig(() =>
        {
            disk = FreshDisk().Disk;
            return $"env VIREO_VERBOSE=1 ./vireo run --kernel {Images.Value}/vmlinuz --initrd {Images.Value}/initramfs.gz --disk {disk} "
                + "--vcpus 2 --memory 512M --timeout 420 --cmdline \"console=ttyS0 panic=1 pci=nomsi script=reboot-once\"";
        });
        string log = $"exit {r.ExitCode}\n{r.Output}\n{r.Error}";
        Assert.True(r.ExitCode == 0, log);
        Assert.Contains("vireo-guest: first boot: rebooting", r.Output);
        Assert.Contains("reboot: Restarting system", r.Output);
        Assert.Contains("vireo: guest reset (ACPI reset register); starting boot 2", r.Error);
        Assert.Contains("vireo-guest: second boot: found the mark from the first", r.Output);
        Assert.Contains("reboot: Power down", r.Output);
        Assert.Contains("vireo: guest powered off", r.Error);
        Assert.DoesNotContain("can't find IRQ", r.Output);
        Check(TestEnvironment.Run("/sbin/e2fsck", $"-fn {disk}"), "e2fsck");
    }

    [Fact]
    public void Debians_kernel_saved_by_one_vmm_goes_on_in_another_with_its_disk_and_its_shell()
    {
        // snapshot-linux.py: the shell writes a file on virtio-blk, the VM is paused and saved by
        // PUT /snapshot/create, that vireo-vmm is killed, and a fresh one loads the snapshot and
        // resumes it: the same shell reads the file back, appends to it and powers off.
        string dir = "", disk = "";
        var r = Rig(() =>
        {
            (dir, disk) = FreshDisk();
            return $"python3 tests/Vireo.Rig.Tests/snapshot-linux.py {dir} {Images.Value}/vmlinuz";
        });
        string log = $"exit {r.ExitCode}\n{r.Output}\n{r.Error}";
        Assert.True(r.ExitCode == 0, log);
        Assert.Contains("wrote-42", r.Output);
        Assert.Matches(new Regex(@"^before-snapshot\r*$", RegexOptions.Multiline), r.Output);
        Assert.Contains("restored-55", r.Output);
        Assert.Contains("reboot: Power down", r.Output);
        Check(TestEnvironment.Run("/sbin/e2fsck", $"-fn {disk}"), "e2fsck");
        Assert.Equal("before-snapshot\nafter-4\n", System.Text.Encoding.ASCII.GetString(ReadFile(disk, "/snap.txt")));
    }

    [Fact]
    public void Debians_kernel_live_migrates_between_two_namespaces_while_it_writes_its_disk_and_streams_over_its_network()
    {
        // migrate-linux.py: two vireo-vmm in two network namespaces joined by a bridge; the shell
        // writes numbered lines to its disk and streams numbered lines over TCP while the VM is
        // pre-copied from one to the other; the stream goes on in one connection without a gap,
        // and the file is whole.
        string dir = "", disk = "";
        var r = Rig(() =>
        {
            (dir, disk) = FreshDisk();
            return $"python3 tests/Vireo.Rig.Tests/migrate-linux.py {dir} {Images.Value}/vmlinuz";
        });
        string log = $"exit {r.ExitCode}\n{r.Output}\n{r.Error}";
        Assert.True(r.ExitCode == 0, log);
        Assert.Contains("migrate-linux: migrated in", r.Output);
        Assert.Contains("source exited 0", r.Output);
        Assert.Contains("\"connections\": 1, ", r.Output);
        Assert.Contains("\"gaps\": 0", r.Output);
        Assert.Contains("loop-ok-", r.Output);
        Assert.Contains("reboot: Power down", r.Output);
        Check(TestEnvironment.Run("/sbin/e2fsck", $"-fn {disk}"), "e2fsck");
        var loop = System.Text.Encoding.ASCII.GetString(ReadFile(disk, "/loop.txt")).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(loop.Length > 0 && loop.Select(int.Parse).SequenceEqual(Enumerable.Range(0, loop.Length)), $"/loop.txt has {loop.Length} lines, not 0..N in order");
    }

    [Fact]
    public void An_initramfs_made_by_debians_mkinitramfs_finds_its_root_on_the_virtio_disk()
    {
        // Nobody in the project wrote this initramfs: initramfs-tools' stock configuration, udev
        // loading the stock virtio modules, then the root file system from /dev/vda.
        var r = Rig(() => $"./vireo run --kernel {Images.Value}/vmlinuz --initrd {Images.Value}/debian-initrd.img --disk {FreshDisk().Disk} "
            + "--memory 512M --timeout 420 --cmdline \"console=ttyS0 panic=1 root=/dev/vda\"");
        Assert.True(r.ExitCode == 0, $"exit {r.ExitCode}\n{r.Output}\n{r.Error}");
        Assert.Contains("Starting systemd-udevd", r.Output);
        Assert.Contains("Begin: Mounting root file system", r.Output);
        Assert.Contains("vireo-guest: root init reached at", r.Output);
        Assert.Contains("root is /dev/vda ext4", r.Output);
        Assert.Matches(new Regex(@"^vireo-guest: virtio device virtio0 id 0x0002 driver virtio_blk\r*$", RegexOptions.Multiline), r.Output);
        Assert.Contains("reboot: Power down", r.Output);
    }

    [Fact]
    public void The_readme_main_command_boots_the_debian_guest_to_a_shell_that_reads_the_rigs_piped_stdin()
    {
        _ = Images.Value;
        // The README's command as given, with its input piped into rig/rig from here: through the
        // rig's stdin port to vireo run's stdin, then the guest's COM1 and its shell. The lines
        // are written once the shell is about to start, as a user types at its prompt: bytes sent
        // while the guest kernel boots are dropped when its serial driver resets the UART's FIFO.
        var r = Retried(() => RigTyping("./vireo run --timeout 300", "exit the shell to stop the VM", "echo hi-from-pipe\nexit\n"),
            nameof(The_readme_main_command_boots_the_debian_guest_to_a_shell_that_reads_the_rigs_piped_stdin));
        string log = $"exit {r.ExitCode}\n{r.Output}\n{r.Error}";
        Assert.True(r.ExitCode == 0, log);
        Assert.DoesNotContain("hello guest", r.Error);
        Assert.Contains("vireo-guest: Debian's cloud kernel 6.", r.Output);
        // The command's own output, not the terminal's echo of the line typed ("echo hi-from-pipe").
        Assert.Matches(new Regex(@"^hi-from-pipe\r*$", RegexOptions.Multiline), r.Output);
        Assert.Contains("vireo-guest: shell exited 0", r.Output);
        Assert.Contains("reboot: Power down", r.Output);
    }

    /// <summary>
    /// rig/rig exec -- COMMAND with its stdin a pipe from this process: <paramref name="input"/> is
    /// written once stdout shows <paramref name="prompt"/>, then the pipe is closed.
    /// </summary>
    private static TestEnvironment.ProcessResult RigTyping(string command, string prompt, string input)
    {
        var psi = new ProcessStartInfo(Path.Combine(TestEnvironment.Root, "rig/rig"), "exec -- " + command)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = TestEnvironment.Root,
        };
        psi.Environment["RIG_TIMEOUT"] = "600";
        using var p = Process.Start(psi)!;
        var output = new StringBuilder();
        var stdout = Task.Run(() =>
        {
            var buffer = new char[4096];
            int n;
            while ((n = p.StandardOutput.Read(buffer, 0, buffer.Length)) > 0)
            {
                lock (output)
                {
                    output.Append(buffer, 0, n);
                }
            }
        });
        var stderr = p.StandardError.ReadToEndAsync();
        string Output()
        {
            lock (output)
            {
                return output.ToString();
            }
        }
        var deadline = DateTime.UtcNow.AddSeconds(660);
        while (!Output().Contains(prompt) && !p.HasExited && DateTime.UtcNow < deadline)
        {
            Thread.Sleep(200);
        }
        if (!p.HasExited)
        {
            p.StandardInput.Write(input);
        }
        p.StandardInput.Close();
        if (!p.WaitForExit(Math.Max(1000, (int)(deadline - DateTime.UtcNow).TotalMilliseconds)))
        {
            p.Kill(entireProcessTree: true);
            p.WaitForExit();
            return new TestEnvironment.ProcessResult(124, Output(), "the rig did not finish in 660 s\n" + (stderr.Wait(10_000) ? stderr.Result : ""));
        }
        stdout.Wait(10_000);
        return new TestEnvironment.ProcessResult(p.ExitCode, Output(), stderr.Result);
    }

    [Theory]
    [InlineData("TERM", 143)] // timeout(1), a supervisor
    [InlineData("INT", 130)]  // Ctrl-C
    [InlineData("HUP", 129)]  // the terminal closed
    public async Task An_interrupted_rig_stops_its_qemu_and_removes_its_job_directory(string signal, int status)
    {
        // env(1) puts the signals back at their defaults: an ignored one is inherited (a test run started as a
        // shell's background job ignores SIGINT), and would hide what the rig does with it.
        var psi = new ProcessStartInfo("env", $"--default-signal=INT,TERM,HUP {Path.Combine(TestEnvironment.Root, "rig/rig")} exec -- sleep 600")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = TestEnvironment.Root,
        };
        using var rig = Process.Start(psi)!;
        var stdout = rig.StandardOutput.ReadToEndAsync();
        var stderr = rig.StandardError.ReadToEndAsync();
        string job = Path.Combine(TestEnvironment.Root, ".build", "rig-jobs", rig.Id.ToString(CultureInfo.InvariantCulture));
        try
        {
            // Signalled once its QEMU runs (the job's path is on QEMU's command line).
            var deadline = DateTime.UtcNow.AddSeconds(120);
            string qemu = $"rig.job={job} ";
            while (ProcessesNaming(qemu).Count == 0 && !rig.HasExited && DateTime.UtcNow < deadline)
            {
                await Task.Delay(100);
            }
            Assert.True(ProcessesNaming(qemu).Count > 0, $"no QEMU for {job}\n{(rig.HasExited ? await stderr : "")}");
            Check(TestEnvironment.Run("kill", $"-{signal} {rig.Id}"), "kill");
            using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await rig.WaitForExitAsync(limit.Token); // throws if rig/rig outlives the signal by 30 s
            Assert.True(rig.ExitCode == status, $"exit {rig.ExitCode}\n{await stdout}\n{await stderr}");
            Assert.Empty(ProcessesNaming(job + "/")); // QEMU, its timeout, the stdin relay
            Assert.False(Directory.Exists(job), $"{job} is left behind");
        }
        finally
        {
            if (!rig.HasExited)
            {
                rig.Kill(entireProcessTree: true);
            }
        }
    }

    /// <summary>The processes whose command line mentions <paramref name="text"/> (from /proc).</summary>
    private static List<int> ProcessesNaming(string text)
    {
        var found = new List<int>();
        foreach (string dir in Directory.GetDirectories("/proc"))
        {
            if (int.TryParse(Path.GetFileName(dir), out int pid))
            {
                try
                {
                    if (File.ReadAllText(Path.Combine(dir, "cmdline")).Replace('\0', ' ').Contains(text))
                    {
                        found.Add(pid);
                    }
                }
                catch (IOException)
                {
                    // It ended while being read.
                }
                catch (UnauthorizedAccessException)
                {
                }
            }
        }
        return found;
    }

    private static byte[] ReadFile(string image, string path)
    {
        string dest = Path.Combine(TempDirectory.Create("vireo-rig-out"), "file");
        Check(TestEnvironment.Run("/sbin/debugfs", $"-R \"dump {path} {dest}\" {image}"), "debugfs dump");
        return File.ReadAllBytes(dest);
    }
}
