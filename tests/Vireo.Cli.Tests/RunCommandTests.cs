using Vireo.Tests;

namespace Vireo.Cli.Tests;

/// <summary>`vireo run` end to end: exit statuses, messages and the console, as a terminal user sees them.</summary>
public class RunCommandTests
{
    private static string Guest(string name) => TestEnvironment.Guest(name);

    [KvmFact]
    public void Default_guest_is_debian_with_vmx_or_svm_else_the_hello_guest_with_the_reason()
    {
        if (HostHasHardwareVirtualization())
        {
            var build = TestEnvironment.Run(Path.Combine(TestEnvironment.Root, "guests/linux/build"), "", timeoutMs: 600_000);
            Assert.True(build.ExitCode == 0, build.Error);
            var debian = VireoProcess.Run("run --timeout 120", stdin: "exit\n", timeoutMs: 300_000); // the shell reads "exit", init powers off
            Assert.True(debian.ExitCode == 0, debian.Error);
            Assert.Contains("on Vireo; exit the shell to stop the VM", debian.Output);
            return;
        }
        var r = VireoProcess.Run("run --memory 64M");
        Assert.True(r.ExitCode == 0, r.Error);
        Assert.Contains("Hello from a Vireo test guest!", r.Output);
        Assert.Contains("vireo: no --kernel: booting the test kit's hello guest, because this CPU offers KVM no VMX or SVM", r.Error);
        Assert.Contains("rig/rig exec -- ./vireo run", r.Error);
    }

    private static bool HostHasHardwareVirtualization() =>
        File.ReadLines("/proc/cpuinfo").Any(l => l.StartsWith("flags", StringComparison.Ordinal) && (l.Contains(" vmx") || l.Contains(" svm")));

    [KvmFact]
    public void Pvh_guest_built_with_plain_gcc_m32_prints_and_stops_through_the_i8042_with_on_reboot_destroy()
    {
        string dir = Vireo.Tests.TempDirectory.Create("vireo-pvh32");
        string elf = Path.Combine(dir, "it.elf");
        var cc = TestEnvironment.Run("gcc",
            $"-m32 -nostdlib -static -no-pie -fno-pic -ffreestanding -O2 -Wl,-Ttext-segment=0x100000 -Wl,--build-id=none " +
            $"-o {elf} {Path.Combine(TestEnvironment.Root, "guests", "external", "pvh32.c")}");
        Assert.True(cc.ExitCode == 0, cc.Error);
        var r = VireoProcess.Run($"run --kernel {elf} --memory 128M --on-reboot destroy");
        Assert.True(r.ExitCode == 0, $"exit {r.ExitCode}: {r.Error}");
        Assert.Contains("pvh32: hello from a 32-bit PVH guest", r.Output);
        Assert.Contains("pvh32: start info ok", r.Output);
    }

    [KvmFact]
    public void A_guest_that_reboots_is_started_again_until_the_time_limit()
    {
        // Without ACPI the kit's guests end by an i8042 reset: a reboot, which restarts the VM.
        var r = VireoProcess.Run($"run --kernel {Guest("hello")} --no-acpi --memory 64M --timeout 3", env: [("VIREO_VERBOSE", "1")]);
        Assert.True(r.ExitCode == 124, $"exit {r.ExitCode}: {r.Error}");
        int boots = r.Output.Split("Hello from a Vireo test guest!").Length - 1;
        Assert.True(boots >= 2, $"{boots} boots:\n{r.Output}");
        Assert.Contains("vireo: guest reset (i8042 reset); starting boot 2", r.Error);
    }

    [KvmFact]
    public void On_reboot_destroy_ends_the_run_at_the_first_reboot()
    {
        var r = VireoProcess.Run($"run --kernel {Guest("hello")} --no-acpi --memory 64M --timeout 30 --on-reboot destroy");
        Assert.True(r.ExitCode == 0, $"exit {r.ExitCode}: {r.Error}");
        Assert.Single(r.Output.Split("Hello from a Vireo test guest!")[1..]);
    }

    [KvmFact]
    public void Debug_exit_status_becomes_the_exit_status()
    {
        var r = VireoProcess.Run($"run --kernel {Guest("hello")} --debug-exit --cmdline status=9 --vcpus 2");
        Assert.Equal(9, r.ExitCode);
    }

    [KvmFact]
    public void Piped_stdin_reaches_the_guest_console()
    {
        var r = VireoProcess.Run($"run --kernel {Guest("console")} --memory 32M --timeout 30", stdin: "from the host\nq\n");
        Assert.True(r.ExitCode == 0, r.Error);
        Assert.Contains("echo: from the host", r.Output);
    }

    [KvmFact]
    public void On_a_terminal_the_console_is_raw_and_ctrl_bracket_then_q_quits()
    {
        // `script` gives vireo a real pseudo-terminal; the typist sends a line, then Ctrl-] q.
        string sh = Path.Combine(Vireo.Tests.TempDirectory.Create("vireo-tty"), "typist.sh");
        File.WriteAllText(sh,
            "(sleep 2; printf 'hi\\r'; sleep 1; printf '\\035q'; sleep 4) | " +
            $"script -qefc '{VireoProcess.Program} run --kernel {Guest("console")} --memory 32M' /dev/null\n");
        var r = TestEnvironment.Run("timeout", $"30 bash {sh}");
        Assert.True(r.ExitCode == 0, $"exit {r.ExitCode} (124: Ctrl-] q did not stop the VM)\n{r.Output}\n{r.Error}");
        string screen = r.Output.Replace("\r", "");
        Assert.Contains("echo: hi", screen);
        Assert.DoesNotContain("hi\nhi", screen); // raw mode: the host terminal does not echo too
    }

    [KvmFact]
    public void Triple_fault_exits_non_zero_with_a_register_dump()
    {
        var r = VireoProcess.Run($"run --kernel {Guest("triplefault")}");
        Assert.Equal(1, r.ExitCode);
        Assert.StartsWith("vireo: TripleFault: vCPU 0: triple fault", r.Error);
        Assert.Contains("RIP=", r.Error);
        Assert.Contains("CR3=", r.Error);
    }

    [KvmFact]
    public void A_guest_that_runs_too_long_exits_124()
    {
        // 1.2 s: the message names the limit given, not what was left of it after building the VM.
        var r = VireoProcess.Run($"run --kernel {Guest("console")} --timeout 1.2");
        Assert.Equal(124, r.ExitCode);
        Assert.Contains("no exit within 1.2 s", r.Error);
    }

    [Fact]
    public void A_cmdline_too_long_for_the_kernel_is_a_bad_configuration_not_a_bad_image()
    {
        var r = VireoProcess.Run($"run --kernel {Guest("hello")} --cmdline {new string('a', 5000)}");
        Assert.True(r.ExitCode == 2, $"exit {r.ExitCode}: {r.Error}");
        Assert.Equal("vireo: --cmdline: command line is 5000 bytes; this kernel accepts at most 4095", r.Error.Trim());
    }

    [Fact]
    public void Malformed_image_is_one_line_naming_the_problem()
    {
        string bad = Path.Combine(Path.GetTempPath(), $"vireo-garbage-{Guid.NewGuid():n}");
        File.WriteAllBytes(bad, new byte[8192]);
        try
        {
            var r = VireoProcess.Run($"run --kernel {bad}");
            Assert.Equal(4, r.ExitCode);
            Assert.Equal("vireo: kernel image is neither an ELF file nor a Linux bzImage (no ELF magic, no \"HdrS\" at offset 0x202)", r.Error.Trim());
        }
        finally
        {
            File.Delete(bad);
        }
    }

    [Theory]
    [InlineData("run --kernel /nonexistent/bzImage", "vireo: kernel: no such file: /nonexistent/bzImage")]
    [InlineData("run --memory lots", "vireo: memory: 'lots' is not a size (examples: 256M, 2G)")]
    [InlineData("run --vcpus 0", "vireo: vcpus: 0 is outside 1..254")]
    [InlineData("run --memory 8M", "vireo: memory: 8 MiB is outside 16 MiB..1024 GiB")]
    [InlineData("run --vcpus two", "vireo: vcpus: 'two' is not a whole number")]
    [InlineData("run --timeout soon", "vireo: timeout: 'soon' is not a number of seconds")]
    public void Bad_options_exit_2_with_a_clear_message(string args, string message)
    {
        var r = VireoProcess.Run(args);
        Assert.Equal(2, r.ExitCode);
        Assert.Equal(message, r.Error.Trim());
    }

    [Fact]
    public void Missing_initrd_is_named()
    {
        var r = VireoProcess.Run($"run --kernel {Guest("hello")} --initrd /nonexistent/initrd");
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("initrd: no such file", r.Error);
    }

    [Fact]
    public void Help_lists_the_run_options()
    {
        var r = VireoProcess.Run("run --help");
        Assert.Equal(0, r.ExitCode);
        foreach (var option in new[] { "--kernel", "--initrd", "--cmdline", "--memory", "--vcpus", "--debug-exit", "--timeout" })
        {
            Assert.Contains(option, r.Output);
        }
    }
}
