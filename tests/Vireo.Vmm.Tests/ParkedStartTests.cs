using System.Text;
using Vireo.Interop;
using Vireo.Tests;
using Vireo.Vmm.Migration;

namespace Vireo.Vmm.Tests;

/// <summary>
/// What a migration's destination makes before the guest's pause, so that the pause is left with
/// wake-ups: the machine's threads made parked (the vCPUs before their first KVM_RUN, the event
/// loop before it handles anything), and the pause's threads raised while it lasts.
/// </summary>
public class ParkedStartTests
{
    private static bool ThreadExists(int tid) => Directory.Exists($"/proc/self/task/{tid}");

    [Fact]
    public void An_event_loop_started_parked_handles_nothing_until_it_is_let_go()
    {
        using var loop = new EventLoop(e => Assert.Fail(e.Message));
        using var fd = new EventFd();
        int handled = 0;
        loop.Add(fd, () => Interlocked.Increment(ref handled)); // the loop reads the eventfd itself
        fd.Signal();
        loop.StartParked();
        Thread.Sleep(200);
        Assert.Equal(0, Volatile.Read(ref handled)); // signalled before and after the start, taken by nobody
        loop.Resume();
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (Volatile.Read(ref handled) == 0 && DateTime.UtcNow < deadline)
        {
            Thread.Sleep(5);
        }
        Assert.Equal(1, Volatile.Read(ref handled));
    }

    private static VmConfig Console(int vcpus) => new()
    {
        KernelPath = TestEnvironment.Guest("console"),
        MemoryBytes = 64 << 20,
        Vcpus = vcpus,
        DebugExit = true,
    };

    [KvmFact]
    public void A_machine_made_parked_and_never_run_ends_its_threads_when_released()
    {
        var machine = Machine.Create(Console(2), _ => { });
        machine.StartVcpusParked();
        int[] tids = [.. machine.VcpuThreadIds];
        Assert.All(tids, tid => Assert.True(tid > 0 && ThreadExists(tid), $"vCPU thread {tid}"));
        Assert.Equal(0, machine.Exits); // parked before the first KVM_RUN
        machine.Dispose();
        Assert.All(tids, tid => Assert.False(ThreadExists(tid), $"vCPU thread {tid} outlived its machine"));
    }

    [KvmFact]
    public void A_machine_made_parked_runs_its_guest_once_run_lets_it_go()
    {
        var output = new StringBuilder();
        using var machine = Machine.Create(Console(2), b =>
        {
            lock (output)
            {
                output.Append((char)b);
            }
        });
        machine.StartVcpusParked();
        Thread.Sleep(100);
        Assert.Equal(0, machine.Exits);
        var run = Task.Factory.StartNew(() => machine.Run(TimeSpan.FromSeconds(60)), TaskCreationOptions.LongRunning);
        RunsThenIsToldToQuit(machine, "the guest did not run once let go");
        Assert.True(run.Wait(TimeSpan.FromSeconds(30)), "the guest did not stop");
        Assert.True(run.Result.IsClean, run.Result.ToString());
    }

    [KvmFact]
    public void Start_lets_the_guest_go_on_the_calling_thread_and_run_then_only_waits()
    {
        using var machine = Machine.Create(Console(1), _ => { });
        machine.StartVcpusParked();
        machine.Start(); // a restore's thread: no other thread between it and the guest
        machine.Start(); // once only
        RunsThenIsToldToQuit(machine, "the guest did not run after Start, before any Run");
        var outcome = machine.Run(TimeSpan.FromSeconds(30));
        Assert.True(outcome.IsClean, outcome.ToString());
    }

    /// <summary>Waits for the console guest's first thousand exits (it runs), then types q at it (it is to quit).</summary>
    private static void RunsThenIsToldToQuit(Machine machine, string notRunning)
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (machine.Exits < 1000 && DateTime.UtcNow < deadline)
        {
            Thread.Sleep(10);
        }
        Assert.True(machine.Exits >= 1000, notRunning);
        while (machine.EnqueueConsoleInput("q\n"u8) == 0 && DateTime.UtcNow < deadline)
        {
            Thread.Sleep(10);
        }
    }

    [Fact]
    public void The_pause_raises_its_threads_and_gives_them_their_priority_back()
    {
        int before = 0;
        Exception? failed = null;
        var check = new Thread(() =>
        {
            try
            {
                int tid = Libc.GetTid();
                before = Libc.GetPriority(Libc.PRIO_PROCESS, tid);
                using (Urgency.Raise([tid, 0, -1])) // 0: a vCPU not started yet, skipped
                {
                    Assert.Equal(Urgency.Nice, Libc.GetPriority(Libc.PRIO_PROCESS, tid)); // the tests run as root, as CI does
                }
                Assert.Equal(before, Libc.GetPriority(Libc.PRIO_PROCESS, tid));
            }
            catch (Exception e)
            {
                failed = e;
            }
        });
        check.Start();
        check.Join();
        Assert.Null(failed);
    }
}
