using System.Net;
using System.Threading.RateLimiting;
using Vireo.Daemon;
using Vireo.Daemon.Access;

// vireod: many VMs per host, each in its own vireo-vmm process that the daemon spawns and
// supervises; state in STATE/vireo.db (SQLite). REST on a Unix socket (callers known by their uid),
// and on TCP to holders of a token; each caller is a user of a tenant, with a role (Access/).
if (args is ["--help"] or ["-h"])
{
    Console.WriteLine(DaemonOptions.Usage);
    return 0;
}
var options = DaemonOptions.Parse(args, out string? usageError);
if (options is null)
{
    Console.Error.WriteLine($"vireod: {usageError}\n{DaemonOptions.Usage}");
    return 2;
}
byte[]? adminTokenHash = null; // the host admin's token on TCP, from --token-file; users have their own
if (options.TokenFile is not null)
{
    string text = File.Exists(options.TokenFile) ? File.ReadAllText(options.TokenFile).Trim() : "";
    if (text.Length < 16)
    {
        Console.Error.WriteLine($"vireod: --token-file {options.TokenFile}: missing, or a token shorter than 16 characters");
        return 2;
    }
    adminTokenHash = AccessStore.Hash(text);
}
// The group the socket is given to, looked up before anything is started.
uint? socketGid = null;
if (options.SocketGroup is not null && (socketGid = Vireo.Interop.Libc.GroupId(options.SocketGroup)) is null)
{
    Console.Error.WriteLine($"vireod: --socket-group {options.SocketGroup}: no such group (name or gid)");
    return 2;
}
// TLS on TCP: the certificate and its key (PEM), and the CA that client certificates are checked against, if any.
System.Security.Cryptography.X509Certificates.X509Certificate2? serverCertificate = null;
System.Security.Cryptography.X509Certificates.X509Certificate2Collection? clientCa = null;
if (options.TlsCert is not null)
{
    try
    {
        serverCertificate = System.Security.Cryptography.X509Certificates.X509Certificate2.CreateFromPemFile(options.TlsCert, options.TlsKey);
        if (options.TlsClientCa is not null)
        {
            clientCa = [];
            clientCa.ImportFromPemFile(options.TlsClientCa);
            if (clientCa.Count == 0)
            {
                Console.Error.WriteLine($"vireod: --tls-client-ca {options.TlsClientCa}: no PEM certificate in it");
                return 2;
            }
        }
    }
    catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Security.Cryptography.CryptographicException or ArgumentException)
    {
        Console.Error.WriteLine($"vireod: --tls-cert {options.TlsCert} --tls-key {options.TlsKey}{(options.TlsClientCa is null ? "" : $" --tls-client-ca {options.TlsClientCa}")}: " +
            $"cannot load them as PEM: {e.Message.ReplaceLineEndings(" ")}");
        return 2;
    }
}
// Bad paths are one line each, as a bad --listen is; only a stale socket is ever replaced.
if (Vireo.Interop.UnixSocket.BindProblem(options.Socket) is { } socketProblem)
{
    Console.Error.WriteLine($"vireod: --socket {options.Socket} {socketProblem}");
    return 2;
}
if (!Directory.Exists(options.StateDir) && File.Exists(options.StateDir))
{
    Console.Error.WriteLine($"vireod: --state {options.StateDir} exists and is not a directory");
    return 2;
}
try
{
    Directory.CreateDirectory(options.StateDir);
    Directory.CreateDirectory(Path.Combine(options.StateDir, "images")); // the default image directory
}
catch (Exception e) when (e is IOException or UnauthorizedAccessException)
{
    Console.Error.WriteLine($"vireod: --state {options.StateDir}: cannot create it: {e.Message.ReplaceLineEndings(" ")}");
    return 2;
}
try
{
    Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(options.Socket))!);
}
catch (Exception e) when (e is IOException or UnauthorizedAccessException)
{
    Console.Error.WriteLine($"vireod: --socket {options.Socket}: cannot create its directory: {e.Message.ReplaceLineEndings(" ")}");
    return 2;
}
Vireo.Interop.Libc.RemoveStaleSocket(options.Socket); // a stale socket from an earlier daemon
// The socket is bound here and given its mode and group before Kestrel listens on it: a client that can
// connect finds it finished (Kestrel's own bind would leave a moment when it answers with root's group).
var unixListener = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
try
{
    unixListener.Bind(new System.Net.Sockets.UnixDomainSocketEndPoint(options.Socket));
}
catch (System.Net.Sockets.SocketException e)
{
    Console.Error.WriteLine($"vireod: --socket {options.Socket}: cannot bind it: {e.Message.ReplaceLineEndings(" ")}");
    return 2;
}
File.SetUnixFileMode(options.Socket, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite);
if (socketGid is { } gid && Vireo.Interop.Libc.ChangeGroup(options.Socket, gid) is { } errno)
{
    Console.Error.WriteLine($"vireod: --socket-group {options.SocketGroup}: cannot give {options.Socket} to gid {gid} (errno {errno})");
    File.Delete(options.Socket);
    return 2;
}
// Listening from here, so that a client that sees the socket can connect: it waits in the backlog until Kestrel accepts.
unixListener.Listen(512);

// Kestrel and routing and no more: no configuration files (nor a watcher thread for them), no HTTPS.
var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
builder.WebHost.UseKestrelCore();
builder.Services.AddRoutingCore();
// Structured logs: one JSON object a line on stderr, for journald or any log shipper.
builder.Logging.ClearProviders().AddJsonConsole(o =>
{
    o.UseUtcTimestamp = true;
    // ISO 8601 exactly: the simple console logger wants a trailing space before the message, the JSON one a bare value.
    o.TimestampFormat = "yyyy-MM-dd'T'HH:mm:ss.fff'Z'";
}).AddFilter("Microsoft", LogLevel.Warning);
builder.Services.Configure<Microsoft.Extensions.Logging.Console.ConsoleLoggerOptions>(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
builder.WebHost.ConfigureKestrel(o =>
{
    o.ListenHandle((ulong)unixListener.Handle);
    if (options.Listen is { } endpoint)
    {
        // TLS only: a client speaking plain HTTP there fails the handshake and is sent nothing.
        o.Listen(endpoint, listen => listen.UseHttps(new Microsoft.AspNetCore.Server.Kestrel.Https.HttpsConnectionAdapterOptions
        {
            ServerCertificate = serverCertificate,
            ClientCertificateMode = clientCa is null ? Microsoft.AspNetCore.Server.Kestrel.Https.ClientCertificateMode.NoCertificate
                : Microsoft.AspNetCore.Server.Kestrel.Https.ClientCertificateMode.AllowCertificate,
            ClientCertificateValidation = (certificate, _, _) => ClientCertificate.Trusted(certificate, clientCa),
        }));
    }
    o.Limits.MaxRequestBodySize = 1 << 20;
});
DaemonApi.AddServices(builder.Services);
builder.Services.AddSingleton<EventHub>();
// A token bucket per TCP client address: --rate-limit requests a second, twice that in a burst; the Unix socket is not limited.
builder.Services.AddRateLimiter(o =>
{
    o.GlobalLimiter = PartitionedRateLimiter.Create<HttpContext, string>(context =>
        context.Connection.RemoteIpAddress is { } ip && options.RateLimit > 0
            ? RateLimitPartition.GetTokenBucketLimiter(ip.ToString(), _ => new TokenBucketRateLimiterOptions
            {
                TokenLimit = 2 * options.RateLimit,
                TokensPerPeriod = options.RateLimit,
                ReplenishmentPeriod = TimeSpan.FromSeconds(1),
                QueueLimit = 0,
                AutoReplenishment = true,
            })
            : RateLimitPartition.GetNoLimiter("unix"));
    o.OnRejected = async (rejected, ct) =>
    {
        rejected.HttpContext.Response.StatusCode = 429;
        rejected.HttpContext.Response.Headers.RetryAfter = "1";
        await rejected.HttpContext.Response.WriteAsJsonAsync(new Vireo.Api.ApiError(
            $"too many requests from {rejected.HttpContext.Connection.RemoteIpAddress}: at most {options.RateLimit} a second (vireod --rate-limit)"),
            Vireo.Api.DaemonJson.Default.ApiError, contentType: null, ct);
    };
});
var app = builder.Build();
using var store = new VmStore(Path.Combine(options.StateDir, "vireo.db"));
using var access = new AccessStore(Path.Combine(options.StateDir, "vireo.db"), options.StateDir, options.ImageDirs);
using var audit = new AuditLog(Path.Combine(options.StateDir, "audit.log"));

// A fault in a handler is a 500 with a reason, logged, and the daemon goes on serving.
app.Use(async (context, next) =>
{
    try
    {
        await next(context);
    }
    catch (Exception e) when (e is not OperationCanceledException)
    {
        app.Logger.LogError(e, "{Method} {Path} failed", context.Request.Method, context.Request.Path);
        if (!context.Response.HasStarted)
        {
            context.Response.StatusCode = 500;
            await context.Response.WriteAsJsonAsync(new Vireo.Api.ApiError($"internal error: {e.Message}"), Vireo.Api.DaemonJson.Default.ApiError);
        }
    }
});
app.UseRateLimiter();
// Every change is audited, refused ones too; then who the caller is, then what it may do (Access/).
app.Use(audit.Invoke);
app.Use(new Authentication(access, adminTokenHash).Invoke);
app.Use(new Vireo.Daemon.Access.Authorization(store).Invoke);

var events = app.Services.GetRequiredService<EventHub>();
events.TenantOf = name => store.Get(name)?.Tenant;
using var supervisor = new Supervisor(store, events, options.StateDir, Path.Combine(AppContext.BaseDirectory, "vireo-vmm"),
    tenant => access.ImageDirsOf(tenant), options.SandboxFirstUid);
DaemonApi.Map(app, store, supervisor, events, access);

try
{
    await app.StartAsync();
}
catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or UnauthorizedAccessException)
{
    // What the checks above cannot foresee (no permission there, an address in use, a race): one line, not a trace.
    Console.Error.WriteLine($"vireod: cannot listen on {options.Socket}{(options.Listen is null ? "" : $" and {options.Listen}")}: {(e.InnerException ?? e).Message.ReplaceLineEndings(" ")}");
    File.Delete(options.Socket);
    return 2;
}
app.Logger.LogInformation("vireod listening on {Socket}{Tcp}; state in {State}; images from {Images}", options.Socket,
    options.Listen is null ? "" : $" and https://{options.Listen} (a token{(clientCa is null ? "" : " or a client certificate")} required)", options.StateDir, string.Join(", ", options.ImageDirs));
await app.WaitForShutdownAsync();
File.Delete(options.Socket);
GC.KeepAlive(unixListener); // Kestrel listens on its descriptor: it must not be finalized and closed
return 0;

/// <summary>vireod's command line.</summary>
internal sealed record DaemonOptions(string Socket, string StateDir, List<string> ImageDirs, IPEndPoint? Listen, string? TokenFile, uint? SandboxFirstUid = null,
    int RateLimit = DaemonOptions.DefaultRateLimit, string? TlsCert = null, string? TlsKey = null, string? TlsClientCa = null,
    string? SocketGroup = null)
{
    public const string Usage =
        "usage: vireod [--socket PATH] [--state DIR] [--image-dir DIR]... [--listen ADDR:PORT --tls-cert PEM --tls-key PEM [--tls-client-ca PEM]\n" +
        "              [--token-file FILE] [--rate-limit N]] [--socket-group GROUP] [--sandbox-uids FIRST | --no-sandbox]\n" +
        "  defaults: --socket /run/vireo/vireod.sock --state /var/lib/vireo --image-dir STATE/images --sandbox-uids 3000000\n" +
        "  --socket-group: the socket is GROUP's too (mode 0660), so its members' uids may connect; a uid that is no vireod user's is refused\n" +
        "  the sandbox (the default; vireod must be root): every VMM in its own namespaces and root, as uid and gid FIRST + the VM's id,\n" +
        "  with no capabilities; --no-sandbox: VMMs run as vireod's user, in the host's namespaces";

    /// <summary>The first of the 65536 uids (and gids) vireod gives its sandboxed VMMs, one per VM.</summary>
    public const uint DefaultSandboxFirstUid = 3_000_000;

    /// <summary>Requests a second one TCP client may send (twice that in a burst).</summary>
    public const int DefaultRateLimit = 20;

    public static DaemonOptions? Parse(string[] args, out string? error)
    {
        string socket = "/run/vireo/vireod.sock", state = "/var/lib/vireo";
        string? tokenFile = null, socketGroup = null, tlsCert = null, tlsKey = null, tlsClientCa = null;
        IPEndPoint? listen = null;
        bool? sandbox = null; // the default: sandboxed, which needs root
        uint firstUid = DefaultSandboxFirstUid;
        int rateLimit = DefaultRateLimit;
        var imageDirs = new List<string>();
        error = null;
        for (int i = 0; i < args.Length; i++)
        {
            string? value = i + 1 < args.Length ? args[i + 1] : null;
            switch (args[i])
            {
                case "--socket" when value is not null: socket = value; i++; break;
                case "--state" when value is not null: state = Path.GetFullPath(value); i++; break;
                case "--image-dir" when value is not null: imageDirs.Add(Path.GetFullPath(value).TrimEnd('/') + "/"); i++; break;
                case "--token-file" when value is not null: tokenFile = value; i++; break;
                case "--socket-group" when value is not null: socketGroup = value; i++; break;
                case "--tls-cert" when value is not null: tlsCert = value; i++; break;
                case "--tls-key" when value is not null: tlsKey = value; i++; break;
                case "--tls-client-ca" when value is not null: tlsClientCa = value; i++; break;
                case "--sandbox": sandbox = true; break; // the default; kept for the command lines that name it
                case "--no-sandbox": sandbox = false; break;
                case "--sandbox-uids" when value is not null:
                    if (!uint.TryParse(value, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out firstUid) || firstUid < 1000 || firstUid > uint.MaxValue - 65537)
                    {
                        error = $"--sandbox-uids {value}: expected the first uid of a free range of 65536, from 1000 to {uint.MaxValue - 65537}";
                        return null;
                    }
                    i++;
                    break;
                case "--rate-limit" when value is not null:
                    if (!int.TryParse(value, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out rateLimit) || rateLimit > 100_000)
                    {
                        error = $"--rate-limit {value}: expected requests a second per TCP client, 0 (no limit) to 100000";
                        return null;
                    }
                    i++;
                    break;
                case "--listen" when value is not null:
                    if (!IPEndPoint.TryParse(value, out listen) || listen.Port == 0)
                    {
                        error = $"--listen {value}: expected ADDRESS:PORT, such as 127.0.0.1:7070";
                        return null;
                    }
                    i++;
                    break;
                default:
                    error = $"unknown argument '{args[i]}'";
                    return null;
            }
        }
        if (listen is not null && (tlsCert is null || tlsKey is null))
        {
            error = "--listen needs --tls-cert and --tls-key: the API is only served on TCP over TLS";
            return null;
        }
        if (listen is null && (tlsCert ?? tlsKey ?? tlsClientCa ?? tokenFile) is not null)
        {
            error = "--tls-cert, --tls-key, --tls-client-ca and --token-file are for the TCP listener: give --listen ADDR:PORT too";
            return null;
        }
        if (sandbox != false && !Environment.IsPrivilegedProcess)
        {
            error = "the sandbox around each VMM needs vireod to run as root (namespaces, a uid per VM, cgroups); run it as root, or pass --no-sandbox";
            return null;
        }
        if (imageDirs.Count == 0)
        {
            imageDirs.Add(Path.Combine(state, "images") + "/");
        }
        return new DaemonOptions(socket, state, imageDirs, listen, tokenFile, sandbox != false ? firstUid : null, rateLimit, tlsCert, tlsKey, tlsClientCa, socketGroup);
    }
}
