namespace Vireo.VmmServer;

/// <summary>
/// The guest's console output: the last <see cref="Capacity"/> bytes kept for whoever attaches
/// late, and a live feed for each attached reader. Written a byte at a time from a vCPU thread;
/// a slow reader only grows its own backlog (capped: the oldest bytes go first), never the guest's.
/// A reader waits on a task the writer completes outside the lock; its continuation goes to the
/// reader's context (the API's loop), never to the thread pool, which a vCPU's thread may not
/// grow (its seccomp list makes no thread), as SemaphoreSlim's WaitAsync would.
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
        TaskCompletionSource? woken = null;
        List<TaskCompletionSource>? more = null; // a second reader's and on: no allocation for the usual one
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
                    r.Wake(ref woken, ref more); // the reader takes the whole backlog per wake-up
                }
            }
        }
        Reader.Complete(woken, more);
    }

    /// <summary>No more output will come (the VM ended): readers drain and finish.</summary>
    public void Close()
    {
        TaskCompletionSource? woken = null;
        List<TaskCompletionSource>? more = null; // a second reader's and on: no allocation for the usual one
        lock (_lock)
        {
            _closed = true;
            foreach (var r in _readers)
            {
                r.Wake(ref woken, ref more);
            }
        }
        Reader.Complete(woken, more);
    }

    /// <summary>Completes once <paramref name="reader"/> has been woken since it last waited.</summary>
    private async Task WaitFor(Reader reader, CancellationToken ct)
    {
        TaskCompletionSource waiting;
        lock (_lock)
        {
            if (reader.Woken)
            {
                reader.Woken = false;
                return;
            }
            waiting = reader.Waiting = new TaskCompletionSource();
        }
        using var cancel = ct.Register(() =>
        {
            lock (_lock)
            {
                if (reader.Waiting == waiting)
                {
                    reader.Waiting = null;
                }
            }
            waiting.TrySetCanceled(ct);
        });
        await waiting.Task;
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
                    await WaitFor(reader, ct);
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

        /// <summary>Under the log's lock: a wake-up that came while the reader was not waiting.</summary>
        public bool Woken;

        /// <summary>Under the log's lock: what the reader waits on, if it waits.</summary>
        public TaskCompletionSource? Waiting;

        /// <summary>Under the log's lock: wakes the reader now (into <paramref name="woken"/>, completed after the lock) or at its next wait.</summary>
        public void Wake(ref TaskCompletionSource? woken, ref List<TaskCompletionSource>? more)
        {
            if (Waiting is { } w)
            {
                Waiting = null;
                if (woken is null)
                {
                    woken = w;
                }
                else
                {
                    (more ??= []).Add(w);
                }
            }
            else
            {
                Woken = true;
            }
        }

        public static void Complete(TaskCompletionSource? woken, List<TaskCompletionSource>? more)
        {
            woken?.TrySetResult();
            foreach (var w in more ?? [])
            {
                w.TrySetResult();
            }
        }
    }
}
