using Vireo.Interop;

namespace Vireo.VmmServer.Http;

/// <summary>
/// The small HTTP/1.1 server vireo-vmm's API runs on, over a Unix socket, in the manner of
/// Firecracker's and Cloud Hypervisor's micro_http: routes by method and path, one task per
/// connection, all on one thread of its own (<see cref="ApiLoop"/>: handlers run there and must
/// not block), nothing else. It replaced ASP.NET Core's Kestrel in this process (DESIGN.md says
/// why: the start-up and the resident bytes of every VMM, and a seccomp list as short as Firecracker's).
/// </summary>
public sealed class HttpServer
{
    private readonly List<(string Method, string[] Template, Func<HttpExchange, Task> Handler)> _routes = [];
    private readonly Func<string, byte[]> _errorBody;
    private readonly CancellationTokenSource _stopping = new();
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly ApiLoop _loop = new();
    private readonly HashSet<HttpConnection> _open = [];
    private FileDescriptor? _listener;
    private int _inFlight;
    private int _stopRequested;
    private bool _started;

    /// <summary>The most connections served at once (console readers among them); one more is closed as soon as it is accepted.</summary>
    public int MaxConnections { get; init; } = 128;

    /// <summary>How long a connection may wait between requests (Kestrel's keep-alive timeout is 130 s).</summary>
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromSeconds(120);

    /// <summary>How long a request's line and headers may take once their first byte came (Kestrel's is 30 s); then a 408.</summary>
    public TimeSpan HeadTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Run on the server's thread first, before it reads a byte (vireo-vmm loads the api list's
    /// filter there): null, or why the server must not serve (it stops).
    /// </summary>
    public Func<string?>? OnThreadStart { get; init; }

    /// <summary>Starts the server's thread (vireo-vmm starts it from a thread with none of the VMM's lists on); Thread.Start if unset.</summary>
    public Action<Thread>? StartThread { get; init; }

    /// <summary>Run once, on the server's thread (or on the caller's, if it stops before it starts), when it has stopped.</summary>
    public Action? OnStopped { get; init; }

    /// <param name="errorBody">The body of a response the server makes itself (a malformed request, no such route), from its words.</param>
    public HttpServer(Func<string, byte[]> errorBody) => _errorBody = errorBody;

    /// <summary>The server's loop, for handlers that wait (<see cref="ApiLoop.Delay"/>) without a thread of .NET's.</summary>
    internal ApiLoop Loop => _loop;

    /// <summary>Routes METHOD and a path template ("/drives/{id}") to a handler.</summary>
    public void Map(string method, string template, Func<HttpExchange, Task> handler) =>
        _routes.Add((method, template.Split('/', StringSplitOptions.RemoveEmptyEntries), handler));

    /// <summary>Binds and listens on <paramref name="path"/> (SysError if it cannot), then serves on a thread of its own until <see cref="Stop"/>.</summary>
    public void Start(string path)
    {
        if (Volatile.Read(ref _stopRequested) != 0)
        {
            return; // stopped before it started (the VM ended first): nothing to serve
        }
        _listener = UnixSocket.ListenStream(path, 64);
        _started = true;
        var thread = new Thread(Run) { Name = "vireo-api", IsBackground = true };
        if (StartThread is { } start)
        {
            start(thread);
        }
        else
        {
            thread.Start();
        }
    }

    private void Run()
    {
        string? refused = OnThreadStart?.Invoke();
        _loop.Run(() =>
        {
            if (refused is not null)
            {
                Console.Error.WriteLine($"vireo-vmm: the API's thread: {refused}");
                StopHere();
            }
            else if (Volatile.Read(ref _stopRequested) != 0)
            {
                StopHere();
            }
            else
            {
                _ = Accept(_listener!.Fd);
            }
        });
        _loop.Dispose();
    }

    /// <summary>Completes once <see cref="Stop"/> has been called and the requests in flight have been answered (2 s at most).</summary>
    public Task Stopped => _stopped.Task;

    /// <summary>Stops accepting; requests in flight get up to 2 s to be answered. Safe to call more than once, from any thread.</summary>
    public void Stop()
    {
        if (Interlocked.Exchange(ref _stopRequested, 1) != 0)
        {
            return;
        }
        if (_started)
        {
            _loop.Post(_ => StopHere(), null);
        }
        else
        {
            _stopped.TrySetResult();
            OnStopped?.Invoke();
        }
    }

    /// <summary>The stop, on the loop: no more connections, 2 s for the requests in flight, then every connection closed.</summary>
    private async void StopHere()
    {
        if (_stopping.IsCancellationRequested)
        {
            return;
        }
        _stopping.Cancel();
        if (_listener is { } listener)
        {
            _loop.Forget(listener.Fd);
            listener.Dispose();
        }
        var deadline = Environment.TickCount64 + 2000;
        while ((Volatile.Read(ref _inFlight) > 0 || _open.Count > 0) && Environment.TickCount64 < deadline)
        {
            await _loop.Delay(TimeSpan.FromMilliseconds(10));
        }
        foreach (var connection in _open.ToList())
        {
            connection.Dispose();
        }
        _stopped.TrySetResult();
        OnStopped?.Invoke();
        _loop.Quit();
    }

    private async Task Accept(int listener)
    {
        _loop.Watch(listener);
        while (!_stopping.IsCancellationRequested)
        {
            int fd = UnixSocket.Accept(listener);
            if (fd < 0)
            {
                int errno = Libc.LastErrno;
                try
                {
                    // Nothing waiting (EAGAIN); or a client that went before it was accepted
                    // (ECONNABORTED), or no descriptor left (EMFILE, which fails at once and
                    // again): the next one, after a breath.
                    await (errno == Libc.EAGAIN ? _loop.Readable(listener, _stopping.Token) : _loop.Delay(TimeSpan.FromMilliseconds(10), _stopping.Token));
                }
                catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
                {
                    return;
                }
                continue;
            }
            if (_open.Count >= MaxConnections)
            {
                Libc.Close(fd); // over the cap: the client reads the end of the stream at once
                continue;
            }
            _ = Serve(new HttpConnection(_loop, fd));
        }
    }

    private async Task Serve(HttpConnection connection)
    {
        _open.Add(connection);
        bool graceful = false;
        try
        {
            while (!_stopping.IsCancellationRequested)
            {
                var next = await connection.ReadHead(IdleTimeout, HeadTimeout, _stopping.Token);
                if (next is not { } read)
                {
                    return; // the client closed the connection between requests
                }
                Interlocked.Increment(ref _inFlight);
                try
                {
                    if (read.Head is not { } head)
                    {
                        // Unparseable: answered, and the connection closed (its next bytes cannot be trusted to start a request).
                        var refused = new HttpExchange(connection, new RequestHead("GET", "/", false, null, false, false, Close: true), [], _stopping.Token);
                        await refused.Respond(read.Status, _errorBody(read.Error!));
                        graceful = true;
                        return;
                    }
                    var exchange = Route(connection, head, out var handler, out string? allow);
                    if (handler is not null)
                    {
                        try
                        {
                            await handler(exchange);
                        }
                        catch (Exception e) when (e is not (IOException or ObjectDisposedException or OperationCanceledException) && !exchange.Responded)
                        {
                            await exchange.Respond(500, _errorBody($"the request failed inside vireo-vmm: {e.Message.ReplaceLineEndings(" ")}"));
                            graceful = true;
                            return;
                        }
                    }
                    else if (allow is not null)
                    {
                        await exchange.Respond(405, _errorBody($"{head.Method} is not allowed on {PathOf(head)}; it takes {allow}"), allow: allow);
                    }
                    else
                    {
                        await exchange.Respond(404, _errorBody("no such resource"));
                    }
                    if (!exchange.Responded)
                    {
                        await exchange.Respond(500, _errorBody("the request was not answered"));
                    }
                    if (!exchange.KeepAlive)
                    {
                        graceful = !exchange.Streamed; // a streamed response ends when either side hangs up
                        return;
                    }
                }
                finally
                {
                    Interlocked.Decrement(ref _inFlight);
                }
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or OperationCanceledException)
        {
            // The client went away, or the server is stopping: nothing to answer.
        }
        finally
        {
            if (graceful && !_stopping.IsCancellationRequested)
            {
                await connection.CloseGracefully();
            }
            connection.Dispose();
            _open.Remove(connection);
        }
    }

    private HttpExchange Route(HttpConnection connection, RequestHead head, out Func<HttpExchange, Task>? handler, out string? allow)
    {
        string[] path = head.PathSegments();
        var methods = new List<string>();
        foreach (var (method, template, h) in _routes)
        {
            if (Match(template, path) is { } values)
            {
                if (method == head.Method)
                {
                    handler = h;
                    allow = null;
                    return new HttpExchange(connection, head, values, _stopping.Token);
                }
                methods.Add(method);
            }
        }
        handler = null;
        allow = methods.Count > 0 ? string.Join(", ", methods.Distinct()) : null;
        return new HttpExchange(connection, head, [], _stopping.Token);
    }

    private static string[]? Match(string[] template, string[] path)
    {
        if (template.Length != path.Length)
        {
            return null;
        }
        var values = new List<string>();
        for (int i = 0; i < template.Length; i++)
        {
            if (template[i].StartsWith('{'))
            {
                values.Add(path[i]);
            }
            else if (template[i] != path[i])
            {
                return null;
            }
        }
        return [.. values];
    }

    private static string PathOf(RequestHead head) => "/" + string.Join('/', head.PathSegments());
}
