using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Vireo.Api;

namespace Vireo.Cli.Manage;

/// <summary>A command that failed, with the exit status that says how (see <see cref="ExitCodes"/>).</summary>
internal sealed class CliException(int exitCode, string message) : Exception(message)
{
    public int ExitCode { get; } = exitCode;
}

/// <summary>
/// The management commands' exit statuses, stable for scripts (docs/cli.md):
/// 0 done; 1 refused in the VM's present state (409) or failed; 2 bad usage or input (400);
/// 3 no such VM (404); 4 vireod unreachable; 5 not authorized (401); 124 a wait timed out.
/// </summary>
internal static class ExitCodes
{
    public const int Ok = 0, Refused = 1, BadInput = 2, NotFound = 3, Unreachable = 4, Unauthorized = 5, TimedOut = 124;

    public static int FromStatus(HttpStatusCode status) => (int)status switch
    {
        400 or 413 or 415 => BadInput,
        401 or 403 => Unauthorized,
        404 => NotFound,
        _ => Refused,
    };
}

/// <summary>
/// The CLI's side of vireod's API: a Unix socket path (default /run/vireo/vireod.sock) or an
/// https://HOST:PORT address; a bearer token read from a file on either. Errors become <see cref="CliException"/>s.
/// </summary>
internal sealed class DaemonClient : IDisposable
{
    public const string DefaultSocket = "/run/vireo/vireod.sock";
    private readonly HttpClient _http;
    private readonly string _where;

    public DaemonClient(string? connect, string? tokenFile, string? caFile = null)
    {
        connect ??= Environment.GetEnvironmentVariable("VIREO_CONNECT") ?? DefaultSocket;
        tokenFile ??= Environment.GetEnvironmentVariable("VIREO_TOKEN_FILE");
        caFile ??= Environment.GetEnvironmentVariable("VIREO_CA_FILE");
        _where = connect;
        string? token = null;
        if (tokenFile is not null)
        {
            token = File.Exists(tokenFile) ? File.ReadAllText(tokenFile).Trim()
                : throw new CliException(ExitCodes.BadInput, $"--token-file {tokenFile}: no such file");
        }
        if (connect.StartsWith("http://", StringComparison.Ordinal))
        {
            throw new CliException(ExitCodes.BadInput, $"--connect {connect}: vireod serves TCP over TLS only: https://{connect["http://".Length..]}");
        }
        if (connect.StartsWith("https://", StringComparison.Ordinal))
        {
            _http = new HttpClient(TlsHandler(caFile)) { BaseAddress = new Uri(connect.TrimEnd('/') + "/"), Timeout = Timeout.InfiniteTimeSpan };
        }
        else
        {
            string socket = connect.StartsWith("unix:", StringComparison.Ordinal) ? connect[5..] : connect;
            if (!File.Exists(socket))
            {
                throw new CliException(ExitCodes.Unreachable, $"cannot reach vireod: no socket at {socket} (is vireod running? --connect or $VIREO_CONNECT name another)");
            }
            _http = UnixSocketHttp.Client(socket, Timeout.InfiniteTimeSpan);
        }
        if (token is not null)
        {
            _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }
    }

    /// <summary>TLS to vireod: its certificate checked against --ca-file's when given (a self-signed certificate may be its own CA), else the host's trust store.</summary>
    private static SocketsHttpHandler TlsHandler(string? caFile)
    {
        var handler = new SocketsHttpHandler();
        if (caFile is null)
        {
            return handler;
        }
        var ca = new System.Security.Cryptography.X509Certificates.X509Certificate2Collection();
        try
        {
            ca.ImportFromPemFile(caFile);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Security.Cryptography.CryptographicException)
        {
            throw new CliException(ExitCodes.BadInput, $"--ca-file {caFile}: cannot read a PEM certificate from it: {e.Message}");
        }
        // The chain must hold, and the name must match (a name mismatch is the only error the chain does not see).
        handler.SslOptions.RemoteCertificateValidationCallback = (_, certificate, _, errors) =>
            certificate is not null && CertificateTrust.ChainsTo(new System.Security.Cryptography.X509Certificates.X509Certificate2(certificate), ca)
            && (errors & System.Net.Security.SslPolicyErrors.RemoteCertificateNameMismatch) == 0;
        return handler;
    }

    public T Get<T>(string path, JsonTypeInfo<T> type) => Parse(Send(HttpMethod.Get, path), type);

    public T Send<T>(HttpMethod method, string path, JsonTypeInfo<T> type, string? body = null, string contentType = "application/json") =>
        Parse(Send(method, path, body, contentType), type);

    /// <summary>One request; the body text on 2xx, else a CliException with the daemon's reason.</summary>
    public string Send(HttpMethod method, string path, string? body = null, string contentType = "application/json")
    {
        using var request = new HttpRequestMessage(method, path);
        if (body is not null)
        {
            request.Content = new StringContent(body, Encoding.UTF8, contentType);
        }
        using var response = Open(request, CancellationToken.None);
        string text = response.Content.ReadAsStringAsync().GetAwaiter().GetResult();
        if (response.IsSuccessStatusCode)
        {
            return text;
        }
        throw Failure(response.StatusCode, text);
    }

    /// <summary>Opens a streaming response (the console, the event stream); fails as <see cref="Send"/> does.</summary>
    public HttpResponseMessage OpenStream(string path, CancellationToken ct, Action<HttpRequestMessage>? adjust = null)
    {
        var request = new HttpRequestMessage(HttpMethod.Get, path);
        adjust?.Invoke(request);
        var response = Open(request, ct);
        if (!response.IsSuccessStatusCode)
        {
            using (response)
            {
                throw Failure(response.StatusCode, response.Content.ReadAsStringAsync(ct).GetAwaiter().GetResult());
            }
        }
        return response;
    }

    /// <summary>Raw bytes to a PUT endpoint (console input).</summary>
    public void PutBytes(string path, byte[] bytes)
    {
        using var request = new HttpRequestMessage(HttpMethod.Put, path) { Content = new ByteArrayContent(bytes) };
        using var response = Open(request, CancellationToken.None);
        if (!response.IsSuccessStatusCode)
        {
            throw Failure(response.StatusCode, response.Content.ReadAsStringAsync().GetAwaiter().GetResult());
        }
    }

    private HttpResponseMessage Open(HttpRequestMessage request, CancellationToken ct)
    {
        try
        {
            return _http.Send(request, HttpCompletionOption.ResponseHeadersRead, ct);
        }
        catch (HttpRequestException e) when (e.InnerException is System.Security.Authentication.AuthenticationException)
        {
            // The handshake failed: most often a certificate this host does not trust (a self-signed one).
            throw new CliException(ExitCodes.Unreachable,
                $"cannot reach vireod at {_where}: its TLS certificate is not trusted here (give the certificate, or the CA that signed it, with --ca-file or $VIREO_CA_FILE)");
        }
        catch (HttpRequestException e)
        {
            throw new CliException(ExitCodes.Unreachable,
                $"cannot reach vireod at {_where}: {e.InnerException?.Message ?? e.Message} (is it running? see `vireod --help`; --connect or VIREO_CONNECT choose another)");
        }
    }

    private static CliException Failure(HttpStatusCode status, string body)
    {
        string message;
        try
        {
            var error = JsonSerializer.Deserialize(body, DaemonJson.Default.ApiError)!;
            message = error.Errors is { Length: > 0 } fields ? "invalid definition:\n  " + string.Join("\n  ", fields.Select(f => f.ToString())) : error.FaultMessage;
        }
        catch (JsonException)
        {
            message = $"vireod answered {(int)status}: {body}";
        }
        return new CliException(ExitCodes.FromStatus(status), message);
    }

    // Answers are read leniently: a newer vireod may add fields (requests stay strict on its side).
    private static readonly JsonSerializerOptions Lenient = new(DaemonJson.Default.Options) { UnmappedMemberHandling = System.Text.Json.Serialization.JsonUnmappedMemberHandling.Skip };

    internal static T Parse<T>(string text, JsonTypeInfo<T> type)
    {
        try
        {
            return (T)JsonSerializer.Deserialize(text, Lenient.GetTypeInfo(type.Type))!;
        }
        catch (JsonException e)
        {
            throw new CliException(ExitCodes.Refused, $"vireod's answer could not be read: {e.Message}");
        }
    }

    public void Dispose() => _http.Dispose();
}
