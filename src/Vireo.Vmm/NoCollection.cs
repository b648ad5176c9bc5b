using System.Runtime;

namespace Vireo.Vmm;

/// <summary>
/// No garbage collection while a guest waits: a migration's pause, at both ends, is held as a GC
/// no-GC region (<see cref="GC.TryStartNoGCRegion(long)"/>), so that the allocations in it (the
/// state, its encoding) never start a collection there. A process's first collection cost 2 ms
/// of a pause here, three times the rest of it. Starting the region may collect, before the pause.
/// The region is the process's: a second one (both ends in one test process) is not held, and
/// allocating past the budget ends it early, which is only the ordinary case again.
/// </summary>
internal sealed class NoCollection : IDisposable
{
    private bool _held;

    private NoCollection(bool held) => _held = held;

    /// <summary>Starts a region of <paramref name="bytes"/> of allocation without a collection, if one can be had.</summary>
    public static NoCollection Begin(long bytes)
    {
        try
        {
            return new NoCollection(GC.TryStartNoGCRegion(bytes));
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentOutOfRangeException)
        {
            return new NoCollection(false); // one is held already, or the size is more than this GC gives
        }
    }

    public void Dispose()
    {
        if (!_held)
        {
            return;
        }
        _held = false;
        if (GCSettings.LatencyMode == GCLatencyMode.NoGCRegion)
        {
            try
            {
                GC.EndNoGCRegion();
            }
            catch (InvalidOperationException)
            {
                // it ended already (the budget was spent)
            }
        }
    }
}
