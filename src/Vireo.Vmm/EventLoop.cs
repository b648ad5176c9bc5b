using Vireo.Interop;

namespace Vireo.Vmm;

/// <summary>
/// The VM's device thread: epoll over eventfds (ioeventfd doorbells, host input), running each
/// one's handler. Device work happens here, never on a vCPU thread.
/// It runs at a higher priority than the vCPU threads (nice -5, when the process may raise it):
/// a guest that polls its rings keeps its vCPU busy, and the device work it waits for must not
/// queue behind it. Measured: two polling VMs moving frames went from ~60 to ~100 MB/s.
/// </summary>
internal sealed class EventLoop : IDisposable, Devices.IFdWatcher
{
    private readonly FileDescriptor _epoll;
    private readonly EventFd _stop = new();
    private readonly EventFd _pause = new();
    private const ulong PauseTag = ulong.MaxValue - 1;
    private readonly ManualResetEventSlim _parked = new();
    private readonly ManualResetEventSlim _resume = new(true);
    private readonly Lock _pauseLock = new();
    private readonly List<(EventFd? Doorbell, Action Handler)> _handlers = [];
    private readonly Lock _dynamicLock = new();
    private readonly Dictionary<int, Action> _dynamic = [];   // fds watched while running, keyed by fd
    private const ulong DynamicTag = 1UL << 62;
    private readonly Action<Exception> _onError;
    private Thread? _thread;

    public EventLoop(Action<Exception> onError)
    {
        _onError = onError;
        _epoll = new FileDescriptor(Check.Io(Epoll.Create1(Epoll.EPOLL_CLOEXEC), "epoll_create1"));
        AddToEpoll(_stop, ulong.MaxValue);
        AddToEpoll(_pause, PauseTag);
    }

    /// <summary>
    /// Parks the loop thread between two handlers and returns once it is parked, so that no device
    /// work runs until <see cref="Resume"/> (a snapshot reads devices and memory meanwhile). Events
    /// that arrive are kept by their fds and served after. A loop not started is parked already.
    /// </summary>
    public void Pause()
    {
        lock (_pauseLock)
        {
            if (_thread is null || !_resume.IsSet)
            {
                return;
            }
            _parked.Reset();
            _resume.Reset();
            _pause.Signal();
            while (!_parked.Wait(100))
            {
                if (!_thread.IsAlive)
                {
                    return; // it ended (an error or Dispose): nothing runs on it
                }
            }
        }
    }

    public void Resume()
    {
        lock (_pauseLock)
        {
            _resume.Set();
        }
    }

    /// <summary>Runs <paramref name="handler"/> on the loop thread each time <paramref name="fd"/> is signalled. Before <see cref="Start"/> only.</summary>
    public void Add(EventFd fd, Action handler)
    {
        if (_thread is not null)
        {
            throw new InvalidOperationException("handlers are added before the event loop starts");
        }
        _handlers.Add((fd, handler));
        AddToEpoll(fd, (ulong)(_handlers.Count - 1));
    }

    /// <summary>
    /// Runs <paramref name="handler"/> when <paramref name="fd"/> (a socket, a TAP device) becomes
    /// readable, and writable while the returned switch is on (only a paused sender needs that:
    /// watching output all the time would wake the loop for every freed buffer slot).
    /// Edge-triggered: the handler reads until it would block, or until it cannot take more and
    /// will be called again by other means (a queue notification).
    /// </summary>
    public Action<bool> AddReady(int fd, Action handler)
    {
        if (_thread is not null)
        {
            throw new InvalidOperationException("handlers are added before the event loop starts");
        }
        _handlers.Add((null, handler));
        ulong tag = (ulong)(_handlers.Count - 1);
        Epoll.AddInput(_epoll.Fd, fd, tag, edgeTriggered: true);
        return writable => Epoll.ModifyInput(_epoll.Fd, fd, tag, writable);
    }

    private void AddToEpoll(EventFd fd, ulong data) => Epoll.AddInput(_epoll.Fd, fd.Fd, data);

    /// <summary>Watches <paramref name="fd"/> (edge-triggered, readable or writable) at any time, from any thread.</summary>
    public void Watch(int fd, Action onReady)
    {
        lock (_dynamicLock)
        {
            _dynamic[fd] = onReady;
        }
        Epoll.AddInput(_epoll.Fd, fd, DynamicTag | (uint)fd, edgeTriggered: true, writable: true);
    }

    /// <summary>Stops watching <paramref name="fd"/>; call before closing it.</summary>
    public void Unwatch(int fd)
    {
        Epoll.Remove(_epoll.Fd, fd);
        lock (_dynamicLock)
        {
            _dynamic.Remove(fd);
        }
    }

    public void Start()
    {
        _thread = new Thread(Loop) { Name = "vireo-io", IsBackground = true };
        VmmThreads.Start(_thread);
    }

    /// <summary>
    /// Makes the loop's thread now, parked before it handles anything, until <see cref="Resume"/>:
    /// a migration's destination has its threads ready before the commit, and handles nothing before it.
    /// </summary>
    public void StartParked()
    {
        lock (_pauseLock)
        {
            _resume.Reset();
            _parked.Reset();
        }
        Start();
        _parked.Wait();
    }

    /// <summary>The loop thread's nice value (0 when the process may not raise priority).</summary>
    public const int Nice = -5;

    private void Loop()
    {
        // Best effort: without CAP_SYS_NICE the thread keeps the default priority.
        Libc.SetPriority(Libc.PRIO_PROCESS, Libc.GetTid(), Nice);
        if (VmmThreads.Started("io") is { } refused)
        {
            _onError(new InvalidOperationException($"the event loop cannot start: {refused}"));
            return;
        }
        Span<epoll_event> events = stackalloc epoll_event[16];
        if (!_resume.IsSet)
        {
            _parked.Set(); // StartParked: nothing is handled before Resume
            _resume.Wait();
        }
        while (true)
        {
            int n = Epoll.Wait(_epoll.Fd, events, -1);
            if (n < 0)
            {
                if (Libc.LastErrno == Libc.EINTR)
                {
                    continue;
                }
                _onError(new SysError("epoll_wait", Libc.LastErrno));
                return;
            }
            for (int i = 0; i < n; i++)
            {
                ulong data = events[i].data;
                if (data == ulong.MaxValue)
                {
                    return;
                }
                if (data == PauseTag)
                {
                    _pause.Consume();
                    _parked.Set();
                    _resume.Wait();
                    continue;
                }
                Action? handler;
                if ((data & DynamicTag) != 0)
                {
                    lock (_dynamicLock)
                    {
                        _dynamic.TryGetValue((int)(uint)data, out handler);
                    }
                    if (handler is null)
                    {
                        continue; // unwatched since the event was queued
                    }
                }
                else
                {
                    (var doorbell, handler) = _handlers[(int)data];
                    doorbell?.Consume();
                }
                try
                {
                    handler();
                }
                catch (Exception e)
                {
                    _onError(e);
                    return;
                }
            }
        }
    }

    public void Dispose()
    {
        if (_thread is not null)
        {
            _stop.Signal();
            _resume.Set();
            _thread.Join();
        }
        _pause.Dispose();
        foreach (var (doorbell, _) in _handlers)
        {
            doorbell?.Dispose();
        }
        _stop.Dispose();
        _epoll.Dispose();
    }
}
