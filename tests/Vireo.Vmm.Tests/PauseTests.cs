using Vireo.Tests;

namespace Vireo.Vmm.Tests;

/// <summary>Machine.Pause parks every vCPU outside KVM_RUN; Resume lets them run on.</summary>
public class PauseTests
{
    private static void WaitFor(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting for {what}");
            Thread.Sleep(10);
        }
    }

    [KvmTheory]
    [InlineData(1)]
    [InlineData(2)]
    public void Pause_stops_every_exit_and_resume_brings_them_back(int vcpus)
    {
        // The console guest polls COM1 with port I/O, so a running vCPU 0 exits all the time.
        var run = GuestRun.Boot("console", vcpus, whileRunning: m =>
        {
            WaitFor(() => m.Exits > 1000, "the guest to poll");
            m.Pause();
            Assert.True(m.IsPaused);
            long before = m.Exits;
            Thread.Sleep(300);
            Assert.Equal(before, m.Exits);
            m.Pause(); // pausing a paused VM is a no-op
            m.Resume();
            Assert.False(m.IsPaused);
            WaitFor(() => m.Exits > before + 1000, "exits after resume");
            m.EnqueueConsoleInput("q\n"u8);
        });
        Assert.True(run.Outcome.IsClean, run.Outcome.ToString());
    }

    [KvmFact]
    public void A_paused_vm_still_stops_when_asked()
    {
        var run = GuestRun.Boot("console", whileRunning: m =>
        {
            WaitFor(() => m.Exits > 100, "the guest to poll");
            m.Pause();
            m.RequestStop(new VmOutcome(StopReason.HostRequest, Message: "test"));
        });
        Assert.Equal(StopReason.HostRequest, run.Outcome.Reason);
    }
}
