using Vireo.Kvm;
using Vireo.Memory;

namespace Vireo.Vmm;

/// <summary>
/// The pages of guest RAM written since the last time they were taken: KVM's dirty log (what the
/// vCPUs wrote) ORed with the memory's own bitmaps (what the devices wrote). A diff snapshot
/// writes them; each pre-copy round of a migration sends them.
///
/// Taking is two steps, as Firecracker learnt (its PR 4383): <see cref="Collect"/> moves the
/// marks into a pending set, which stays until <see cref="Commit"/> says its pages reached their
/// destination. A write that fails leaves them pending for the next try, so none is lost.
/// </summary>
public sealed class DirtyTracker : IDisposable
{
    private readonly KvmVm _vm;
    private readonly GuestMemory _memory;
    private readonly ulong[][] _pending;
    private readonly bool _kvmWasLogging;

    /// <summary>Starts tracking now: from here on every write to RAM is recorded.</summary>
    internal DirtyTracker(KvmVm vm, GuestMemory memory)
    {
        _vm = vm;
        _memory = memory;
        _kvmWasLogging = vm.LogsDirty;
        _pending = new ulong[memory.Regions.Count][];
        for (int i = 0; i < _pending.Length; i++)
        {
            _pending[i] = new ulong[(memory.Regions[i].Size / 4096 + 63) / 64];
        }
        memory.TrackDirty = true;
        if (!_kvmWasLogging)
        {
            vm.SetDirtyLogging(true);
        }
        else
        {
            Collect(); // what an earlier tracker left in KVM's log is not ours
            Commit();
        }
    }

    /// <summary>
    /// Moves every page written since the last collect into the pending set and returns it: one
    /// bitmap a region (in <see cref="GuestMemory.Regions"/>' order), one bit a 4 KiB page.
    /// </summary>
    public IReadOnlyList<ulong[]> Collect()
    {
        for (int i = 0; i < _pending.Length; i++)
        {
            var kvm = new ulong[_pending[i].Length];
            _vm.GetRegionDirtyLog(i, kvm);
            var bits = _pending[i];
            for (int w = 0; w < bits.Length; w++)
            {
                bits[w] |= kvm[w];
            }
            _memory.Regions[i].Dirty?.TakeInto(bits);
        }
        return _pending;
    }

    /// <summary>The pending pages have reached their destination: forget them.</summary>
    public void Commit()
    {
        foreach (var bits in _pending)
        {
            Array.Clear(bits);
        }
    }

    /// <summary>Makes every page pending: after the pages were sent somewhere that is not the next snapshot's base (a cancelled migration).</summary>
    public void MarkAll()
    {
        for (int i = 0; i < _pending.Length; i++)
        {
            Array.Fill(_pending[i], ulong.MaxValue);
            ulong pages = _memory.Regions[i].Size / 4096;
            if (pages % 64 != 0)
            {
                _pending[i][^1] = (1UL << (int)(pages % 64)) - 1;
            }
        }
    }

    /// <summary>Pages pending now.</summary>
    public ulong PendingPages
    {
        get
        {
            ulong n = 0;
            foreach (var bits in _pending)
            {
                foreach (ulong w in bits)
                {
                    n += (ulong)System.Numerics.BitOperations.PopCount(w);
                }
            }
            return n;
        }
    }

    /// <summary>Stops tracking (KVM's log goes back to how this tracker found it).</summary>
    public void Dispose()
    {
        _memory.TrackDirty = false;
        if (!_kvmWasLogging && _vm.LogsDirty)
        {
            _vm.SetDirtyLogging(false);
        }
    }
}
