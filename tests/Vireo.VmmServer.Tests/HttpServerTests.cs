using System.Net.Sockets;
using System.Text;
using Vireo.Tests;
using Vireo.VmmServer.Http;

namespace Vireo.VmmServer.Tests;

/// <summary>
/// vireo-vmm's HTTP/1.1 server (Http/) on a real Unix socket, spoken to byte by byte: keep-alive
/// and pipelining, both body framings, 100-continue, streaming, and every malformed request
/// refused with a status and words, the connection closed and the server still serving.
/// </summary>
public class HttpServerTests : IDisposable
{
    private readonly string _socket = Path.Combine(TempDirectory.Create("vireo-http"), "api.sock");
    private readonly HttpServer _server = new(message => Encoding.UTF8.GetBytes($"{{\"fault_message\":\"{message}\"}}"));
    private readonly TaskCompletionSource _streamAborted = new();
    private readonly SemaphoreSlim _more = new(0);

    public HttpServerTests()
    {
        _server.Map("GET", "/hello", x => x.Respond(200, "\"hi\""u8.ToArray()));
        _server.Map("PUT", "/echo/{id}", async x =>
        {
            try
            {
                var body = await Vireo.Api.BodyReader.ReadBounded(x.Body, 1 << 20, x.Aborted);
                await x.Respond(200, Encoding.UTF8.GetBytes($"{x.RouteValues[0]}:{Encoding.UTF8.GetString(body!)}"), "text/plain");
            }
            catch (IOException e)
            {
                await x.Respond(400, Encoding.UTF8.GetBytes(e.Message), "text/plain");
            }
        });
        _server.Map("PUT", "/refuse", x => x.Respond(413)); // answers without reading the body
        _server.Map("GET", "/stream", async x =>
        {
            await using var stream = await x.StartStream("application/octet-stream");
            await stream.WriteAsync("one"u8.ToArray());
            try
            {
                await _more.WaitAsync(x.Aborted);
                await stream.WriteAsync("two"u8.ToArray());
            }
            catch (OperationCanceledException)
            {
                _streamAborted.TrySetResult();
            }
        });
        _server.Start(_socket);
    }

    public void Dispose() => _server.Stop();

    private async Task<Socket> Connect()
    {
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await s.ConnectAsync(new UnixDomainSocketEndPoint(_socket));
        return s;
    }

    /// <summary>Sends the bytes, then reads until the server closes the connection (or 10 s pass).</summary>
    private async Task<string> Exchange(string request)
    {
        using var s = await Connect();
        await s.SendAsync(Encoding.ASCII.GetBytes(request));
        return await ReadToClose(s);
    }

    private static async Task<string> ReadToClose(Socket s)
    {
        var all = new MemoryStream();
        var buffer = new byte[4096];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        int n;
        while ((n = await s.ReceiveAsync(buffer, timeout.Token)) > 0)
        {
            all.Write(buffer, 0, n);
        }
        return Encoding.ASCII.GetString(all.ToArray());
    }

    private static int Count(string text, string what) => (text.Length - text.Replace(what, "").Length) / what.Length;

    [Fact]
    public async Task Requests_on_one_connection_are_answered_in_order_pipelined_or_not()
    {
        string reply = await Exchange(
            "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n" +
            "PUT /echo/a%20b?q=1 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc" +
            "PUT /echo/c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2;ext=1\r\nde\r\n1\r\nf\r\n0\r\nTrailer: x\r\n\r\n" +
            "GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n");
        Assert.Equal(4, Count(reply, "HTTP/1.1 200 OK"));
        int a = reply.IndexOf("a b:abc"), c = reply.IndexOf("c:def");
        Assert.True(a > 0 && c > a, reply);
        Assert.EndsWith("Connection: close\r\n\r\n\"hi\"", reply);
    }

    [Fact]
    public async Task A_client_that_expects_100_continue_gets_it_before_sending_its_body()
    {
        using var s = await Connect();
        await s.SendAsync("PUT /echo/x HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"u8.ToArray());
        var buffer = new byte[256];
        int n = await s.ReceiveAsync(buffer);
        Assert.Equal("HTTP/1.1 100 Continue\r\n\r\n", Encoding.ASCII.GetString(buffer, 0, n));
        await s.SendAsync("body"u8.ToArray());
        Assert.Contains("x:body", await ReadToClose(s));
    }

    [Fact]
    public async Task A_body_refused_unread_closes_the_connection_and_never_asks_for_the_body()
    {
        string reply = await Exchange("PUT /refuse HTTP/1.1\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n");
        Assert.StartsWith("HTTP/1.1 413 ", reply);
        Assert.DoesNotContain("100 Continue", reply);
        Assert.Contains("Connection: close", reply);
    }

    [Theory]
    [InlineData("GARBAGE\r\n\r\n", 400, "METHOD TARGET")]
    [InlineData("get /hello HTTP/1.1\r\n\r\n", 400, "upper-case")]
    [InlineData("GET hello HTTP/1.1\r\n\r\n", 400, "starts with /")]
    [InlineData("GET /hello HTTP/2.0\r\n\r\n", 400, "version")]
    [InlineData("GET /he\u0001llo HTTP/1.1\r\n\r\n", 400, "control character")]
    [InlineData("GET /hello HTTP/1.1\r\nNoColon\r\n\r\n", 400, "header line 1 is not NAME: VALUE")]
    [InlineData("GET /hello HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400, "folded")]
    [InlineData("PUT /echo/x HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, "Content-Length must be a whole number")]
    [InlineData("PUT /echo/x HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 400, "Content-Length must be a whole number")]
    [InlineData("PUT /echo/x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400, "twice")]
    [InlineData("PUT /echo/x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "ambiguous")]
    [InlineData("PUT /echo/x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400, "only chunked")]
    [InlineData("PUT /echo/x HTTP/1.1\r\nExpect: 200-ok\r\n\r\n", 400, "only 100-continue")]
    [InlineData("GET /nothing HTTP/1.1\r\n\r\n", 404, "no such resource")]
    [InlineData("DELETE /hello HTTP/1.1\r\n\r\n", 405, "DELETE is not allowed on /hello; it takes GET")]
    public async Task A_malformed_or_misdirected_request_is_refused_in_words(string request, int status, string words)
    {
        string reply = await Exchange(request + (status >= 404 ? "GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n" : ""));
        Assert.StartsWith($"HTTP/1.1 {status} ", reply);
        Assert.Contains(words, reply);
        if (status == 405)
        {
            Assert.Contains("Allow: GET", reply);
        }
        // A 404 or 405 keeps the connection (the request was well formed); a 400 closes it.
        Assert.Equal(status >= 404 ? 1 : 0, Count(reply, "200 OK"));
        Assert.Contains("\"hi\"", await Exchange("GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n")); // still serving
    }

    [Theory]
    [InlineData("PUT /echo/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "not hexadecimal")]
    [InlineData("PUT /echo/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n", "does not end with CRLF")]
    public async Task A_malformed_chunked_body_fails_its_read(string request, string words)
    {
        // The handler's read fails with an IOException, which the API's handlers answer with a 400; the connection closes after.
        string reply = await Exchange(request);
        Assert.StartsWith("HTTP/1.1 400 ", reply);
        Assert.Contains(words, reply);
        Assert.Contains("Connection: close", reply);
    }

    [Fact]
    public async Task Headers_larger_than_32_kib_are_a_431_however_the_bytes_arrive()
    {
        string reply = await Exchange("GET /hello HTTP/1.1\r\nX-Big: " + new string('a', 40_000) + "\r\n\r\n");
        Assert.StartsWith("HTTP/1.1 431 ", reply);
        string line = "GET /hello HTTP/1.1\r\nX: ";
        foreach (var (size, status) in new[] { (RequestHead.MaxSize, 200), (RequestHead.MaxSize + 1, 431) })
        {
            using var s = await Connect();
            await s.SendAsync(Encoding.ASCII.GetBytes(line + new string('a', size - line.Length)));
            await Task.Delay(100);
            await s.SendAsync("\r\n\r\n"u8.ToArray()); // the blank line on its own, later
            Assert.StartsWith($"HTTP/1.1 {status} ", await ReadUntil(s, "\r\n\r\n"));
        }
    }

    private static async Task<string> ReadUntil(Socket s, string end)
    {
        var seen = new StringBuilder();
        var buffer = new byte[4096];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (!seen.ToString().Contains(end))
        {
            int n = await s.ReceiveAsync(buffer, timeout.Token);
            if (n == 0)
            {
                break;
            }
            seen.Append(Encoding.ASCII.GetString(buffer, 0, n));
        }
        return seen.ToString();
    }

    [Fact]
    public async Task Empty_lines_before_a_request_are_ignored()
    {
        Assert.Contains("\"hi\"", await Exchange("\r\n\r\nGET /hello HTTP/1.1\r\nConnection: close\r\n\r\n"));
    }

    [Fact]
    public async Task A_quiet_connection_ends_and_a_head_that_never_ends_is_a_408()
    {
        string socket = Path.Combine(TempDirectory.Create("vireo-http"), "api.sock");
        var server = new HttpServer(message => Encoding.UTF8.GetBytes(message))
        {
            IdleTimeout = TimeSpan.FromMilliseconds(300),
            HeadTimeout = TimeSpan.FromMilliseconds(300),
        };
        server.Map("GET", "/hello", x => x.Respond(200, "\"hi\""u8.ToArray()));
        server.Start(socket);
        try
        {
            using (var idle = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
            {
                await idle.ConnectAsync(new UnixDomainSocketEndPoint(socket));
                Assert.Equal("", await ReadToClose(idle)); // nothing sent: closed, nothing said
            }
            using var slow = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            await slow.ConnectAsync(new UnixDomainSocketEndPoint(socket));
            await slow.SendAsync("GET /hello HTTP/1.1\r\nX: "u8.ToArray());
            Assert.StartsWith("HTTP/1.1 408 ", await ReadToClose(slow));
        }
        finally
        {
            server.Stop();
        }
    }

    [Fact]
    public async Task Connections_over_the_cap_are_closed_at_once_and_the_others_are_served()
    {
        string socket = Path.Combine(TempDirectory.Create("vireo-http"), "api.sock");
        var server = new HttpServer(message => Encoding.UTF8.GetBytes(message)) { MaxConnections = 4 };
        server.Map("GET", "/hello", x => x.Respond(200, "\"hi\""u8.ToArray()));
        server.Start(socket);
        var held = new List<Socket>();
        try
        {
            for (int i = 0; i < 4; i++)
            {
                var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                await s.ConnectAsync(new UnixDomainSocketEndPoint(socket));
                held.Add(s);
            }
            await Task.Delay(200);
            using (var over = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
            {
                await over.ConnectAsync(new UnixDomainSocketEndPoint(socket));
                Assert.Equal("", await ReadToClose(over));
            }
            await held[0].SendAsync("GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n"u8.ToArray());
            Assert.Contains("\"hi\"", await ReadToClose(held[0]));
        }
        finally
        {
            held.ForEach(s => s.Dispose());
            server.Stop();
        }
    }

    [Fact]
    public async Task A_stream_goes_on_to_a_client_that_only_shut_its_sending_side()
    {
        using var s = await Connect();
        await s.SendAsync("GET /stream HTTP/1.1\r\n\r\n"u8.ToArray());
        s.Shutdown(SocketShutdown.Send); // as nc -N and socat do
        Assert.Contains("3\r\none\r\n", await ReadUntil(s, "3\r\none\r\n"));
        await Task.Delay(1200); // the hang-up check has run
        Assert.False(_streamAborted.Task.IsCompleted);
        _more.Release();
        Assert.EndsWith("3\r\ntwo\r\n0\r\n\r\n", await ReadToClose(s));
    }

    [Fact]
    public async Task Http_1_0_closes_after_its_answer_and_a_client_gone_mid_request_costs_nothing()
    {
        string reply = await Exchange("GET /hello HTTP/1.0\r\n\r\n");
        Assert.StartsWith("HTTP/1.1 200 OK", reply);
        Assert.Contains("Connection: close", reply);
        for (int i = 0; i < 20; i++)
        {
            using var s = await Connect();
            await s.SendAsync("PUT /echo/x HTTP/1.1\r\nContent-Length: 1000\r\n\r\npart"u8.ToArray());
        }
        Assert.Contains("\"hi\"", await Exchange("GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n"));
    }

    [Fact]
    public async Task A_streamed_response_comes_in_chunks_and_a_client_that_hangs_up_ends_it()
    {
        using (var s = await Connect())
        {
            await s.SendAsync("GET /stream HTTP/1.1\r\n\r\n"u8.ToArray());
            string seen = await ReadUntil(s, "3\r\none\r\n");
            Assert.Contains("3\r\none\r\n", seen);
            Assert.Contains("Transfer-Encoding: chunked", seen);
        }
        // The client hung up while the handler waited for more: its token fired.
        Assert.Same(_streamAborted.Task, await Task.WhenAny(_streamAborted.Task, Task.Delay(10_000)));

        using var again = await Connect();
        await again.SendAsync("GET /stream HTTP/1.1\r\n\r\n"u8.ToArray());
        _more.Release();
        string all = await ReadToClose(again);
        Assert.EndsWith("3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n", all);
    }
}
