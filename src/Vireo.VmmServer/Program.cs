using System.Text.Json.Serialization.Metadata;
using Vireo.Api;
using Vireo.VmmServer;

// vireo-vmm --api-sock PATH: one VM, configured and driven over a REST API on a Unix socket, in
// the manner of Firecracker. The guest's serial console is this process's stdout. The process
// exits when the VM has ended, with the status `vireo run` would give (0: powered off or stopped).
string? socketPath = null, statusFile = null;
for (int i = 0; i < args.Length; i++)
{
    if (args[i] == "--api-sock" && i + 1 < args.Length)
    {
        socketPath = args[++i];
    }
    else if (args[i] == "--status-file" && i + 1 < args.Length)
    {
        statusFile = args[++i]; // "STATUS REASON" is written there when the VM ends, for a supervisor that is not our parent
    }
    else
    {
        Console.Error.WriteLine($"vireo-vmm: unknown argument '{args[i]}' (usage: vireo-vmm --api-sock PATH)");
        return 2;
    }
}
if (socketPath is null)
{
    Console.Error.WriteLine("vireo-vmm: usage: vireo-vmm --api-sock PATH");
    return 2;
}
if (SocketPathProblem(socketPath) is { } problem)
{
    Console.Error.WriteLine($"vireo-vmm: --api-sock {socketPath} {problem}");
    return 2;
}
Vireo.Interop.Libc.RemoveStaleSocket(socketPath); // a stale socket from an earlier process; nothing else is ever replaced

// The least ASP.NET Core that serves the API: Kestrel and routing, no configuration files (and no
// watcher thread for them), no logging, no HTTPS; every byte of it is resident in every VMM.
var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
builder.WebHost.UseKestrelCore().ConfigureKestrel(o => o.ListenUnixSocket(socketPath));
builder.Services.AddRoutingCore();
var app = builder.Build();

using var stdout = Console.OpenStandardOutput();
var console = new ConsoleLog();
var session = new VmSession(b =>
{
    stdout.WriteByte(b);
    console.Write(b);
});
int exitCode = 0;
session.Ended += code =>
{
    exitCode = code;
    if (statusFile is not null)
    {
        // "STATUS REASON TEXT": the exit status, why (a StopReason name), and the words for it.
        File.WriteAllText(statusFile + ".tmp", $"{code} {session.LastReason} {session.Info().LastOutcome}\n");
        File.Move(statusFile + ".tmp", statusFile, overwrite: true);
    }
    stdout.Flush();
    console.Close();
    if (session.LastReason == nameof(Vireo.Vmm.StopReason.Migrated))
    {
        // The VM went on elsewhere: its migration's last figures (the downtime) are read once
        // before the API goes, or not at all after 2 s.
        session.MigratedStatusRead.Wait(TimeSpan.FromSeconds(2));
    }
    app.Lifetime.StopApplication();
};

app.MapPut("/boot-source", (HttpRequest r) => Put(r, VmmJson.Default.BootSource, "boot-source", session.SetBootSource));
app.MapPut("/machine-config", (HttpRequest r) => Put(r, VmmJson.Default.MachineConfig, "machine-config", session.SetMachineConfig));
app.MapPut("/drives/{id}", (HttpRequest r, string id) => Put(r, VmmJson.Default.Drive, "drive", d => session.PutDrive(id, d)));
app.MapPut("/network-interfaces/{id}", (HttpRequest r, string id) => Put(r, VmmJson.Default.NetworkInterface, "network-interface", n => session.PutNetworkInterface(id, n)));
app.MapPut("/vsock", (HttpRequest r) => Put(r, VmmJson.Default.Vsock, "vsock", session.SetVsock));
app.MapPut("/actions", (HttpRequest r) => Put(r, VmmJson.Default.InstanceAction, "actions", a => session.Act(a.ActionType)));
app.MapGet("/vm", () => Results.Json(session.Info(), VmmJson.Default.VmInfo));
app.MapPatch("/vm", (HttpRequest r) => Put(r, VmmJson.Default.VmStatePatch, "vm", p => session.PatchState(p.State)));
app.MapPut("/snapshot/create", (HttpRequest r) => Put(r, VmmJson.Default.SnapshotCreateParams, "snapshot/create", session.CreateSnapshot));
app.MapPut("/snapshot/load", (HttpRequest r) => Put(r, VmmJson.Default.SnapshotLoadParams, "snapshot/load", session.LoadSnapshot));
app.MapPut("/migration/receive", (HttpRequest r) => Put(r, VmmJson.Default.MigrationReceiveParams, "migration/receive", session.ReceiveMigration));
app.MapPut("/migration/send", (HttpRequest r) => Put(r, VmmJson.Default.MigrationSendParams, "migration/send", session.SendMigration));
app.MapGet("/migration", () => Results.Json(session.MigrationInfo(), VmmJson.Default.MigrationInfo));
// The console: what the guest wrote so far (the last 64 KiB), then live until the VM ends.
app.MapGet("/console", async (HttpContext context) =>
{
    context.Response.ContentType = "application/octet-stream";
    await context.Response.StartAsync(context.RequestAborted);
    try
    {
        // The headers go now, not with the first output: a quiet VM (a restored one) must not keep a client waiting for them.
        await context.Response.Body.FlushAsync(context.RequestAborted);
        await foreach (var chunk in console.Follow(context.RequestAborted))
        {
            await context.Response.Body.WriteAsync(chunk, context.RequestAborted);
            await context.Response.Body.FlushAsync(context.RequestAborted);
        }
    }
    catch (Exception e) when (e is OperationCanceledException or IOException)
    {
        // the client went away
    }
});
// Keystrokes for the guest's console, as raw bytes: at most ConsoleInputLimit a request (vireod's
// limit), all read and refused above it before a byte goes to the guest.
app.MapPut("/console/input", async (HttpRequest request) =>
{
    string tooLarge = $"console input is limited to {ConsoleInputLimit} bytes a request: send more in several";
    if (request.ContentLength > ConsoleInputLimit)
    {
        return Results.Json(new ApiError(tooLarge), VmmJson.Default.ApiError, statusCode: 413);
    }
    byte[]? body;
    try
    {
        body = await BodyReader.ReadBounded(request.Body, ConsoleInputLimit, request.HttpContext.RequestAborted);
        if (body is null)
        {
            return Results.Json(new ApiError(tooLarge), VmmJson.Default.ApiError, statusCode: 413);
        }
    }
    catch (Exception e) when (e is IOException or OperationCanceledException or BadHttpRequestException)
    {
        return Results.Json(new ApiError($"the request body could not be read: {e.Message}"), VmmJson.Default.ApiError, statusCode: 400);
    }
    string? error = await session.SendConsoleInput(body, request.HttpContext.RequestAborted);
    return error is null ? Results.NoContent() : Results.Json(new ApiError(error), VmmJson.Default.ApiError, statusCode: 400);
});
app.MapFallback(() => Results.Json(new ApiError("no such resource"), VmmJson.Default.ApiError, statusCode: 404));

try
{
    await app.StartAsync();
}
catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or UnauthorizedAccessException)
{
    // What the checks above cannot foresee (no permission in the directory, a race): one line, not a trace.
    Console.Error.WriteLine($"vireo-vmm: --api-sock {socketPath}: cannot listen there: {(e.InnerException ?? e).Message.ReplaceLineEndings(" ")}");
    return 2;
}
await app.WaitForShutdownAsync();
File.Delete(socketPath);
return exitCode;

// Reads a JSON body into T (BodyReader: malformed, unknown, missing or mistyped fields are
// refused in the API's own words), applies it, and answers 204, or 400 with the reason.
static async Task<IResult> Put<T>(HttpRequest request, JsonTypeInfo<T> type, string what, Func<T, string?> apply)
{
    byte[]? body;
    try
    {
        body = await BodyReader.ReadBounded(request.Body, MaxBody, request.HttpContext.RequestAborted);
    }
    catch (Exception e) when (e is IOException or OperationCanceledException or BadHttpRequestException)
    {
        return Results.Json(new ApiError("body: the request body could not be read"), VmmJson.Default.ApiError, statusCode: 400);
    }
    if (body is null)
    {
        return Results.Json(new ApiError($"body: larger than {MaxBody} bytes"), VmmJson.Default.ApiError, statusCode: 400);
    }
    string? error = BodyReader.TryRead(body, type, what, out var value) ?? apply(value!);
    return error is null ? Results.NoContent() : Results.Json(new ApiError(error), VmmJson.Default.ApiError, statusCode: 400);
}

partial class Program
{
    /// <summary>No configuration body comes near this; a larger one is refused before it is parsed.</summary>
    private const int MaxBody = 64 * 1024;

    /// <summary>The most console input one request may carry, as vireod allows.</summary>
    private const int ConsoleInputLimit = 64 << 10;

    /// <summary>Why <paramref name="path"/> cannot be this process's API socket (words after the path), or null.</summary>
    private static string? SocketPathProblem(string path)
    {
        if (Vireo.Interop.UnixSocket.BindProblem(path) is { } problem)
        {
            return problem;
        }
        string? parent = Path.GetDirectoryName(Path.GetFullPath(path));
        return parent is null || Directory.Exists(parent) ? null : $"cannot be made: its directory {parent} does not exist";
    }
}
