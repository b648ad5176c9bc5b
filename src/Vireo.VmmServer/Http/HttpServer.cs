using System.Net.Sockets;

namespace Vireo.VmmServer.Http;

/// <summary>
/// The small HTTP/1.1 server vireo-vmm's API runs on, over a Unix socket, in the manner of
/// Firecracker's and Cloud Hypervisor's micro_http: routes by method and path, one task per
/// connection, nothing else. It replaced ASP.NET Core's Kestrel in this process (DESIGN.md says
/// why: the start-up and the resident bytes of every VMM).
/// </summary>
public sealed class HttpServer
{
    private readonly List<(string Method, string[] Template, Func<HttpExchange, Task> Handler)> _routes = [];
    private readonly Func<string, byte[]> _errorBody;
    private readonly CancellationTokenSource _stopping = new();
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Socket? _listener;
    private int _inFlight;
    private int _connections;

    /// <summary>The most connections served at once (console readers among them); one more is closed as soon as it is accepted.</summary>
    public int MaxConnections { get; init; } = 128;

    /// <summary>How long a connection may wait between requests (Kestrel's keep-alive timeout is 130 s).</summary>
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromSeconds(120);

    /// <summary>How long a request's line and headers may take once their first byte came (Kestrel's is 30 s); then a 408.</summary>
    public TimeSpan HeadTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <param name="errorBody">The body of a response the server makes itself (a malformed request, no such route), from its words.</param>
    public HttpServer(Func<string, byte[]> errorBody) => _errorBody = errorBody;

    /// <summary>Routes METHOD and a path template ("/drives/{id}") to a handler.</summary>
    public void Map(string method, string template, Func<HttpExchange, Task> handler) =>
        _routes.Add((method, template.Split('/', StringSplitOptions.RemoveEmptyEntries), handler));

    /// <summary>Binds and listens on <paramref name="path"/> (SocketException if it cannot), then accepts until <see cref="Stop"/>.</summary>
    public void Start(string path)
    {
        if (_stopping.IsCancellationRequested)
        {
            return; // stopped before it started (the VM ended first): nothing to serve
        }
        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            listener.Bind(new UnixDomainSocketEndPoint(path));
            listener.Listen(64);
        }
        catch
        {
            listener.Dispose();
            throw;
        }
        _listener = listener;
        _ = Accept(listener);
    }

    /// <summary>Completes once <see cref="Stop"/> has been called and the requests in flight have been answered (2 s at most).</summary>
    public Task Stopped => _stopped.Task;

    /// <summary>Stops accepting; requests in flight get up to 2 s to be answered. Safe to call more than once, from any thread.</summary>
    public void Stop()
    {
        if (_stopping.IsCancellationRequested)
        {
            return;
        }
        _stopping.Cancel();
        _listener?.Dispose();
        _ = Task.Run(async () =>
        {
            var deadline = DateTime.UtcNow.AddSeconds(2);
            while (Volatile.Read(ref _inFlight) > 0 && DateTime.UtcNow < deadline)
            {
                await Task.Delay(10);
            }
            _stopped.TrySetResult();
        });
    }

    private async Task Accept(Socket listener)
    {
        while (!_stopping.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await listener.AcceptAsync(_stopping.Token);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException or OperationCanceledException)
            {
                if (_stopping.IsCancellationRequested)
                {
                    return;
                }
                // A client that went before it was accepted (ECONNABORTED), or no descriptor left
                // (EMFILE, which fails at once and again): the next one, after a breath.
                await Task.Delay(10);
                continue;
            }
            if (Interlocked.Increment(ref _connections) > MaxConnections)
            {
                Interlocked.Decrement(ref _connections);
                client.Dispose(); // over the cap: the client reads the end of the stream at once
                continue;
            }
            _ = Serve(client);
        }
    }

    private async Task Serve(Socket client)
    {
        using var connection = new HttpConnection(client);
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
                        catch (Exception e) when (e is not (IOException or SocketException or ObjectDisposedException or OperationCanceledException) && !exchange.Responded)
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
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or OperationCanceledException)
        {
            // The client went away, or the server is stopping: nothing to answer.
        }
        finally
        {
            if (graceful)
            {
                await connection.CloseGracefully();
            }
            Interlocked.Decrement(ref _connections);
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
