using System.Diagnostics;
using System.Text;
using Vireo.Tests;

namespace Vireo.Cli.Tests;

/// <summary>
/// `vireo run` given files and sizes that are not what they should be: special files, files larger
/// than the guest, a kernel replaced under a running VM, signals at any moment. Each ends promptly
/// with the exit status and the one line a user can act on.
/// </summary>
public class HostileInputTests
{
    private static string Guest(string name) => TestEnvironment.Guest(name);

    /// <summary>Run with a time limit well under the test's: a FIFO that blocked would be a TimeoutException.</summary>
    private static TestEnvironment.ProcessResult Run(string args) => VireoProcess.Run(args, timeoutMs: 30_000);

    [Fact]
    public void A_fifo_as_kernel_initrd_or_disk_is_refused_at_once_naming_the_field()
    {
        string fifo = HostileFiles.Fifo();
        foreach (var (args, line) in new[]
        {
            ($"run --kernel {fifo}", $"vireo: kernel: {fifo} is a FIFO, not a regular file"),
            ($"run --kernel {Guest("hello")} --initrd {fifo}", $"vireo: initrd: {fifo} is a FIFO, not a regular file"),
            ($"run --kernel {Guest("hello")} --disk {fifo}", $"vireo: disk: {fifo} is a FIFO, not a regular file or block device"),
            ($"run --kernel {Guest("hello")} --disk {fifo},ro", $"vireo: disk: {fifo} is a FIFO, not a regular file or block device"),
        })
        {
            var r = Run(args);
            Assert.True(r.ExitCode == 2, $"{args}: exit {r.ExitCode}: {r.Error}");
            Assert.Equal(line, r.Error.Trim());
        }
    }

    [Fact]
    public void Character_devices_are_never_read_as_images_and_directories_are_not_disks()
    {
        foreach (var (args, line) in new[]
        {
            ("run --kernel /dev/zero", "vireo: kernel: /dev/zero is a character device, not a regular file"),
            ($"run --kernel {Guest("hello")} --initrd /dev/zero", "vireo: initrd: /dev/zero is a character device, not a regular file"),
            ($"run --kernel {Guest("hello")} --initrd /dev/urandom", "vireo: initrd: /dev/urandom is a character device, not a regular file"),
            ($"run --kernel {Guest("hello")} --disk /dev/null", "vireo: disk: /dev/null is a character device, not a regular file or block device"),
            ($"run --kernel {Guest("hello")} --disk /tmp", "vireo: disk: /tmp is a directory, not a regular file or block device"),
        })
        {
            var r = Run(args);
            Assert.True(r.ExitCode == 2, $"{args}: exit {r.ExitCode}: {r.Error}");
            Assert.Equal(line, r.Error.Trim());
        }
    }

    [Fact]
    public void A_unix_socket_as_kernel_or_disk_is_named_as_one()
    {
        string path = Path.Combine(TempDirectory.Create("vireo-sock"), "api.sock");
        using var listener = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
        listener.Bind(new System.Net.Sockets.UnixDomainSocketEndPoint(path));
        var r = Run($"run --kernel {path}");
        Assert.Equal(2, r.ExitCode);
        Assert.Equal($"vireo: kernel: {path} is a socket, not a regular file", r.Error.Trim());
        r = Run($"run --kernel {Guest("hello")} --disk {path}");
        Assert.Equal(2, r.ExitCode);
        Assert.Equal($"vireo: disk: {path} is a socket, not a regular file or block device", r.Error.Trim());
    }

    [Fact]
    public void An_image_larger_than_guest_ram_is_refused_without_being_read()
    {
        string big = HostileFiles.Sparse(100L << 30); // 100 GiB, sparse: reading it would take the host's memory
        var r = Run($"run --kernel {big} --memory 64M");
        Assert.True(r.ExitCode == 2, $"exit {r.ExitCode}: {r.Error}");
        Assert.Equal($"vireo: kernel: {big} is 102400 MiB, larger than the guest's RAM (64 MiB)", r.Error.Trim());
        r = Run($"run --kernel {Guest("hello")} --initrd {big} --memory 64M");
        Assert.Equal(2, r.ExitCode);
        Assert.Equal($"vireo: initrd: {big} is 102400 MiB, larger than the guest's RAM (64 MiB)", r.Error.Trim());
    }

    [Fact]
    public void Memory_larger_than_the_host_is_refused_naming_the_hosts_size()
    {
        var r = Run($"run --kernel {Guest("hello")} --memory 1T");
        Assert.Equal(2, r.ExitCode);
        Assert.Matches(@"^vireo: memory: 1048576 MiB is more than this host's RAM \(\d+ MiB\)$", r.Error.Trim());
    }

    [KvmFact]
    public void A_kernel_with_a_2_gib_bss_boots_where_ram_has_room_and_is_one_line_where_not()
    {
        string kernel = HostileFiles.WithBss(Guest("hello"), 0x8000_0000);
        var r = VireoProcess.Run($"run --kernel {kernel} --memory 3G --timeout 60");
        Assert.True(r.ExitCode == 0, $"exit {r.ExitCode}: {r.Error}");
        Assert.Contains("Hello from a Vireo test guest!", r.Output);
        r = Run($"run --kernel {kernel} --memory 1G");
        Assert.Equal(4, r.ExitCode);
        Assert.Equal("vireo: ELF64 (PVH) segment at 0x100000 (0x80000000 bytes) lies outside guest RAM (1024 MiB)", r.Error.Trim());
    }

    [KvmFact]
    public void A_reboot_uses_the_kernel_read_at_start_even_when_its_path_is_gone_or_replaced()
    {
        // Without ACPI the hello guest reboots through the i8042 as soon as it has printed: every
        // boot after the first happens after the file was deleted, then replaced by garbage.
        string kernel = HostileFiles.Copy(Guest("hello"));
        using var p = Start($"run --kernel {kernel} --no-acpi --memory 64M --timeout 4", out var output, out var error);
        WaitFor(output, "Hello from a Vireo test guest!", p);
        File.Delete(kernel);
        Thread.Sleep(300);
        File.WriteAllBytes(kernel, new byte[8192]);
        Assert.True(p.WaitForExit(30_000), "vireo run did not end");
        p.WaitForExit();
        string err = Text(error);
        Assert.True(p.ExitCode == 124, $"exit {p.ExitCode} (124: the time limit, reached while rebooting):\n{err}");
        int boots = Text(output).Split("Hello from a Vireo test guest!").Length - 1;
        Assert.True(boots >= 3, $"{boots} boots; stderr:\n{err}");
    }

    [KvmFact]
    public void Sigterm_and_sigint_end_vireo_run_promptly_at_any_stage()
    {
        // From before the handlers exist, through opening files and building the VM, to the running guest.
        foreach (int delayMs in new[] { 50, 150, 300, 500, 800, 1200, 2000 })
        {
            foreach (var (signal, number) in new[] { ("TERM", 15), ("INT", 2) })
            {
                using var p = Start($"run --kernel {Guest("console")} --memory 64M", out _, out var error);
                Thread.Sleep(delayMs);
                var kill = TestEnvironment.Run("kill", $"-{signal} {p.Id}");
                Assert.True(kill.ExitCode == 0 || p.HasExited, kill.Error);
                Assert.True(p.WaitForExit(10_000), $"SIG{signal} after {delayMs} ms: vireo run still running 10 s later");
                p.WaitForExit();
                // Before the handlers: the runtime's default (128 + the signal); after: a clean host stop (0).
                Assert.True(p.ExitCode == 0 || p.ExitCode == 128 + number, $"SIG{signal} after {delayMs} ms: exit {p.ExitCode}: {Text(error)}");
            }
        }
    }

    private static Process Start(string args, out StringBuilder output, out StringBuilder error)
    {
        _ = TestEnvironment.GuestDir;
        // Through env(1), with the signals at their defaults: an ignored one is inherited (a test run started as a
        // shell's background job ignores SIGINT), and it would hide what vireo itself does with them.
        var psi = new ProcessStartInfo("env", $"--default-signal=INT,TERM,HUP {VireoProcess.Program} {args}")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = TestEnvironment.Root,
        };
        psi.Environment["VIREO_VERBOSE"] = "1";
        var p = Process.Start(psi)!;
        var (o, e) = (new StringBuilder(), new StringBuilder());
        p.OutputDataReceived += (_, d) => { lock (o) { o.AppendLine(d.Data); } };
        p.ErrorDataReceived += (_, d) => { lock (e) { e.AppendLine(d.Data); } };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        (output, error) = (o, e);
        return p;
    }

    private static string Text(StringBuilder b)
    {
        lock (b)
        {
            return b.ToString();
        }
    }

    private static void WaitFor(StringBuilder output, string text, Process p)
    {
        var until = DateTime.UtcNow.AddSeconds(30);
        while (!Text(output).Contains(text, StringComparison.Ordinal))
        {
            Assert.False(p.HasExited, $"vireo run ended before printing '{text}'");
            Assert.True(DateTime.UtcNow < until, $"no '{text}' within 30 s");
            Thread.Sleep(20);
        }
    }
}
