using System.Text.RegularExpressions;
using Vireo.Tests;

namespace Vireo.Vmm.Tests;

/// <summary>Every guest of the kit, booted on the real /dev/kvm with one and with several vCPUs.</summary>
public class GuestKitTests
{
    [KvmTheory]
    [InlineData(1)]
    [InlineData(2)]
    public void Hello_prints_its_cpu_memory_and_command_line(int vcpus)
    {
        var run = GuestRun.Boot("hello", vcpus, memoryMiB: 128, cmdline: "status=0 hello-from-test").ExitedWith(0);
        Assert.Contains("Hello from a Vireo test guest!", run.Output);
        // 128 MiB less the reserved 0x9fc00..1 MiB hole, as the e820 map says.
        Assert.Contains("cpu 0, 127 MiB of RAM in 3 e820 entries, cmdline \"status=0 hello-from-test\"", run.Output);
    }

    [KvmFact]
    public void Guest_status_comes_back_through_the_debug_exit_port() =>
        GuestRun.Boot("hello", cmdline: "status=42").ExitedWith(42);

    [KvmFact]
    public void Without_the_debug_port_the_guest_powers_off_through_acpi()
    {
        var run = GuestRun.Boot("hello", debugExit: false);
        Assert.Equal(StopReason.PowerOff, run.Outcome.Reason);
        Assert.Equal("ACPI S5", run.Outcome.Message);
        Assert.Equal(0, run.Outcome.ExitCode);
    }

    [KvmFact]
    public void Without_acpi_the_guest_stops_through_the_i8042()
    {
        var run = GuestRun.Boot("hello", debugExit: false, configure: c => c with { Acpi = false });
        Assert.Equal(StopReason.Reset, run.Outcome.Reason);
        Assert.Equal("i8042 reset", run.Outcome.Message);
    }

    [KvmTheory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    [InlineData(8)]
    public void Smp_every_vcpu_in_the_mp_table_and_the_madt_checks_in(int vcpus)
    {
        var run = GuestRun.Boot("smp", vcpus).ExitedWith(0);
        Assert.Contains($"smp: MP table lists {vcpus} cpus, bsp is 0", run.Output);
        Assert.Contains($"smp: ACPI MADT lists {vcpus} cpus", run.Output); // the guest fails (3) if the ids differ
        Assert.Contains($"smp: {vcpus} of {vcpus} cpus online ({vcpus - 1} aps)", run.Output);
        for (int cpu = 1; cpu < vcpus; cpu++)
        {
            Assert.Contains($"cpu {cpu} checked in", run.Output);
        }
    }

    [KvmFact]
    public void Smp_without_acpi_finds_its_cpus_in_the_mp_table_alone()
    {
        var run = GuestRun.Boot("smp", 2, configure: c => c with { Acpi = false }).ExitedWith(0);
        Assert.DoesNotContain("ACPI MADT", run.Output);
        Assert.Contains("smp: 2 of 2 cpus online (1 aps)", run.Output);
    }

    [KvmTheory]
    [InlineData(1)]
    [InlineData(2)]
    public void Cpuburn_every_vcpu_computes_the_right_checksum(int vcpus)
    {
        const ulong iterations = 20_000_000;
        var run = GuestRun.Boot("cpuburn", vcpus, cmdline: $"iters={iterations}").ExitedWith(0);
        Assert.Contains($"cpuburn: {vcpus} cpus done, {iterations} iterations each", run.Output);
        for (int cpu = 0; cpu < vcpus; cpu++)
        {
            // The same xorshift the guest runs, computed here: the guest's work really happened.
            Assert.Contains($"cpu {cpu}: {iterations} iterations, checksum {XorShift(iterations, (ulong)cpu + 1):x}", run.Output);
        }
    }

    private static ulong XorShift(ulong n, ulong seed)
    {
        ulong x = seed | 1;
        for (ulong i = 0; i < n; i++)
        {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        return x;
    }

    [KvmTheory]
    [InlineData(64, 1)]
    [InlineData(256, 2)]
    public void Memtest_verifies_all_ram(ulong memoryMiB, int vcpus)
    {
        var run = GuestRun.Boot("memtest", vcpus, memoryMiB).ExitedWith(0);
        var m = Regex.Match(run.Output, @"memtest: (\d+) MiB of (\d+) MiB verified");
        Assert.True(m.Success, run.Output);
        Assert.Equal((long)memoryMiB - 1, long.Parse(m.Groups[2].Value));
        Assert.True(long.Parse(m.Groups[1].Value) >= (long)memoryMiB - 4, run.Output);
    }

    [KvmFact]
    public void Memtest_reaches_ram_above_the_pci_hole()
    {
        // 3 GiB + 256 MiB: the last 256 MiB lives at 4 GiB.
        var run = GuestRun.Boot("memtest", 1, 3 * 1024 + 256, timeoutSeconds: 120).ExitedWith(0);
        Assert.Contains("memtest: 100000000-110000000", run.Output);
        Assert.Contains("MiB of 3327 MiB verified", run.Output);
    }

    [KvmTheory]
    [InlineData(MemoryBacking.Memfd)]
    [InlineData(MemoryBacking.Anonymous)]
    public void Memtest_passes_on_either_backing_of_guest_ram(MemoryBacking backing)
    {
        var run = GuestRun.Boot("memtest", 1, 256, configure: c => c with { MemoryBacking = backing }).ExitedWith(0);
        Assert.Contains("MiB of 255 MiB verified", run.Output); // the first MiB is not counted
    }

    [KvmTheory]
    [InlineData(1)]
    [InlineData(2)]
    public void Exceptions_reach_the_guest_idt_and_the_lapic_timer_ticks(int vcpus)
    {
        var run = GuestRun.Boot("exceptions", vcpus).ExitedWith(0);
        foreach (var line in new[] { "divide error -> vector 0 ok", "breakpoint -> vector 3 ok", "invalid opcode -> vector 6 ok",
                     "general protection -> vector 13 ok", "page fault -> vector 14 ok", "no fault -> vector -1 ok" })
        {
            Assert.Contains("exceptions: " + line, run.Output);
        }
        Assert.Matches(@"lapic timer -> \d+ ticks ok", run.Output);
        Assert.Contains("exceptions: 0 failures", run.Output);
    }

    [KvmFact]
    public void An_unhandled_guest_exception_is_reported_by_the_guest()
    {
        var run = GuestRun.Boot("exceptions", cmdline: "unhandled=1").ExitedWith(0x40 + 6);
        Assert.Contains("unhandled exception 6 (#UD invalid opcode)", run.Output);
    }

    [KvmTheory]
    [InlineData(1)]
    [InlineData(2)]
    public void Serial_input_reaches_the_guest(int vcpus)
    {
        var run = GuestRun.Boot("console", vcpus, whileRunning: m =>
        {
            Thread.Sleep(200);
            m.Serial.Enqueue("hello vm\n"u8);
            Thread.Sleep(100);
            m.Serial.Enqueue("q\n"u8);
        }).ExitedWith(0);
        Assert.Contains("echo: hello vm", run.Output);
        Assert.Contains("echo: q", run.Output);
    }
}
