using Vireo.Memory;
using Vireo.Virtio.Queue;

namespace Vireo.Virtio;

/// <summary>
/// What every virtio device shares, whatever its transport: offered and acked features, queues
/// built from the driver's configuration, interrupts, and NEEDS_RESET on any guest error.
/// A device's queues are processed under one lock, from the event loop (ioeventfd) or, if a
/// notification reaches the bus instead, from a vCPU thread.
/// </summary>
public abstract class VirtioDevice
{
    private readonly Lock _lock = new();
    private SplitQueue?[] _queues = [];
    private bool _failed;
    private Action<int>? _signalUsed;
    private Action? _signalNeedsReset;
    private int _generation;

    /// <summary>Changes at every activation and reset, so that work finishing late cannot touch a new queue.</summary>
    protected int Generation => Volatile.Read(ref _generation);

    protected GuestMemory? Memory { get; private set; }

    public abstract uint DeviceType { get; }

    /// <summary>Features offered to the driver; VERSION_1, INDIRECT_DESC and EVENT_IDX are added by the base.</summary>
    protected abstract ulong DeviceFeatures { get; }

    public ulong OfferedFeatures => DeviceFeatures | VirtioConstants.Bit(VirtioConstants.FeatureVersion1)
        | VirtioConstants.Bit(VirtioConstants.FeatureIndirectDesc) | VirtioConstants.Bit(VirtioConstants.FeatureEventIdx);

    public ulong AckedFeatures { get; private set; }

    public abstract int QueueCount { get; }

    public virtual ushort MaxQueueSize => 256;

    /// <summary>Set once the driver is running and the device has refused something it sent.</summary>
    public bool Failed => _failed;

    /// <summary>The first error that put the device in NEEDS_RESET, for logs and tests.</summary>
    public string? FailureReason { get; private set; }

    /// <summary>Where the device reports NEEDS_RESET (once each time); the VMM points it at its log.</summary>
    public Action<string>? Log { get; set; }

    public abstract void ReadConfig(ulong offset, Span<byte> data);

    /// <summary>Reads <paramref name="data"/> at <paramref name="offset"/> of a config space; bytes past its end read as zero.</summary>
    protected static void ReadFrom(ReadOnlySpan<byte> config, ulong offset, Span<byte> data)
    {
        data.Clear();
        if (offset < (ulong)config.Length)
        {
            var src = config[(int)offset..];
            src[..Math.Min(src.Length, data.Length)].CopyTo(data);
        }
    }

    public virtual void WriteConfig(ulong offset, ReadOnlySpan<byte> data)
    {
        // Most config spaces are read-only; writes are dropped.
    }

    protected bool Acked(int feature) => (AckedFeatures & VirtioConstants.Bit(feature)) != 0;

    /// <summary>Called by the transport when the driver sets DRIVER_OK. False (and NEEDS_RESET) when a queue is invalid.</summary>
    /// <param name="signalUsed">Interrupts the driver for queue N (transports map queues to vectors).</param>
    public bool Activate(GuestMemory memory, ulong ackedFeatures, ReadOnlySpan<QueueState> queues, Action<int> signalUsed, Action signalNeedsReset)
    {
        lock (_lock)
        {
            _generation++;
            Memory = memory;
            AckedFeatures = ackedFeatures;
            _signalUsed = signalUsed;
            _signalNeedsReset = signalNeedsReset;
            _queues = new SplitQueue?[queues.Length];
            for (int i = 0; i < queues.Length; i++)
            {
                if (!queues[i].Ready)
                {
                    continue;
                }
                var state = queues[i] with
                {
                    EventIdx = Acked(VirtioConstants.FeatureEventIdx),
                    Indirect = Acked(VirtioConstants.FeatureIndirectDesc),
                };
                if (!SplitQueue.TryCreate(memory, state, out var q, out var error))
                {
                    FailLocked($"queue {i}: {error}");
                    return false;
                }
                _queues[i] = q;
            }
            OnActivated();
            return true;
        }
    }

    /// <summary>The driver reset the device: forget queues and state.</summary>
    public void Reset()
    {
        lock (_lock)
        {
            _generation++;
            _queues = [];
            _failed = false;
            FailureReason = null;
            AckedFeatures = 0;
            OnReset();
        }
    }

    /// <summary>The driver made buffers available on queue <paramref name="index"/>.</summary>
    public void NotifyQueue(int index)
    {
        lock (_lock)
        {
            if (_failed || (uint)index >= (uint)_queues.Length || _queues[index] is not { } queue)
            {
                return;
            }
            ProcessQueue(index, queue);
            if (!_failed && queue.ShouldInterrupt())
            {
                _signalUsed?.Invoke(index);
            }
        }
    }

    /// <summary>Runs <paramref name="work"/> with the queues locked, for work that starts on the host side (input arriving).</summary>
    protected void WithQueue(int index, Action<SplitQueue> work)
    {
        lock (_lock)
        {
            if (_failed || (uint)index >= (uint)_queues.Length || _queues[index] is not { } queue)
            {
                return;
            }
            work(queue);
            if (!_failed && queue.ShouldInterrupt())
            {
                _signalUsed?.Invoke(index);
            }
        }
    }

    /// <summary>
    /// Completes a chain served off the queue's thread (an I/O worker). Dropped when the device
    /// was reset or re-activated since <paramref name="generation"/>.
    /// </summary>
    protected void Complete(int generation, int index, ushort head, uint written)
    {
        lock (_lock)
        {
            if (generation != _generation || _failed || _queues[index] is not { } queue)
            {
                return;
            }
            queue.AddUsed(head, written);
            if (queue.ShouldInterrupt())
            {
                _signalUsed?.Invoke(index);
            }
        }
    }

    /// <summary>NEEDS_RESET from off the queue's thread, unless the device was reset since <paramref name="generation"/>.</summary>
    protected void Fail(int generation, string reason)
    {
        lock (_lock)
        {
            if (generation == _generation)
            {
                FailLocked(reason);
            }
        }
    }

    /// <summary>Pops and serves chains until the queue is empty or the guest sent something invalid.</summary>
    protected abstract void ProcessQueue(int index, SplitQueue queue);

    protected virtual void OnActivated()
    {
    }

    protected virtual void OnReset()
    {
    }

    /// <summary>Puts the device in NEEDS_RESET; logged once. Called with the lock held.</summary>
    protected void Fail(string reason) => FailLocked(reason);

    private void FailLocked(string reason)
    {
        if (_failed)
        {
            return;
        }
        _failed = true;
        FailureReason = reason;
        Log?.Invoke($"virtio device {DeviceType}: {reason}; device needs reset");
        _signalNeedsReset?.Invoke();
    }
}
