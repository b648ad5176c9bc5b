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
    private bool _activated;

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
            _activated = true;
            OnActivated();
            return true;
        }
    }

    /// <summary>The device's part of a snapshot. Taken once the device is quiet (no <see cref="HasWorkInFlight"/>, then <see cref="Settle"/>).</summary>
    public VirtioDeviceState SaveState()
    {
        lock (_lock)
        {
            var queues = new QueueState?[_activated ? QueueCount : 0];
            for (int i = 0; i < queues.Length && i < _queues.Length; i++)
            {
                queues[i] = _queues[i]?.State;
            }
            return new VirtioDeviceState(DeviceType, AckedFeatures, _activated, _failed ? FailureReason ?? "failed" : null, queues, SavePendingInput());
        }
    }

    /// <summary>
    /// Takes a saved state (untrusted: every queue is checked against guest memory as the driver's
    /// own configuration is) in place of an activation by the driver. False, with the reason and
    /// nothing changed, when the state does not fit this device.
    /// </summary>
    public bool TryRestore(GuestMemory memory, VirtioDeviceState state, Action<int> signalUsed, Action signalNeedsReset, out string? error)
    {
        error = Check(state, memory, out var queues);
        if (error is not null)
        {
            return false;
        }
        lock (_lock)
        {
            _generation++;
            Memory = memory;
            _signalUsed = signalUsed;
            _signalNeedsReset = signalNeedsReset;
            AckedFeatures = state.AckedFeatures;
            _queues = queues;
            _activated = state.Activated;
            _failed = state.FailureReason is not null;
            FailureReason = state.FailureReason;
            RestorePendingInput(state.PendingInput);
            if (_activated)
            {
                OnActivated();
                OnRestored();
            }
        }
        return true;
    }

    private string? Check(VirtioDeviceState state, GuestMemory memory, out SplitQueue?[] queues)
    {
        queues = [];
        if (state.DeviceType != DeviceType)
        {
            return $"it is a virtio device of type {state.DeviceType}, this one is of type {DeviceType}";
        }
        if ((state.AckedFeatures & ~OfferedFeatures) != 0)
        {
            return $"acked features 0x{state.AckedFeatures:x} include some this device does not offer (0x{OfferedFeatures:x})";
        }
        if (state.Queues is null || (state.Activated ? state.Queues.Length != QueueCount : state.Queues.Length != 0))
        {
            return $"it has {state.Queues?.Length ?? 0} queues; this device has {(state.Activated ? QueueCount : 0)} while {(state.Activated ? "running" : "stopped")}";
        }
        if (PendingInputProblem(state.PendingInput) is { } pending)
        {
            return pending;
        }
        queues = new SplitQueue?[state.Queues.Length];
        for (int i = 0; i < queues.Length; i++)
        {
            if (state.Queues[i] is not { } q)
            {
                continue;
            }
            if (q.Size > MaxQueueSize)
            {
                return $"queue {i}: size {q.Size} is larger than this device's {MaxQueueSize}";
            }
            if (q.EventIdx != ((state.AckedFeatures & VirtioConstants.Bit(VirtioConstants.FeatureEventIdx)) != 0)
                || q.Indirect != ((state.AckedFeatures & VirtioConstants.Bit(VirtioConstants.FeatureIndirectDesc)) != 0))
            {
                return $"queue {i}: its event-index and indirect settings do not match the acked features";
            }
            if (!SplitQueue.TryCreate(memory, q, out var queue, out var queueError))
            {
                return $"queue {i}: " + queueError switch
                {
                    QueueError.SizeNotPowerOfTwo => $"size {q.Size} is not a power of two",
                    QueueError.RingMisaligned => $"a ring is misaligned (descriptors at 0x{q.DescTable:x}, available ring at 0x{q.AvailRing:x}, used ring at 0x{q.UsedRing:x}: they need 16, 2 and 4 bytes)",
                    QueueError.RingOutsideMemory => $"its rings (descriptors at 0x{q.DescTable:x}, available ring at 0x{q.AvailRing:x}, used ring at 0x{q.UsedRing:x}) are not all inside guest RAM",
                    var other => other.ToString(),
                };
            }
            queues[i] = queue;
        }
        return null;
    }

    /// <summary>
    /// After a restore: serves whatever the guest made available (its notifications went to the
    /// old process) and interrupts once per queue (one it was owed may have been lost the same way;
    /// a spare one costs the driver a look at an empty ring).
    /// </summary>
    public void KickAll()
    {
        for (int i = 0; i < QueueCount; i++)
        {
            NotifyQueue(i);
            lock (_lock)
            {
                if (!_failed && i < _queues.Length && _queues[i] is not null)
                {
                    _signalUsed?.Invoke(i);
                }
            }
        }
    }

    /// <summary>
    /// True while requests the device took are still being served off its queue thread (a disk's
    /// I/O in the kernel). A snapshot waits, vCPUs paused and the event loop running, until none is.
    /// </summary>
    public virtual bool HasWorkInFlight => false;

    /// <summary>
    /// Brings the device to a state a snapshot can hold, once nothing else runs (vCPUs and event
    /// loop paused): a chain still in hand is handed back to the guest. The default holds none.
    /// </summary>
    public virtual void Settle()
    {
    }


    /// <summary>Bytes held for the guest, for the state (the console's input); null for none.</summary>
    protected virtual byte[]? SavePendingInput() => null;

    protected virtual string? PendingInputProblem(byte[]? pending) =>
        pending is { Length: > 0 } ? $"it holds {pending.Length} bytes of input, which this kind of device never has" : null;

    protected virtual void RestorePendingInput(byte[]? pending)
    {
    }

    /// <summary>The driver reset the device: forget queues and state.</summary>
    public void Reset()
    {
        lock (_lock)
        {
            _generation++;
            _queues = [];
            _failed = false;
            _activated = false;
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

    /// <summary>After <see cref="TryRestore"/> of a live device (under the device's lock): what the old process held that this one cannot (a vsock's host connections).</summary>
    protected virtual void OnRestored()
    {
    }

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
        Failures++;
        // A guest that resets and fails its device in a loop must not fill the host's logs: the
        // first failures are logged, then one line a minute says how many more there were.
        if (Failures <= LoggedFailures)
        {
            Log?.Invoke($"virtio device {DeviceType}: {reason}; device needs reset" +
                (Failures == LoggedFailures ? $" (failure {LoggedFailures}: further ones are counted, and logged once a minute)" : ""));
        }
        else
        {
            _unlogged++;
            long now = Environment.TickCount64;
            if (now - _lastSummary >= 60_000)
            {
                Log?.Invoke($"virtio device {DeviceType}: {_unlogged} more failure(s) since, the last: {reason}; device needs reset");
                _unlogged = 0;
                _lastSummary = now;
            }
        }
        _signalNeedsReset?.Invoke();
    }

    /// <summary>How many failures are logged one by one before they are only counted.</summary>
    public const int LoggedFailures = 16;

    /// <summary>Every time the device went to NEEDS_RESET, resets notwithstanding.</summary>
    public long Failures { get; private set; }

    private long _unlogged, _lastSummary = Environment.TickCount64;
}
