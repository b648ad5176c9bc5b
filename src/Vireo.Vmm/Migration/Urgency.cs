using Vireo.Interop;

namespace Vireo.Vmm.Migration;

/// <summary>
/// The threads a migration's pause waits on (the sender and the vCPUs at the source; the receiver
/// and the parked vCPUs at the destination) run at a higher priority for those few milliseconds
/// and go back to theirs after. On a busy host each of the pause's hand-offs between threads
/// otherwise waits for a time slice: a guest on this 2-CPU host saw pauses of 4-35 ms where the
/// work takes 2. Best effort, as the event loop's own priority: without CAP_SYS_NICE (or an
/// RLIMIT_NICE that allows it) the threads keep theirs.
/// </summary>
internal sealed class Urgency : IDisposable
{
    /// <summary>The nice value of a thread in the pause's path; the event loop runs at -5.</summary>
    public const int Nice = -10;

    private readonly List<(int Tid, int Nice)> _raised = [];

    private Urgency(IEnumerable<int> tids)
    {
        foreach (int tid in tids)
        {
            if (tid <= 0)
            {
                continue;
            }
            int before = Libc.GetPriority(Libc.PRIO_PROCESS, tid);
            if ((before != -1 || Libc.LastErrno == 0) && before > Nice && Libc.SetPriority(Libc.PRIO_PROCESS, tid, Nice) == 0)
            {
                _raised.Add((tid, before));
            }
        }
    }

    /// <summary>Raises <paramref name="tids"/> (0 and unknown ones are skipped) until disposed.</summary>
    public static Urgency Raise(IEnumerable<int> tids) => new(tids);

    public void Dispose()
    {
        foreach (var (tid, nice) in _raised)
        {
            Libc.SetPriority(Libc.PRIO_PROCESS, tid, nice); // a thread that has ended: ESRCH, nothing to undo
        }
        _raised.Clear();
    }
}
