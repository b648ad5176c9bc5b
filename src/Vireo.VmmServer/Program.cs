using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Vireo.Api;
using Vireo.VmmServer;
using Vireo.VmmServer.Http;

// vireo-vmm --api-sock PATH [--restore snapshot_path=FILE,mem_file_path=FILE[,resume_vm=on]]: one
// VM, configured and driven over a REST API on a Unix socket, in the manner of Firecracker. The
// guest's serial console is this process's stdout. The process exits when the VM has ended, with
// the status `vireo run` would give (0: powered off or stopped).
const string Usage = "usage: vireo-vmm [--jail uid=U,gid=G,nofile=N,nproc=N] --api-sock PATH [--status-file FILE] [--restore snapshot_path=FILE,mem_file_path=FILE[,resume_vm=on]] [--no-seccomp] [--seccomp-check vmm|api|vcpu|io[:ioctl]]";
string? socketPath = null, statusFile = null, seccompCheck = null;
bool seccomp = true;
SnapshotLoadParams? restore = null;
Vireo.Sandbox.JailOption? jail = null;
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
    else if (args[i] == "--jail" && i + 1 < args.Length)
    {
        // Started by Jail.Start inside its namespaces and root, still with root's privilege, which is
        // spent below before anything else is read.
        jail = Vireo.Sandbox.JailOption.Parse(args[++i], out string? wrong);
        if (jail is null)
        {
            Console.Error.WriteLine($"vireo-vmm: --jail: {wrong}");
            return 2;
        }
    }
    else if (args[i] == "--no-seccomp")
    {
        seccomp = false; // Firecracker's --no-seccomp: no system call filter on any thread
    }
    else if (args[i] == "--seccomp-check" && i + 1 < args.Length)
    {
        // A check of the filters in place: a thread of this kind calls getppid(2), which no list
        // allows, once its filter is on, and the process must end by SIGSYS naming it. With
        // ":ioctl", it makes an ioctl its list does not name instead (KVM_RUN; KVM_CREATE_VM on a vCPU).
        seccompCheck = args[++i];
        string kind = seccompCheck.EndsWith(":ioctl", StringComparison.Ordinal) ? seccompCheck[..^":ioctl".Length] : seccompCheck;
        if (!Vireo.Sandbox.Seccomp.SeccompPolicy.Kinds.Contains(kind))
        {
            Console.Error.WriteLine($"vireo-vmm: --seccomp-check: '{seccompCheck}' is not a thread kind (vmm, api, vcpu or io, each with :ioctl or without)");
            return 2;
        }
    }
    else if (args[i] == "--restore" && i + 1 < args.Length)
    {
        // Cloud Hypervisor's --restore: the VM comes back from a snapshot before the API starts,
        // so a restore costs the process's start and the load, not the API server's start too.
        if (RestoreOption.Parse(args[++i], out restore) is { } wrong)
        {
            Console.Error.WriteLine($"vireo-vmm: --restore: {wrong}");
            return 2;
        }
    }
    else
    {
        Console.Error.WriteLine($"vireo-vmm: unknown argument '{args[i]}' ({Usage})");
        return 2;
    }
}
if (jail is not null)
{
    try
    {
        jail.Enter();
    }
    catch (Vireo.Sandbox.SandboxException e)
    {
        Console.Error.WriteLine($"vireo-vmm: {e.Message}");
        return 2;
    }
}
if (socketPath is null)
{
    Console.Error.WriteLine($"vireo-vmm: {Usage}");
    return 2;
}
if (SocketPathProblem(socketPath) is { } problem)
{
    Console.Error.WriteLine($"vireo-vmm: --api-sock {socketPath} {problem}");
    return 2;
}
if (seccompCheck is not null && !seccomp)
{
    Console.Error.WriteLine("vireo-vmm: --seccomp-check needs the filters that --no-seccomp leaves off");
    return 2;
}
// The system call filters, on every thread before a request or a snapshot is read, and on the
// vCPUs' and the event loop's threads as they start (src/Vireo.Sandbox/Seccomp).
if (seccomp && Vireo.VmmServer.SeccompSetup.Enable(seccompCheck) is { } unfiltered)
{
    Console.Error.WriteLine($"vireo-vmm: {unfiltered}");
    return 2;
}
Vireo.Interop.Libc.RemoveStaleSocket(socketPath); // a stale socket from an earlier process; nothing else is ever replaced

// fd 1 is written with write(2), as `vireo run` writes it directly: .NET's Console stream would
// set up the terminal (a signal thread, handlers, ioctls) at the guest's first byte, on the vCPU's thread.
var console = new ConsoleLog();
var session = new VmSession(b =>
{
    StdoutByte(b);
    console.Write(b);
});
int exitCode = 0;
// Work on the VM (building it, a snapshot, a migration) runs on this thread, Firecracker's vmm
// thread, in the order it was asked for; the API's thread parses requests and answers, and does
// nothing else (each has its own seccomp list: vmm and api).
var control = new System.Collections.Concurrent.BlockingCollection<Action>();
// The API: a small HTTP/1.1 server on the Unix socket (Http/HttpServer.cs), routes as Firecracker's.
var api = new HttpServer(message => Error(message))
{
    StartThread = Vireo.Vmm.VmmThreads.Starter,
    OnThreadStart = () => Vireo.Vmm.VmmThreads.OnStart?.Invoke("api"),
    OnStopped = control.CompleteAdding,
};
// Runs work on this (the main) thread, for a handler on the API's: its answer comes back there.
Task<T> Control<T>(Func<T> work)
{
    var done = new TaskCompletionSource<T>();
    try
    {
        control.Add(() =>
        {
            try
            {
                done.SetResult(work());
            }
            catch (Exception e)
            {
                done.SetException(e);
            }
        });
    }
    catch (InvalidOperationException)
    {
        done.SetException(new OperationCanceledException("the VMM is ending"));
    }
    return done.Task;
}
session.Ended += code =>
{
    exitCode = code;
    if (statusFile is not null)
    {
        // "STATUS REASON TEXT": the exit status, why (a StopReason name), and the words for it.
        File.WriteAllText(statusFile + ".tmp", $"{code} {session.LastReason} {session.Info().LastOutcome}\n");
        File.Move(statusFile + ".tmp", statusFile, overwrite: true);
    }
    console.Close();
    if (session.LastReason == nameof(Vireo.Vmm.StopReason.Migrated))
    {
        // The VM went on elsewhere: its migration's last figures (the downtime) are read once
        // before the API goes, or not at all after 2 s.
        session.MigratedStatusRead.Wait(TimeSpan.FromSeconds(2));
    }
    api.Stop();
};
if (restore is not null && session.LoadSnapshot(restore) is { } refused)
{
    Console.Error.WriteLine($"vireo-vmm: --restore: {refused}");
    return 2;
}

api.Map("PUT", "/boot-source", x => Put(x, Control, VmmJson.Default.BootSource, "boot-source", session.SetBootSource));
api.Map("PUT", "/machine-config", x => Put(x, Control, VmmJson.Default.MachineConfig, "machine-config", session.SetMachineConfig));
api.Map("PUT", "/drives/{id}", x => Put(x, Control, VmmJson.Default.Drive, "drive", d => session.PutDrive(x.RouteValues[0], d)));
api.Map("PUT", "/network-interfaces/{id}", x => Put(x, Control, VmmJson.Default.NetworkInterface, "network-interface", n => session.PutNetworkInterface(x.RouteValues[0], n)));
api.Map("PUT", "/vsock", x => Put(x, Control, VmmJson.Default.Vsock, "vsock", session.SetVsock));
api.Map("PUT", "/actions", x => Put(x, Control, VmmJson.Default.InstanceAction, "actions", a => session.Act(a.ActionType)));
api.Map("GET", "/vm", x => x.Respond(200, JsonSerializer.SerializeToUtf8Bytes(session.Info(), VmmJson.Default.VmInfo)));
api.Map("PATCH", "/vm", x => Put(x, Control, VmmJson.Default.VmStatePatch, "vm", p => session.PatchState(p.State)));
api.Map("PUT", "/snapshot/create", x => Put(x, Control, VmmJson.Default.SnapshotCreateParams, "snapshot/create", session.CreateSnapshot));
api.Map("PUT", "/snapshot/load", x => Put(x, Control, VmmJson.Default.SnapshotLoadParams, "snapshot/load", session.LoadSnapshot));
api.Map("PUT", "/migration/receive", x => Put(x, Control, VmmJson.Default.MigrationReceiveParams, "migration/receive", session.ReceiveMigration));
api.Map("PUT", "/migration/send", x => Put(x, Control, VmmJson.Default.MigrationSendParams, "migration/send", session.SendMigration));
api.Map("GET", "/migration", x => x.Respond(200, JsonSerializer.SerializeToUtf8Bytes(session.MigrationInfo(), VmmJson.Default.MigrationInfo)));
// The console: what the guest wrote so far (the last 64 KiB), then live until the VM ends. The
// headers go at once, not with the first output: a quiet VM (a restored one) must not keep a client waiting for them.
api.Map("GET", "/console", async x =>
{
    await using var stream = await x.StartStream("application/octet-stream");
    await foreach (var chunk in console.Follow(x.Aborted))
    {
        await stream.WriteAsync(chunk, x.Aborted);
    }
});
// Keystrokes for the guest's console, as raw bytes: at most ConsoleInputLimit a request (vireod's
// limit), all read and refused above it before a byte goes to the guest.
api.Map("PUT", "/console/input", async x =>
{
    string tooLarge = $"console input is limited to {ConsoleInputLimit} bytes a request: send more in several";
    if (x.Head.ContentLength > ConsoleInputLimit)
    {
        await x.Respond(413, Error(tooLarge));
        return;
    }
    byte[]? body;
    try
    {
        body = await BodyReader.ReadBounded(x.Body, ConsoleInputLimit, x.Aborted);
    }
    catch (IOException e)
    {
        await x.Respond(400, Error($"the request body could not be read: {e.Message}"));
        return;
    }
    if (body is null)
    {
        await x.Respond(413, Error(tooLarge));
        return;
    }
    // A byte at a time as the guest's UART or console queue has room: the bytes go in on the
    // VMM's thread (its interrupt is a KVM call), and this one waits 5 ms between tries.
    var pending = body.AsMemory();
    string? error = null;
    while (error is null && pending.Length > 0)
    {
        var chunk = pending;
        (int taken, error) = await Control(() => session.TakeConsoleInput(chunk.Span));
        pending = pending[taken..];
        if (error is null && pending.Length > 0)
        {
            await api.Loop.Delay(TimeSpan.FromMilliseconds(5), x.Aborted); // the guest has not drained its UART yet (or is between boots)
        }
    }
    await (error is null ? x.Respond(204) : x.Respond(400, Error(error)));
});

try
{
    api.Start(socketPath);
}
catch (Exception e) when (e is IOException or Vireo.Interop.SysError or UnauthorizedAccessException)
{
    // What the checks above cannot foresee (no permission in the directory, a race): one line, not a trace.
    Console.Error.WriteLine($"vireo-vmm: --api-sock {socketPath}: cannot listen there: {e.Message.ReplaceLineEndings(" ")}");
    return 2;
}
foreach (var work in control.GetConsumingEnumerable())
{
    work(); // until the API has stopped (a restored VM that ended before this point has stopped it already)
}
File.Delete(socketPath);
return exitCode;

// Reads a JSON body into T (BodyReader: malformed, unknown, missing or mistyped fields are
// refused in the API's own words), applies it on the VMM's thread, and answers 204, or 400 with the reason.
static async Task Put<T>(HttpExchange x, Func<Func<string?>, Task<string?>> control, JsonTypeInfo<T> type, string what, Func<T, string?> apply)
{
    if (x.Head.ContentLength > MaxBody)
    {
        await x.Respond(413, Error($"body: larger than {MaxBody} bytes")); // by its length alone: never asked for, never read
        return;
    }
    byte[]? body;
    try
    {
        body = await BodyReader.ReadBounded(x.Body, MaxBody, x.Aborted);
    }
    catch (IOException e)
    {
        await x.Respond(400, Error($"body: the request body could not be read: {e.Message}"));
        return;
    }
    if (body is null)
    {
        await x.Respond(413, Error($"body: larger than {MaxBody} bytes"));
        return;
    }
    string? error = BodyReader.TryRead(body, type, what, out var value) ?? await control(() => apply(value!));
    await (error is null ? x.Respond(204) : x.Respond(400, Error(error)));
}

// One byte of the guest's console to stdout; a reader that went away (EPIPE) loses it, as
// .NET's console stream would, and the console log and GET /console go on.
static void StdoutByte(byte b)
{
    while (Vireo.Interop.Libc.Write(1, new ReadOnlySpan<byte>(in b)) < 0)
    {
        int errno = Vireo.Interop.Libc.LastErrno;
        if (errno == Vireo.Interop.Libc.EAGAIN)
        {
            Thread.Sleep(1); // a non-blocking stdout that is full: wait for its reader
        }
        else if (errno != Vireo.Interop.Libc.EINTR)
        {
            return;
        }
    }
}

static byte[] Error(string message) => JsonSerializer.SerializeToUtf8Bytes(new ApiError(message), VmmJson.Default.ApiError);

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
