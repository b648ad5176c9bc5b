using Vireo.Virtio.Queue;

namespace Vireo.Virtio.Console;

/// <summary>
/// virtio-console (§5.3) with one port, hvc0 in Linux: queue 0 carries host input to the guest,
/// queue 1 guest output to the host. Input waits in a bounded buffer until the guest posts
/// receive buffers.
/// </summary>
public sealed class VirtioConsole(Action<ReadOnlySpan<byte>> output) : VirtioDevice
{
    public const int InputCapacity = 64 * 1024;
    private const int ReceiveQueue = 0, TransmitQueue = 1;

    private readonly Lock _inputLock = new();
    private readonly Queue<byte> _input = new();
    private readonly byte[] _scratch = new byte[4096];

    public override uint DeviceType => VirtioConstants.DeviceConsole;
    protected override ulong DeviceFeatures => 0;
    public override int QueueCount => 2;

    /// <summary>cols, rows, max_nr_ports, emerg_wr: an 80x25 console with one port.</summary>
    public override void ReadConfig(ulong offset, Span<byte> data)
    {
        Span<byte> config = [80, 0, 25, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        ReadFrom(config, offset, data);
    }

    /// <summary>Queues host input for the guest; returns how many bytes fit.</summary>
    public int Enqueue(ReadOnlySpan<byte> input)
    {
        int n;
        lock (_inputLock)
        {
            n = Math.Min(input.Length, InputCapacity - _input.Count);
            foreach (byte b in input[..n])
            {
                _input.Enqueue(b);
            }
        }
        WithQueue(ReceiveQueue, Deliver);
        return n;
    }

    protected override byte[]? SavePendingInput()
    {
        lock (_inputLock)
        {
            return _input.Count == 0 ? null : [.. _input];
        }
    }

    protected override string? PendingInputProblem(byte[]? pending) =>
        pending is { Length: > InputCapacity } ? $"it holds {pending.Length} bytes of input; the console takes at most {InputCapacity}" : null;

    protected override void RestorePendingInput(byte[]? pending)
    {
        lock (_inputLock)
        {
            _input.Clear();
            foreach (byte b in pending ?? [])
            {
                _input.Enqueue(b);
            }
        }
    }

    protected override void ProcessQueue(int index, SplitQueue queue)
    {
        if (index == ReceiveQueue)
        {
            Deliver(queue);
            return;
        }
        QueueError error;
        while (queue.TryPop(out var chain, out error))
        {
            ulong skip = 0;
            int n;
            while ((n = ChainIo.Read(Memory!, chain.Buffers, skip, _scratch)) > 0)
            {
                output(_scratch.AsSpan(0, n));
                skip += (ulong)n;
            }
            queue.AddUsed(chain.Head, 0);
        }
        if (error != QueueError.None)
        {
            Fail(error.ToString());
        }
    }

    private void Deliver(SplitQueue queue)
    {
        while (true)
        {
            lock (_inputLock)
            {
                if (_input.Count == 0)
                {
                    return;
                }
            }
            if (!queue.TryPop(out var chain, out var error))
            {
                if (error != QueueError.None)
                {
                    Fail(error.ToString());
                }
                return; // no receive buffer posted yet: the input waits
            }
            int n;
            lock (_inputLock)
            {
                n = (int)Math.Min((ulong)_input.Count, Math.Min(chain.WritableLength, (ulong)_scratch.Length));
                for (int i = 0; i < n; i++)
                {
                    _scratch[i] = _input.Dequeue();
                }
            }
            ChainIo.Write(Memory!, chain.Buffers, 0, _scratch.AsSpan(0, n));
            queue.AddUsed(chain.Head, (uint)n);
        }
    }
}
