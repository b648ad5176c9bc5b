using Vireo.Interop;
using Vireo.Boot;
using Vireo.Tests;

namespace Vireo.Vmm.Tests;

/// <summary>Faults and bad input end the run with a reason, a register dump and a non-zero status; never a hang.</summary>
public class FailureTests
{
    [KvmFact]
    public void A_triple_fault_stops_the_vm_with_a_register_dump()
    {
        var run = GuestRun.Boot("triplefault");
        Assert.Equal(StopReason.TripleFault, run.Outcome.Reason);
        Assert.NotEqual(0, run.Outcome.ExitCode);
        Assert.Contains("RIP=", run.Outcome.RegisterDump);
        Assert.Contains("IDT=0/0", run.Outcome.RegisterDump); // the guest emptied it
        Assert.Contains("triplefault: breaking the IDT", run.Output);
        Assert.DoesNotContain("STILL ALIVE", run.Output);
    }

    [KvmFact]
    public void A_guest_that_never_exits_is_stopped_at_its_time_limit()
    {
        var run = GuestRun.Boot("console", timeoutSeconds: 1);
        Assert.Equal(StopReason.Timeout, run.Outcome.Reason);
        Assert.Equal(124, run.Outcome.ExitCode);
        Assert.Contains("vCPU 0 registers", run.Outcome.RegisterDump);
    }

    [KvmFact]
    public void A_stop_request_from_the_host_ends_every_vcpu()
    {
        var run = GuestRun.Boot("console", vcpus: 1, whileRunning: m =>
        {
            Thread.Sleep(300);
            m.RequestStop(new VmOutcome(StopReason.HostRequest, Message: "test"));
        });
        Assert.Equal(StopReason.HostRequest, run.Outcome.Reason);
        Assert.Equal(0, run.Outcome.ExitCode);
    }

    [KvmFact]
    public void The_device_thread_runs_above_the_vcpus_when_the_process_may_raise_it()
    {
        int? nice = null;
        GuestRun.Boot("console", vcpus: 1, configure: c => c with { Rng = true }, whileRunning: m =>
        {
            Thread.Sleep(300);
            foreach (var task in Directory.GetDirectories("/proc/self/task"))
            {
                if (File.ReadAllText(Path.Combine(task, "comm")).Trim() == "vireo-io")
                {
                    // stat: "pid (comm) state ..." and nice is the 19th field, the 17th after the comm.
                    var stat = File.ReadAllText(Path.Combine(task, "stat"));
                    nice = int.Parse(stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[16]);
                }
            }
            m.RequestStop(new VmOutcome(StopReason.HostRequest, Message: "test"));
        });
        Assert.NotNull(nice);
        Assert.Equal(Environment.IsPrivilegedProcess ? EventLoop.Nice : 0, nice);
    }

    [KvmFact]
    public void A_malformed_kernel_creates_no_vm_and_says_why()
    {
        string path = Path.Combine(Path.GetTempPath(), $"vireo-bad-{Guid.NewGuid():n}.elf");
        var bytes = File.ReadAllBytes(TestEnvironment.Guest("hello"));
        File.WriteAllBytes(path, bytes[..200]);
        try
        {
            var e = Assert.Throws<BootException>(() => Machine.Create(new VmConfig { KernelPath = path }, _ => { }));
            Assert.Contains("beyond the end of the file", e.Message);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void A_file_handed_over_open_is_taken_with_its_own_rights_and_never_reopened()
    {
        string dir = TempDirectory.Create("vireo-handed");
        string disk = Path.Combine(dir, "disk.img");
        File.WriteAllBytes(disk, new byte[4096]);
        using var readOnly = new FileDescriptor(Libc.Open(disk, Libc.O_RDONLY | Libc.O_CLOEXEC, 0));
        using var kernel = new FileDescriptor(Libc.Open(TestEnvironment.Guest("hello"), Libc.O_RDONLY | Libc.O_CLOEXEC, 0));
        File.Delete(disk); // a reopen through /proc would still find it; what matters is the rights
        var config = new VmConfig { KernelPath = $"/proc/self/fd/{kernel.Fd}", Disks = [new($"/proc/self/fd/{readOnly.Fd}")] };
        Assert.Equal($"disk: /proc/self/fd/{readOnly.Fd} was handed over read-only, and it is to be written",
            Assert.Throws<VmConfigException>(() => VmFiles.Open(config)).Message);
        using (var files = VmFiles.Open(config with { Disks = [new($"/proc/self/fd/{readOnly.Fd}", ReadOnly: true)] }))
        {
            using var bytes = files.ReadKernel();
            Assert.True(bytes.GetSpan().Length > 0);
        }
        Assert.Equal("kernel: no such file: /proc/self/fd/999",
            Assert.Throws<VmConfigException>(() => VmFiles.Open(config with { KernelPath = "/proc/self/fd/999" })).Message);
    }

    [Theory]
    [InlineData(0, 128, "vcpus: 0 is outside")]
    [InlineData(300, 128, "vcpus: 300 is outside")]
    [InlineData(1, 4, "memory: 4 MiB is outside")]
    public void Impossible_machine_sizes_are_refused(int vcpus, ulong memoryMiB, string message)
    {
        var config = new VmConfig { KernelPath = TestEnvironment.Guest("hello"), Vcpus = vcpus, MemoryBytes = memoryMiB << 20 };
        Assert.Contains(message, Assert.Throws<VmConfigException>(config.Validate).Message);
    }

    [Theory]
    [InlineData("256M", 256UL << 20)]
    [InlineData("2G", 2UL << 30)]
    [InlineData("512MiB", 512UL << 20)]
    [InlineData("128", 128UL << 20)]
    public void Memory_sizes_parse(string text, ulong bytes) => Assert.Equal(bytes, VmConfig.ParseSize(text));

    [Theory]
    [InlineData("")]
    [InlineData("lots")]
    [InlineData("-5M")]
    [InlineData("0")]
    [InlineData("99999999999999G")]
    public void Bad_memory_sizes_are_refused(string text) => Assert.Throws<VmConfigException>(() => VmConfig.ParseSize(text));
}
