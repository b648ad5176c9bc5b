using System.Text;
using Vireo.Interop;

namespace Vireo.VmmServer.Http;

/// <summary>
/// One client's connection: its requests one after another (keep-alive, pipelined ones too), each
/// head read into one bounded buffer, each body read through <see cref="RequestBody"/>, and the
/// responses written in order. A non-blocking socket, read and written on the API's loop
/// (<see cref="ApiLoop"/>), which it waits on when the socket has nothing to read or no room.
/// </summary>
internal sealed class HttpConnection : IDisposable
{
    private readonly ApiLoop _loop;
    private readonly int _fd;
    private readonly byte[] _buffer = new byte[RequestHead.MaxSize + 4];
    private int _start, _end; // the bytes read and not yet taken: _buffer[_start.._end]
    private bool _closed;

    /// <summary>Takes <paramref name="fd"/> (an accepted, non-blocking socket), which it closes when disposed.</summary>
    public HttpConnection(ApiLoop loop, int fd)
    {
        _loop = loop;
        _fd = fd;
        loop.Watch(fd);
    }

    /// <summary>
    /// The next request's head: null at a clean end of the connection (nothing sent since the last
    /// request, or nothing within <paramref name="idle"/>), else the head or the reason it cannot
    /// be one. Once its first byte has come, the rest of a head must come within <paramref name="head"/>.
    /// </summary>
    public async Task<(RequestHead? Head, int Status, string? Error)?> ReadHead(TimeSpan idle, TimeSpan head, CancellationToken ct)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var timer = _loop.After(idle, deadline.Cancel); // the loop's timers: CancelAfter would start .NET's timer thread from this one
        bool started = false;
        int scanned = 0; // how far past _start the blank line has been looked for (Fill moves the bytes, not this)
        try
        {
            while (true)
            {
                while (scanned == 0 && _end - _start >= 2 && _buffer[_start] == '\r' && _buffer[_start + 1] == '\n')
                {
                    _start += 2; // empty lines before a request line are ignored (RFC 9112 2.2)
                }
                if (!started && _end > _start)
                {
                    started = true;
                    timer.Dispose();
                    timer = _loop.After(head, deadline.Cancel);
                }
                int from = Math.Max(0, scanned - 3);
                int at = _buffer.AsSpan(_start + from, _end - _start - from).IndexOf("\r\n\r\n"u8);
                if (at >= 0)
                {
                    var bytes = _buffer.AsSpan(_start, from + at);
                    _start += from + at + 4;
                    return RequestHead.TryParse(bytes, out var parsed) is { } error ? (null, 400, error) : (parsed, 0, null);
                }
                scanned = _end - _start;
                if (scanned >= _buffer.Length)
                {
                    return (null, 431, $"the request's line and headers are larger than {RequestHead.MaxSize / 1024} KiB");
                }
                if (await Fill(deadline.Token) == 0)
                {
                    return scanned == 0 ? null : (null, 400, "the client closed the connection in the middle of a request's headers");
                }
            }
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            // Quiet too long: between requests the connection just ends; in the middle of a head it is refused.
            return started ? (null, 408, $"the request's headers did not all come within {head.TotalSeconds:0} s") : null;
        }
        finally
        {
            timer.Dispose();
        }
    }

    /// <summary>Up to <paramref name="into"/>'s length of the bytes after the head: what is buffered first, then the socket. 0 at the end of the connection.</summary>
    public async ValueTask<int> Read(Memory<byte> into, CancellationToken ct)
    {
        if (_end > _start)
        {
            int n = Math.Min(into.Length, _end - _start);
            _buffer.AsMemory(_start, n).CopyTo(into);
            _start += n;
            return n;
        }
        return await Receive(into, ct);
    }

    /// <summary>One CRLF-ended line (a chunk's size line, a trailer), without the CRLF; null if the connection ends first or the line is longer than <paramref name="max"/>.</summary>
    public async ValueTask<string?> ReadLine(int max, CancellationToken ct)
    {
        while (true)
        {
            int at = _buffer.AsSpan(_start, _end - _start).IndexOf("\r\n"u8);
            if (at >= 0)
            {
                string line = Encoding.Latin1.GetString(_buffer, _start, at);
                _start += at + 2;
                return line;
            }
            if (_end - _start > max || await Fill(ct) == 0)
            {
                return null;
            }
        }
    }

    /// <summary>Completes once the client has closed both ways (EPOLLHUP), or the socket has failed.</summary>
    public Task HungUp(CancellationToken ct) => _loop.HungUp(_fd, ct);

    /// <summary>Writes all of <paramref name="bytes"/>, waiting for room as often as it takes.</summary>
    public async Task Write(ReadOnlyMemory<byte> bytes, CancellationToken ct)
    {
        while (!bytes.IsEmpty)
        {
            ObjectDisposedException.ThrowIf(_closed, this);
            nint n = Libc.Write(_fd, bytes.Span);
            if (n >= 0)
            {
                bytes = bytes[(int)n..];
            }
            else if (Libc.LastErrno == Libc.EAGAIN)
            {
                await _loop.Writable(_fd, ct);
            }
            else if (Libc.LastErrno != Libc.EINTR)
            {
                throw Failed("write", Libc.LastErrno);
            }
        }
    }

    /// <summary>What the socket has, up to <paramref name="into"/>'s length, waiting until it has something; 0 at its end.</summary>
    private async ValueTask<int> Receive(Memory<byte> into, CancellationToken ct)
    {
        while (true)
        {
            ObjectDisposedException.ThrowIf(_closed, this);
            nint n = Libc.Read(_fd, into.Span);
            if (n >= 0)
            {
                return (int)n;
            }
            if (Libc.LastErrno == Libc.EAGAIN)
            {
                await _loop.Readable(_fd, ct);
            }
            else if (Libc.LastErrno != Libc.EINTR)
            {
                throw Failed("read", Libc.LastErrno);
            }
        }
    }

    private static IOException Failed(string call, int errno) =>
        new(errno == Libc.EPIPE ? "the client closed the connection" : $"{call} on the API's connection failed (errno {errno})");

    /// <summary>Reads more into the buffer (moving what is kept to its front first); the count read, 0 at the end.</summary>
    private async ValueTask<int> Fill(CancellationToken ct)
    {
        if (_start > 0)
        {
            Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
            _end -= _start;
            _start = 0;
        }
        if (_end == _buffer.Length)
        {
            return 0;
        }
        int n = await Receive(_buffer.AsMemory(_end), ct);
        _end += n;
        return n;
    }

    /// <summary>
    /// Ends a connection the server closes while the client may still be sending (a body refused
    /// unread, a malformed request): the response is followed by our end of the stream, then what
    /// the client sends is read and dropped until it closes too (64 MiB or 5 s at most). Closing at
    /// once would reset the connection under the client, which then loses the response.
    /// </summary>
    public async Task CloseGracefully()
    {
        try
        {
            UnixSocket.ShutdownWrite(_fd);
            using var limit = new CancellationTokenSource();
            using var timer = _loop.After(TimeSpan.FromSeconds(5), limit.Cancel);
            var sink = new byte[16384];
            long dropped = 0;
            int n;
            while (dropped < 64L << 20 && (n = await Receive(sink, limit.Token)) > 0)
            {
                dropped += n;
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or OperationCanceledException)
        {
            // the client has gone, or takes too long: close anyway
        }
    }

    public void Dispose()
    {
        if (!_closed)
        {
            _closed = true;
            _loop.Forget(_fd);
            Libc.Close(_fd);
        }
    }
}
