using Vireo.Interop;

namespace Vireo.VmmServer.Http;

/// <summary>
/// The one thread the API's HTTP server runs on: an epoll loop over its sockets, its own timers,
/// and a <see cref="SynchronizationContext"/>, so that the server's async code (each connection's
/// task) resumes here and nowhere else. The thread makes no thread, opens no file and uses no
/// timer of .NET's: that is what lets its seccomp list (api.policy) hold little more than the
/// runtime's own calls and read, write, accept4 and epoll. Work on the VM goes to the VMM's main
/// thread (<c>Program.Control</c>); its answer comes back here through <see cref="Post"/>.
/// </summary>
internal sealed class ApiLoop : SynchronizationContext, IDisposable
{
    private const ulong WakeKey = ulong.MaxValue;
    private readonly FileDescriptor _epoll;
    private readonly EventFd _wake = new(nonBlocking: true);
    private readonly Lock _lock = new();
    private Queue<(SendOrPostCallback Callback, object? State)> _posted = new();
    private Queue<(SendOrPostCallback Callback, object? State)> _running = new();
    private readonly Dictionary<int, Watched> _watches = [];
    private readonly PriorityQueue<LoopTimer, long> _timers = new();
    private bool _quit;
    private int _woken; // 1 while a wake-up is written and not yet read: other threads write the eventfd once per batch

    public ApiLoop()
    {
        _epoll = new FileDescriptor(Check.Io(Epoll.Create1(Epoll.EPOLL_CLOEXEC), "epoll_create1"));
        Epoll.Add(_epoll.Fd, _wake.Fd, Epoll.EPOLLIN, WakeKey);
    }

    /// <summary>Runs <paramref name="callback"/> on the loop's thread, from any thread (an await's continuation, a stop).</summary>
    public override void Post(SendOrPostCallback callback, object? state)
    {
        lock (_lock)
        {
            _posted.Enqueue((callback, state));
        }
        if (Interlocked.Exchange(ref _woken, 1) == 0)
        {
            _wake.Signal();
        }
    }

    public override void Send(SendOrPostCallback callback, object? state) =>
        throw new NotSupportedException("the API's loop takes no synchronous calls from other threads");

    public override SynchronizationContext CreateCopy() => this;

    /// <summary>Ends <see cref="Run"/> once the callbacks posted so far have run. Loop thread only.</summary>
    public void Quit() => _quit = true;

    /// <summary>Runs the loop on the calling thread until <see cref="Quit"/>, starting with <paramref name="first"/>.</summary>
    public unsafe void Run(Action first)
    {
        SetSynchronizationContext(this);
        first();
        Span<epoll_event> events = stackalloc epoll_event[64];
        while (true)
        {
            RunPosted();
            if (_quit)
            {
                return;
            }
            int n = Epoll.Wait(_epoll.Fd, events, FireTimers());
            if (n < 0 && Libc.LastErrno != Libc.EINTR)
            {
                throw new SysError("epoll_wait", Libc.LastErrno);
            }
            for (int i = 0; i < n; i++)
            {
                if (events[i].data == WakeKey)
                {
                    Volatile.Write(ref _woken, 0);
                    _wake.Consume(); // then the queue is read: a post after this writes again
                }
                else if (_watches.TryGetValue((int)events[i].data, out var watch))
                {
                    watch.Happened(events[i].events);
                }
            }
        }
    }

    private void RunPosted()
    {
        while (true)
        {
            lock (_lock)
            {
                (_posted, _running) = (_running, _posted);
            }
            if (_running.Count == 0)
            {
                return;
            }
            while (_running.TryDequeue(out var item))
            {
                item.Callback(item.State);
            }
        }
    }

    /// <summary>Fires the timers that are due; the milliseconds until the next one, or -1 for none.</summary>
    private int FireTimers()
    {
        while (_timers.TryPeek(out var timer, out long due))
        {
            if (timer.Cancelled)
            {
                _timers.Dequeue();
                continue;
            }
            long wait = due - Environment.TickCount64;
            if (wait > 0)
            {
                return (int)Math.Min(wait, int.MaxValue);
            }
            _timers.Dequeue();
            timer.Fire();
            RunPosted();
        }
        return -1;
    }

    /// <summary>Runs <paramref name="action"/> on this loop after <paramref name="delay"/>, unless the returned timer is disposed first. Loop thread only.</summary>
    public IDisposable After(TimeSpan delay, Action action)
    {
        var timer = new LoopTimer(action);
        _timers.Enqueue(timer, Environment.TickCount64 + (long)Math.Ceiling(delay.TotalMilliseconds));
        return timer;
    }

    /// <summary>Task.Delay's part, on this loop's timers (.NET's timer thread would be a thread this one made).</summary>
    public Task Delay(TimeSpan delay, CancellationToken ct = default)
    {
        var done = new TaskCompletionSource();
        CancellationTokenRegistration registration = default;
        var timer = After(delay, () =>
        {
            registration.Dispose();
            done.TrySetResult();
        });
        if (ct.CanBeCanceled)
        {
            registration = ct.Register(() =>
            {
                timer.Dispose();
                done.TrySetCanceled(ct);
            });
        }
        return done.Task;
    }

    /// <summary>Watches a non-blocking socket (edge-triggered) until <see cref="Forget"/>. Loop thread only.</summary>
    public void Watch(int fd)
    {
        _watches[fd] = new Watched();
        Epoll.Add(_epoll.Fd, fd, Epoll.EPOLLIN | Epoll.EPOLLOUT | Epoll.EPOLLRDHUP | Epoll.EPOLLET, (ulong)fd);
    }

    /// <summary>Stops watching <paramref name="fd"/> before it is closed; whatever waits on it fails.</summary>
    public void Forget(int fd)
    {
        if (_watches.Remove(fd, out var watch))
        {
            Epoll.Remove(_epoll.Fd, fd);
            watch.Cancel();
        }
    }

    /// <summary>Completes once <paramref name="fd"/> may be read (or has an error or an end) since the last read found it empty.</summary>
    public Task Readable(int fd, CancellationToken ct) => Wait(fd, ct, w => w.Readable);

    /// <summary>Completes once <paramref name="fd"/> may be written (or has an error) since the last write found it full.</summary>
    public Task Writable(int fd, CancellationToken ct) => Wait(fd, ct, w => w.Writable);

    /// <summary>Completes once the peer has gone both ways (EPOLLHUP) or the socket has failed.</summary>
    public Task HungUp(int fd, CancellationToken ct) => Wait(fd, ct, w => w.Hup);

    private Task Wait(int fd, CancellationToken ct, Func<Watched, Waiter> select)
    {
        if (!_watches.TryGetValue(fd, out var watch))
        {
            return Task.FromException(Watched.Gone());
        }
        return select(watch).Wait(ct);
    }

    public void Dispose()
    {
        _epoll.Dispose();
        _wake.Dispose();
    }

    /// <summary>One readiness of one socket, awaited by one task at a time.</summary>
    private sealed class Waiter(bool sticky)
    {
        private TaskCompletionSource? _waiting;
        private CancellationTokenRegistration _registration;
        private bool _pending; // an edge that came while no one waited (or, sticky, one that stays)

        public Task Wait(CancellationToken ct)
        {
            if (_pending)
            {
                _pending = sticky; // look again now: a read or write that finds nothing waits again
                return Task.CompletedTask;
            }
            if (_waiting is not null)
            {
                return Task.FromException(new InvalidOperationException("two waits on one socket's readiness"));
            }
            var tcs = _waiting = new TaskCompletionSource();
            if (ct.CanBeCanceled)
            {
                _registration = ct.Register(() =>
                {
                    if (_waiting == tcs)
                    {
                        _waiting = null;
                    }
                    tcs.TrySetCanceled(ct);
                });
            }
            return tcs.Task;
        }

        public void Set() => Complete(null);

        public void Fail(Exception e) => Complete(e);

        private void Complete(Exception? e)
        {
            var waiting = _waiting;
            _pending = waiting is null || sticky;
            if (waiting is null)
            {
                return;
            }
            _waiting = null;
            _registration.Dispose();
            _registration = default;
            if (e is null)
            {
                waiting.TrySetResult();
            }
            else
            {
                waiting.TrySetException(e);
            }
        }
    }

    private sealed class Watched
    {
        public Waiter Readable { get; } = new(sticky: false);
        public Waiter Writable { get; } = new(sticky: false);
        public Waiter Hup { get; } = new(sticky: true);

        public static ObjectDisposedException Gone() => new("the API's connection", "the connection is closed");

        public void Happened(uint events)
        {
            bool failed = (events & (Epoll.EPOLLERR | Epoll.EPOLLHUP)) != 0;
            if (failed || (events & (Epoll.EPOLLIN | Epoll.EPOLLRDHUP)) != 0)
            {
                Readable.Set();
            }
            if (failed || (events & Epoll.EPOLLOUT) != 0)
            {
                Writable.Set();
            }
            if (failed)
            {
                Hup.Set();
            }
        }

        public void Cancel()
        {
            Readable.Fail(Gone());
            Writable.Fail(Gone());
            Hup.Fail(Gone());
        }
    }

    private sealed class LoopTimer(Action action) : IDisposable
    {
        public bool Cancelled { get; private set; }

        public void Fire()
        {
            Cancelled = true;
            action();
        }

        public void Dispose() => Cancelled = true;
    }
}
