using System.Net;
using System.Security.Cryptography;
using System.Text;
using Vireo.Daemon;

// vireod: many VMs per host, each in its own vireo-vmm process that the daemon spawns and
// supervises; state in STATE/vireo.db (SQLite). REST on a Unix socket, and on TCP only with a token.
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
byte[]? token = null;
if (options.TokenFile is not null)
{
    string text = File.Exists(options.TokenFile) ? File.ReadAllText(options.TokenFile).Trim() : "";
    if (text.Length < 16)
    {
        Console.Error.WriteLine($"vireod: --token-file {options.TokenFile}: missing, or a token shorter than 16 characters");
        return 2;
    }
    token = Encoding.UTF8.GetBytes(text);
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
    o.ListenUnixSocket(options.Socket);
    if (options.Listen is { } endpoint)
    {
        o.Listen(endpoint);
    }
    o.Limits.MaxRequestBodySize = 1 << 20;
});
DaemonApi.AddServices(builder.Services);
builder.Services.AddSingleton<EventHub>();
var app = builder.Build();

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
if (token is not null)
{
    // TCP clients must present the token; the Unix socket is guarded by its file mode instead.
    app.Use(async (context, next) =>
    {
        if (context.Connection.RemoteIpAddress is not null && !Authorized(context.Request.Headers.Authorization.ToString(), token))
        {
            context.Response.StatusCode = 401;
            context.Response.Headers.WWWAuthenticate = "Bearer";
            await context.Response.WriteAsJsonAsync(new Vireo.Api.ApiError("a bearer token is required on TCP (Authorization: Bearer TOKEN)"),
                Vireo.Api.DaemonJson.Default.ApiError);
            return;
        }
        await next(context);
    });
}

var events = app.Services.GetRequiredService<EventHub>();
using var store = new VmStore(Path.Combine(options.StateDir, "vireo.db"));
using var supervisor = new Supervisor(store, events, options.StateDir, Path.Combine(AppContext.BaseDirectory, "vireo-vmm"), options.ImageDirs, options.SandboxFirstUid);
DaemonApi.Map(app, store, supervisor, events, options.ImageDirs);

try
{
    await app.StartAsync();
}
catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or UnauthorizedAccessException)
{
    // What the checks above cannot foresee (no permission there, an address in use, a race): one line, not a trace.
    Console.Error.WriteLine($"vireod: cannot listen on {options.Socket}{(options.Listen is null ? "" : $" and {options.Listen}")}: {(e.InnerException ?? e).Message.ReplaceLineEndings(" ")}");
    return 2;
}
File.SetUnixFileMode(options.Socket, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite);
app.Logger.LogInformation("vireod listening on {Socket}{Tcp}; state in {State}; images from {Images}", options.Socket,
    options.Listen is null ? "" : $" and {options.Listen} (token required)", options.StateDir, string.Join(", ", options.ImageDirs));
await app.WaitForShutdownAsync();
File.Delete(options.Socket);
return 0;

static bool Authorized(string header, byte[] token) =>
    header.StartsWith("Bearer ", StringComparison.Ordinal)
    && CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(header["Bearer ".Length..].Trim()), token);

/// <summary>vireod's command line.</summary>
internal sealed record DaemonOptions(string Socket, string StateDir, List<string> ImageDirs, IPEndPoint? Listen, string? TokenFile, uint? SandboxFirstUid = null)
{
    public const string Usage =
        "usage: vireod [--socket PATH] [--state DIR] [--image-dir DIR]... [--listen ADDR:PORT --token-file FILE] [--sandbox [--sandbox-uids FIRST]]\n" +
        "  defaults: --socket /run/vireo/vireod.sock --state /var/lib/vireo --image-dir STATE/images --sandbox-uids 3000000\n" +
        "  --sandbox: every VMM in its own namespaces and root, as uid and gid FIRST + the VM's id, with no capabilities";

    /// <summary>The first of the 65536 uids (and gids) vireod gives its sandboxed VMMs, one per VM.</summary>
    public const uint DefaultSandboxFirstUid = 3_000_000;

    public static DaemonOptions? Parse(string[] args, out string? error)
    {
        string socket = "/run/vireo/vireod.sock", state = "/var/lib/vireo";
        string? tokenFile = null;
        IPEndPoint? listen = null;
        bool sandbox = false;
        uint firstUid = DefaultSandboxFirstUid;
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
                case "--sandbox": sandbox = true; break;
                case "--sandbox-uids" when value is not null:
                    if (!uint.TryParse(value, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out firstUid) || firstUid < 1000 || firstUid > uint.MaxValue - 65537)
                    {
                        error = $"--sandbox-uids {value}: expected the first uid of a free range of 65536, from 1000 to {uint.MaxValue - 65537}";
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
        if (listen is not null && tokenFile is null)
        {
            error = "--listen needs --token-file: the API is only served on TCP to clients holding the token";
            return null;
        }
        if (imageDirs.Count == 0)
        {
            imageDirs.Add(Path.Combine(state, "images") + "/");
        }
        return new DaemonOptions(socket, state, imageDirs, listen, tokenFile, sandbox ? firstUid : null);
    }
}
