using System.Text;

namespace Vireo.VmmServer.Http;

/// <summary>
/// One request and its one response, as a handler sees them: the head, the route's values, the
/// body to read, and either a whole response (<see cref="Respond"/>) or a streamed one
/// (<see cref="StartStream"/>, chunked, for GET /console).
/// </summary>
public sealed class HttpExchange
{
    private readonly HttpConnection _connection;
    private readonly RequestBody _body;

    internal HttpExchange(HttpConnection connection, RequestHead head, string[] routeValues, CancellationToken aborted)
    {
        _connection = connection;
        Head = head;
        RouteValues = routeValues;
        Aborted = aborted;
        _body = new RequestBody(connection, head, aborted);
    }

    public RequestHead Head { get; }

    /// <summary>The values of the route's {name} segments, in order.</summary>
    public string[] RouteValues { get; }

    /// <summary>The request's body, decoded from its framing.</summary>
    public Stream Body => _body;

    /// <summary>Fires when the server stops, or (while a response streams) when the client hangs up.</summary>
    public CancellationToken Aborted { get; private set; }

    /// <summary>Whether a response has been started.</summary>
    public bool Responded { get; private set; }

    /// <summary>
    /// Whether the connection can take another request after this one: the client did not ask to
    /// close, the response did not stream, and the body was read to its end (a body refused unread
    /// leaves the connection's bytes out of step, so the connection closes).
    /// </summary>
    internal bool KeepAlive => !Head.Close && !Streamed && _body.Finished;

    /// <summary>Whether the response was streamed (<see cref="StartStream"/>).</summary>
    internal bool Streamed { get; private set; }

    public Task Respond(int status, byte[]? body = null, string contentType = "application/json", string? allow = null)
    {
        Responded = true;
        var head = new StringBuilder();
        head.Append("HTTP/1.1 ").Append(status).Append(' ').Append(Reason(status)).Append("\r\n");
        if (body is not null)
        {
            head.Append("Content-Type: ").Append(contentType).Append("\r\n");
        }
        if (status != 204)
        {
            head.Append("Content-Length: ").Append(body?.Length ?? 0).Append("\r\n");
        }
        if (allow is not null)
        {
            head.Append("Allow: ").Append(allow).Append("\r\n");
        }
        if (!KeepAlive)
        {
            head.Append("Connection: close\r\n");
        }
        head.Append("\r\n");
        byte[] headBytes = Encoding.ASCII.GetBytes(head.ToString());
        byte[] whole = new byte[headBytes.Length + (body?.Length ?? 0)];
        headBytes.CopyTo(whole, 0);
        body?.CopyTo(whole, headBytes.Length);
        return _connection.Write(whole, CancellationToken.None);
    }

    /// <summary>
    /// Starts a 200 whose body streams in chunks until the returned stream is disposed; the
    /// connection closes after it. <see cref="Aborted"/> now also fires if the client hangs up.
    /// </summary>
    public async Task<Stream> StartStream(string contentType)
    {
        Responded = true;
        Streamed = true;
        await _connection.Write(Encoding.ASCII.GetBytes($"HTTP/1.1 200 OK\r\nContent-Type: {contentType}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"), CancellationToken.None);
        // Nothing more is read from a client whose response streams, except to see it hang up.
        var hangUp = CancellationTokenSource.CreateLinkedTokenSource(Aborted);
        Aborted = hangUp.Token;
        _ = WatchForHangUp(hangUp);
        return new ChunkedStream(_connection);
    }

    private async Task WatchForHangUp(CancellationTokenSource hangUp)
    {
        var sink = new byte[256];
        try
        {
            while (await _connection.Read(sink, hangUp.Token) > 0)
            {
            }
            // The end of what the client sends: it may only have shut its side (nc -N, socat) and
            // still read. Gone for good is a hang-up on the socket.
            await _connection.HungUp(hangUp.Token);
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or ObjectDisposedException)
        {
        }
        hangUp.Cancel();
    }

    internal static string Reason(int status) => status switch
    {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "Status",
    };

    /// <summary>A response body in HTTP/1.1 chunks; disposing it writes the last chunk.</summary>
    private sealed class ChunkedStream(HttpConnection connection) : Stream
    {
        private bool _ended;

        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken ct = default)
        {
            if (buffer.IsEmpty)
            {
                return;
            }
            byte[] size = Encoding.ASCII.GetBytes($"{buffer.Length:x}\r\n");
            byte[] chunk = new byte[size.Length + buffer.Length + 2];
            size.CopyTo(chunk, 0);
            buffer.CopyTo(chunk.AsMemory(size.Length));
            chunk[^2] = (byte)'\r';
            chunk[^1] = (byte)'\n';
            await connection.Write(chunk, ct);
        }

        public override async ValueTask DisposeAsync()
        {
            if (!_ended)
            {
                _ended = true;
                try
                {
                    await connection.Write("0\r\n\r\n"u8.ToArray(), CancellationToken.None);
                }
                catch (Exception e) when (e is IOException or ObjectDisposedException)
                {
                    // the client has gone
                }
            }
        }

        public override Task FlushAsync(CancellationToken ct) => Task.CompletedTask;
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException("the API's loop never blocks: WriteAsync");
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
