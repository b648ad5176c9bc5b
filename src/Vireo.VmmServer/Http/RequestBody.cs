using System.Globalization;

namespace Vireo.VmmServer.Http;

/// <summary>
/// A request's body as a read-only stream: Content-Length bytes, or the chunks of a chunked body
/// decoded, or nothing. A body that ends early or whose chunks are malformed is an IOException
/// (the handler's 400). If the client asked for 100-continue, that goes at the first read, so a
/// body refused by its Content-Length alone is never sent.
/// </summary>
internal sealed class RequestBody(HttpConnection connection, RequestHead head, CancellationToken aborted) : Stream
{
    private const int MaxChunkLine = 1024;
    private long _left = head.ContentLength ?? 0; // of the body (Content-Length) or of the current chunk
    private bool _done = !head.Chunked && (head.ContentLength ?? 0) == 0;
    private bool _continueSent = !head.ExpectContinue;

    /// <summary>True once the whole body has been read: only then can the connection take another request.</summary>
    public bool Finished => _done;

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default)
    {
        if (_done || buffer.IsEmpty)
        {
            return 0;
        }
        using var both = CancellationTokenSource.CreateLinkedTokenSource(ct, aborted);
        if (!_continueSent)
        {
            _continueSent = true;
            await connection.Write("HTTP/1.1 100 Continue\r\n\r\n"u8.ToArray(), both.Token);
        }
        if (head.Chunked && _left == 0 && !await NextChunk(both.Token))
        {
            return 0;
        }
        int n = await connection.Read(buffer[..(int)Math.Min(buffer.Length, _left)], both.Token);
        if (n == 0)
        {
            throw new IOException("the client closed the connection before the end of the request's body");
        }
        _left -= n;
        if (_left == 0 && !head.Chunked)
        {
            _done = true;
        }
        else if (_left == 0 && await connection.ReadLine(2, both.Token) != "")
        {
            throw new IOException("a chunk of the request's body does not end with CRLF");
        }
        return n;
    }

    /// <summary>Reads the next chunk's size line; false at the last (zero) chunk, after its trailers.</summary>
    private async ValueTask<bool> NextChunk(CancellationToken ct)
    {
        string line = await connection.ReadLine(MaxChunkLine, ct) ?? throw new IOException("the request's chunked body ends, or has an over-long line, before its last chunk");
        string size = line.Split(';')[0].Trim();
        if (size.Length is 0 or > 15 || !long.TryParse(size, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out _left))
        {
            throw new IOException($"a chunk size in the request's body is not hexadecimal: '{(line.Length > 20 ? line[..20] : line)}'");
        }
        if (_left > 0)
        {
            return true;
        }
        // The last chunk: trailers (ignored) up to the blank line.
        for (int i = 0; ; i++)
        {
            string? trailer = await connection.ReadLine(MaxChunkLine, ct);
            if (trailer is null || i > RequestHead.MaxHeaders)
            {
                throw new IOException("the request's chunked body does not end with a blank line");
            }
            if (trailer.Length == 0)
            {
                _done = true;
                return false;
            }
        }
    }

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException("the API's loop never blocks: ReadAsync");

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken ct) => ReadAsync(buffer.AsMemory(offset, count), ct).AsTask();

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}
