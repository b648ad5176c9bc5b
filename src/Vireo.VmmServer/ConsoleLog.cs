namespace Vireo.VmmServer;

/// <summary>
/// The guest's console output: the last <see cref="Capacity"/> bytes kept for whoever attaches
/// late, and a live feed for each attached reader. Written a byte at a time from a vCPU thread;
/// a slow reader only grows its own backlog (capped: the oldest bytes go first), never the guest's.
/// </summary>
internal sealed class ConsoleLog
{
    public const int Capacity = 64 * 1024;
    private const int MaxBacklog = 1 << 20;
    private readonly Lock _lock = new();
    private readonly byte[] _ring = new byte[Capacity];
    private long _written;
    private readonly List<Reader> _readers = [];
    private bool _closed;

    public void Write(byte b)
    {
        lock (_lock)
        {
            _ring[_written++ % Capacity] = b;
            foreach (var r in _readers)
            {
                bool wasEmpty = r.Backlog.Count == 0;
                if (r.Backlog.Count < MaxBacklog)
                {
                    r.Backlog.Enqueue(b);
                }
                if (wasEmpty)
                {
                    r.Signal.Release(); // the reader takes the whole backlog per wake-up
                }
            }
        }
    }

    /// <summary>No more output will come (the VM ended): readers drain and finish.</summary>
    public void Close()
    {
        lock (_lock)
        {
            _closed = true;
            foreach (var r in _readers)
            {
                r.Signal.Release();
            }
        }
    }

    /// <summary>What is kept so far, then everything written until the VM ends or <paramref name="ct"/> fires.</summary>
    public async IAsyncEnumerable<byte[]> Follow([System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
    {
        var reader = new Reader();
        byte[] history;
        lock (_lock)
        {
            int kept = (int)Math.Min(_written, Capacity);
            history = new byte[kept];
            for (int i = 0; i < kept; i++)
            {
                history[i] = _ring[(_written - kept + i) % Capacity];
            }
            _readers.Add(reader);
        }
        try
        {
            if (history.Length > 0)
            {
                yield return history;
            }
            while (true)
            {
                try
                {
                    await reader.Signal.WaitAsync(ct);
                }
                catch (OperationCanceledException)
                {
                    yield break;
                }
                byte[] chunk;
                bool closed;
                lock (_lock)
                {
                    chunk = [.. reader.Backlog];
                    reader.Backlog.Clear();
                    closed = _closed;
                }
                if (chunk.Length > 0)
                {
                    yield return chunk;
                }
                if (closed)
                {
                    yield break;
                }
            }
        }
        finally
        {
            lock (_lock)
            {
                _readers.Remove(reader);
            }
        }
    }

    private sealed class Reader
    {
        public Queue<byte> Backlog { get; } = new();
        public SemaphoreSlim Signal { get; } = new(0);
    }
}
