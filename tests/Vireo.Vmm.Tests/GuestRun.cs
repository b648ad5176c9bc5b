using System.Text;
using Vireo.Tests;

namespace Vireo.Vmm.Tests;

/// <summary>Changes a test's VmConfig (adds devices).</summary>
internal delegate VmConfig VmConfigChange(VmConfig config);

/// <summary>Boots a test guest in-process on the real /dev/kvm and captures its serial output.</summary>
internal sealed record GuestRun(VmOutcome Outcome, string Output, long Exits, long VcpuAllocatedBytes)
{
    public static GuestRun Boot(string guest, int vcpus = 1, ulong memoryMiB = 128, string cmdline = "",
        bool debugExit = true, double timeoutSeconds = 60, Action<Machine>? whileRunning = null, VmConfigChange? configure = null)
    {
        var config = new VmConfig
        {
            KernelPath = TestEnvironment.Guest(guest),
            MemoryBytes = memoryMiB << 20,
            Vcpus = vcpus,
            Cmdline = cmdline,
            DebugExit = debugExit,
        };
        if (configure is not null)
        {
            config = configure(config);
        }
        var output = new StringBuilder();
        using var machine = Machine.Create(config, b =>
        {
            lock (output)
            {
                output.Append((char)b);
            }
        });
        Task? helper = whileRunning is null ? null : Task.Run(() => whileRunning(machine));
        var outcome = machine.Run(TimeSpan.FromSeconds(timeoutSeconds));
        helper?.Wait();
        lock (output)
        {
            return new GuestRun(outcome, output.ToString().Replace("\r\n", "\n"), machine.Exits, machine.VcpuAllocatedBytes);
        }
    }

    /// <summary>Asserts the guest reported status <paramref name="status"/> through the debug-exit port.</summary>
    public GuestRun ExitedWith(int status)
    {
        Assert.True(Outcome.Reason == StopReason.DebugExit && Outcome.GuestStatus == status,
            $"expected guest status {status}, got {Outcome}\n{Outcome.RegisterDump}\n--- serial ---\n{Output}");
        return this;
    }
}
