using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Vireo.Api;
using Vireo.Api.Definitions;
using Vireo.Interop;

namespace Vireo.Daemon;

/// <summary>
/// Live migration between two vireod (xl migrate): the source asks the destination to expect the
/// VM (POST /migrations/incoming: its definition, and the files its VMM runs on their fd numbers);
/// the destination defines it as "incoming", spawns a fresh VMM with those files on those numbers
/// and has it listen on a unix socket in its state directory; the source's VMM sends the VM there
/// (PUT /migration/send). Done: the destination runs it, the source undefines it (the VM moved).
/// Not done: the source's VM runs on, and the destination drops what it made (DELETE /migrations/incoming/NAME).
/// </summary>
internal sealed partial class Supervisor
{
    /// <summary>The VMs arriving here, with the VMM that waits for each.</summary>
    private readonly ConcurrentDictionary<string, Attached> _incoming = new();

    /// <summary>The VMs leaving from here, with their VMM and the guest's RAM in bytes.</summary>
    private readonly ConcurrentDictionary<string, (Attached Vmm, long Total)> _outgoing = new();

    /// <summary>How long an incoming VM waits for its source to start sending before it is dropped.</summary>
    private static readonly TimeSpan IncomingConnectLimit = TimeSpan.FromSeconds(120);

    /// <summary>How long the source waits for the destination to report the VM running once its VMM sent it.</summary>
    private static readonly TimeSpan ArrivalLimit = TimeSpan.FromSeconds(20);

    public bool IsIncoming(string name) => _incoming.ContainsKey(name);

    /// <summary>The migration of a VM leaving from here, as its VMM reports it; null when none is under way.</summary>
    private OperationProgress? MigrationProgressOf(string name)
    {
        if (!_outgoing.TryGetValue(name, out var job))
        {
            return null;
        }
        var info = job.Vmm.Api.Migration(TimeSpan.FromSeconds(2));
        return new OperationProgress("migrate", info?.BytesSent ?? 0, job.Total, info);
    }

    /// <summary>Why the request cannot be a migration, in its field's name, or null; <paramref name="socket"/> is the destination's socket.</summary>
    public static string? CheckMigrate(MigrateRequest r, out string socket)
    {
        string d = r.Destination;
        socket = d.StartsWith("unix:", StringComparison.Ordinal) ? d[5..] : d;
        if (d.StartsWith("http://", StringComparison.Ordinal) || d.StartsWith("https://", StringComparison.Ordinal) || d.StartsWith("tcp:", StringComparison.Ordinal))
        {
            return $"destination: '{d}': only a vireod on this host is supported, named by its API socket (unix:PATH)";
        }
        if (!Path.IsPathFullyQualified(socket))
        {
            return $"destination: '{d}' is not unix:PATH with an absolute PATH (the other vireod's --socket)";
        }
        if (Libc.KindAt(socket) is not { } kind)
        {
            return $"destination: no socket at {socket} (is the other vireod running? its --socket names it)";
        }
        if (kind is not (FileKind.Socket or FileKind.Symlink))
        {
            return $"destination: {socket} is not a socket";
        }
        if (r.DowntimeMs is < 1 or > 3_600_000)
        {
            return $"downtime_ms: {r.DowntimeMs} is outside 1..3600000";
        }
        if (r.TimeoutS is < 1 or > 86_400 * 7)
        {
            return $"timeout_s: {r.TimeoutS} is outside 1..604800";
        }
        if (r.TimeoutStrategy is not (MigrationSendParams.Cancel or MigrationSendParams.Force))
        {
            return $"timeout_strategy: '{r.TimeoutStrategy}' is not one of {MigrationSendParams.Cancel}, {MigrationSendParams.Force}";
        }
        return null;
    }

    /// <summary>
    /// Moves a running VM to the vireod at the request's destination; once it runs there, it is
    /// undefined here. A refusal or failure at any step leaves it running here, and the destination as it was.
    /// </summary>
    public (MigrationResult? Result, Refusal? Refused) Migrate(string name, MigrateRequest r)
    {
        if (CheckMigrate(r, out string socket) is { } bad)
        {
            return (null, new Refusal(400, bad));
        }
        lock (LockFor(name))
        {
            if (Snapshotable(name, "migrated") is { } refused)
            {
                return (null, refused);
            }
            var vm = _store.Get(name)!;
            if (vm.State == DomainState.Paused)
            {
                return (null, new Refusal(409, $"'{name}' is paused: resume it to migrate it"));
            }
            var a = _running[name];
            using var dest = UnixSocketHttp.Client(socket, TimeSpan.FromSeconds(60));
            string there = $"the vireod at {socket}";

            // 1. The destination defines the VM and has a VMM wait for it.
            var incoming = new IncomingMigration(name, vm.Definition, vm.Run!.Definition, vm.Run.Fds, vm.Tenant);
            var (status, body) = Call(dest, HttpMethod.Post, "migrations/incoming", JsonSerializer.Serialize(incoming, DaemonJson.Default.IncomingMigration));
            if (status is null)
            {
                return (null, new Refusal(409, $"destination: {there} did not answer: {body}"));
            }
            if (status is not (>= 200 and < 300))
            {
                return (null, new Refusal(status is 400 ? 400 : 409, $"destination: {there} refused '{name}': {FaultOf(body)}"));
            }
            IncomingMigrationAnswer answer;
            try
            {
                answer = JsonSerializer.Deserialize(body, DaemonJson.Default.IncomingMigrationAnswer)!;
            }
            catch (JsonException e)
            {
                Call(dest, HttpMethod.Delete, $"migrations/incoming/{Uri.EscapeDataString(name)}");
                return (null, new Refusal(409, $"destination: {there} answered what is not a receiver: {e.Message}"));
            }

            // 2. Its VMM sends the VM there; its progress is read meanwhile (the last, for the account at the end).
            _outgoing[name] = (a, vm.Run.Definition.MemoryMib << 20);
            _events.Publish(name, "migrating", DomainState.Running, $"to {socket}");
            var clock = Stopwatch.StartNew();
            MigrationInfo? last = null;
            using var done = new CancellationTokenSource();
            var watching = Task.Run(() =>
            {
                while (!done.IsCancellationRequested)
                {
                    if (a.Api.Migration(TimeSpan.FromSeconds(1)) is { } now && now.State != MigrationStatusNone)
                    {
                        last = now;
                    }
                    done.Token.WaitHandle.WaitOne(100);
                }
            });
            string? error;
            // A sandboxed VMM reaches no socket but its own directory's: vireod carries its stream to the receiver.
            MigrationRelay? relay = null;
            try
            {
                string sendTo = answer.ReceiverUrl;
                if (_sandboxFirstUid is not null)
                {
                    relay = MigrationRelay.Start(Path.Combine(VmDir(name), "migration-out.sock"), SandboxUid(name),
                        answer.ReceiverUrl.StartsWith("unix:", StringComparison.Ordinal) ? answer.ReceiverUrl[5..] : answer.ReceiverUrl);
                    sendTo = "unix:" + relay.Path;
                }
                error = a.Api.PutLong("migration/send", JsonSerializer.Serialize(new MigrationSendParams(sendTo, r.DowntimeMs, r.TimeoutS, r.TimeoutStrategy, Local: false),
                    VmmJson.Default.MigrationSendParams));
                if (error is null)
                {
                    _destroying[name] = ($"migrated to {socket}", DomainState.ShutOff); // its VMM ends now: no on_poweroff applies
                    if (a.Api.Migration(TimeSpan.FromSeconds(2)) is { State: "Completed" } final) // the VMM waits 2 s for this read before it exits
                    {
                        last = final; // the downtime, if the VMM answers before it exits
                    }
                }
            }
            catch (Exception e) when (e is IOException or SysError or System.Net.Sockets.SocketException)
            {
                error = $"its stream could not be carried to the receiver: {e.Message}";
            }
            finally
            {
                relay?.Dispose();
                done.Cancel();
                watching.Wait();
                _outgoing.TryRemove(name, out _);
            }
            clock.Stop();

            if (error is not null && !Moved(a, dest, name))
            {
                // Not sent: the VM runs on here, and the destination drops what it made for it.
                var (dropped, why) = Call(dest, HttpMethod.Delete, $"migrations/incoming/{Uri.EscapeDataString(name)}");
                string cleanup = dropped is (>= 200 and < 300) or 404 ? "" : $" ({there} could not be told to drop it: {(dropped is null ? why : FaultOf(why))})";
                _events.Publish(name, "migration-failed", _store.Get(name)?.State ?? DomainState.Running, error + cleanup);
                return (null, new Refusal(409, $"'{name}' was not migrated (it runs on here): {error}{cleanup}"));
            }
            _destroying[name] = ($"migrated to {socket}", DomainState.ShutOff);

            // 3. It runs there: here, its VMM ends and it is undefined (xl's domain moves).
            WaitForEnd(name, TimeSpan.FromSeconds(10));
            var (arrived, seen) = Arrival(dest, name);
            _store.Undefine(name);
            _committed.TryRemove(name, out _);
            if (Directory.Exists(VmDir(name)))
            {
                Directory.Delete(VmDir(name), recursive: true);
            }
            double? downtime = last?.DowntimeMs;
            _events.Publish(name, "migrated", DomainState.ShutOff,
                $"to {socket} in {clock.Elapsed.TotalMilliseconds:0} ms{(downtime is { } d ? $", downtime {d:0.#} ms" : "")}{(arrived is null ? $"; but {there} does not report it running (it is {seen} there)" : "")}");
            return (new MigrationResult(name, socket, arrived?.State ?? seen, arrived?.Pid, Math.Round(clock.Elapsed.TotalMilliseconds, 1),
                downtime is { } dt ? Math.Round(dt, 1) : null, last?.BytesSent ?? 0, last?.Round ?? 0), null);
        }
    }

    private const string MigrationStatusNone = "None";

    /// <summary>
    /// After a send that did not say it was done: whether the VM left anyway (its VMM ended or says
    /// Migrated, and the destination runs it). Then it must not be called off there: that is its only copy.
    /// </summary>
    private bool Moved(Attached a, HttpClient dest, string name)
    {
        bool alive = ProcessStat.IsAlive(a.Pid, a.StartTime);
        if (alive && a.Api.Info(TimeSpan.FromSeconds(2)) is { } info && info.State != VmState.Migrated)
        {
            return false;
        }
        return Arrival(dest, name).Vm is not null;
    }

    /// <summary>
    /// The VM as the destination reports it once running there, within <see cref="ArrivalLimit"/>;
    /// else null, and the state it was last seen in there ("gone" when it has no such VM, "unknown" when it does not answer).
    /// </summary>
    private static (VmSummary? Vm, string Seen) Arrival(HttpClient dest, string name)
    {
        var deadline = DateTime.UtcNow + ArrivalLimit;
        string seen = "unknown";
        while (true)
        {
            var (status, body) = Call(dest, HttpMethod.Get, $"vms/{Uri.EscapeDataString(name)}");
            if (status == 200)
            {
                try
                {
                    var vm = JsonSerializer.Deserialize(body, DaemonJson.Default.VmSummary)!;
                    if (vm.State is DomainState.Running or DomainState.Paused)
                    {
                        return (vm, vm.State);
                    }
                    seen = vm.State;
                }
                catch (JsonException)
                {
                    return (null, "unknown");
                }
            }
            else if (status is not null)
            {
                return (null, "gone"); // dropped there: it did not arrive
            }
            if (DateTime.UtcNow > deadline)
            {
                return (null, seen);
            }
            Thread.Sleep(100);
        }
    }

    /// <summary>One request to another vireod: (status, body), or (null, why) when it did not answer.</summary>
    private static (int? Status, string Body) Call(HttpClient client, HttpMethod method, string path, string? json = null)
    {
        try
        {
            using var request = new HttpRequestMessage(method, path);
            if (json is not null)
            {
                request.Content = new StringContent(json, Encoding.UTF8, "application/json");
            }
            using var response = client.Send(request);
            return ((int)response.StatusCode, response.Content.ReadAsStringAsync().GetAwaiter().GetResult());
        }
        catch (Exception e) when (e is HttpRequestException or IOException or TaskCanceledException)
        {
            return (null, e.InnerException?.Message ?? e.Message);
        }
    }

    private static string FaultOf(string body)
    {
        try
        {
            return JsonSerializer.Deserialize(body, DaemonJson.Default.ApiError)?.FaultMessage ?? body;
        }
        catch (JsonException)
        {
            return body;
        }
    }

    /// <summary>
    /// The destination's side: defines the VM as "incoming", spawns a VMM with its files on the fd
    /// numbers they have in the source's, and has it listen for the VM. Answers where the source is to send it.
    /// </summary>
    public (IncomingMigrationAnswer? Answer, Refusal? Refused) Incoming(IncomingMigration m)
    {
        string name = m.Name;
        if (DefinitionReader.CheckName(name) is { } badName)
        {
            return (null, new Refusal(400, $"name: {badName}"));
        }
        if (_imageDirsOf(m.Tenant).Count == 0)
        {
            return (null, new Refusal(409, $"tenant: '{m.Tenant}' is no tenant of this vireod (vireo tenant add {m.Tenant})"));
        }
        foreach (var (field, def) in new[] { ("definition", m.Definition), ("running", m.Running) })
        {
            if (def.Name != name)
            {
                return (null, new Refusal(400, $"{field}.name: '{def.Name}' differs from name '{name}'"));
            }
            var parsed = DefinitionReader.Parse(JsonSerializer.Serialize(def, DaemonJson.Default.VmDefinition));
            if (parsed.Definition is null)
            {
                return (null, new Refusal(400, $"{field}: invalid definition: {parsed.ErrorText}"));
            }
            if (ImagePolicy.Check(def, _imageDirsOf(m.Tenant)) is { } refusedImage)
            {
                return (null, new Refusal(400, $"{field}: {refusedImage} (on this vireod)"));
            }
        }
        var fields = ImagePolicy.Paths(m.Running).Select(p => p.Field).ToHashSet();
        if (m.Fds.ContainsKey(TapField(0)))
        {
            fields.UnionWith(Enumerable.Range(0, m.Running.Nets?.Length ?? 0).Select(TapField)); // a sandboxed VMM's TAPs, handed over open
        }
        if (!fields.SetEquals(m.Fds.Keys))
        {
            return (null, new Refusal(400, $"fds: names {string.Join(", ", m.Fds.Keys.Order())}, but running's files are {string.Join(", ", fields.Order())}"));
        }
        if (m.Fds.Values.Any(n => n is < 3 or > 65535) || m.Fds.Values.Distinct().Count() != m.Fds.Count)
        {
            return (null, new Refusal(400, "fds: each file needs its own number in 3..65535"));
        }
        lock (LockFor(name))
        {
            if (!_store.Define(m.Definition, m.Tenant))
            {
                return (null, new Refusal(409, $"name: a VM named '{name}' is already defined here"));
            }
            if (Directory.Exists(VmDir(name)))
            {
                Directory.Delete(VmDir(name), recursive: true);
            }
            if (Admit(name, m.Running.MemoryMib) is { } refused)
            {
                _store.Undefine(name);
                return (null, new Refusal(409, refused));
            }
            _events.Publish(name, "defined", DomainState.ShutOff, "arriving from another vireod");
            string receiver = "unix:" + Path.Combine(VmDir(name), "migration.sock");
            string? failed = Launch(name, m.Running, m.Fds, (api, _) => api.Put("migration/receive",
                JsonSerializer.Serialize(new MigrationReceiveParams(receiver), VmmJson.Default.MigrationReceiveParams)), "incoming", "waiting for its RAM and state", incoming: true);
            if (failed is not null)
            {
                _committed.TryRemove(name, out _);
                _store.Undefine(name);
                if (Directory.Exists(VmDir(name)))
                {
                    Directory.Delete(VmDir(name), recursive: true);
                }
                _events.Publish(name, "undefined", DomainState.ShutOff, "it could not be received");
                return (null, new Refusal(409, $"'{name}' cannot be received here: {failed}"));
            }
            var a = _incoming[name];
            new Thread(() => WatchIncoming(name, a)) { IsBackground = true, Name = $"incoming {name}" }.Start();
            return (new IncomingMigrationAnswer(name, receiver), null);
        }
    }

    /// <summary>The source called it off: the waiting VMM ends and the definition goes. Null when done.</summary>
    public Refusal? AbortIncoming(string name)
    {
        lock (LockFor(name))
        {
            if (_incoming.TryGetValue(name, out var a))
            {
                DropIncoming(name, a, "migration-aborted", "the source called it off");
                return null;
            }
            return _store.Get(name) is { } vm
                ? new Refusal(409, $"'{name}' is {vm.State} here, not arriving: nothing to call off")
                : new Refusal(404, $"no VM named '{name}' is arriving");
        }
    }

    /// <summary>Watches a VMM waiting for a VM: running, it is the VM's; ended, failed or never reached, it and the definition go.</summary>
    private void WatchIncoming(string name, Attached a)
    {
        var connectBy = DateTime.UtcNow + IncomingConnectLimit;
        while (!_disposed)
        {
            Thread.Sleep(100);
            if (!_incoming.TryGetValue(name, out var now) || now != a)
            {
                return; // called off
            }
            if (!ProcessStat.IsAlive(a.Pid, a.StartTime))
            {
                DropIncoming(name, a, "migration-failed", $"the VMM receiving it ended: {VmmLauncher.Tail(Path.Combine(a.Dir, "vmm.log"))}");
                return;
            }
            switch (a.Api.Info(TimeSpan.FromSeconds(2))?.State)
            {
                case VmState.Running or VmState.Paused:
                    Arrived(name, a);
                    return;
                case VmState.NotStarted: // the receive failed; the VMM went back to waiting for a configuration
                    DropIncoming(name, a, "migration-failed", $"the migration did not complete: {LastLine(Path.Combine(a.Dir, "vmm.log"))}");
                    return;
                case VmState.Receiving when DateTime.UtcNow > connectBy && (a.Api.Migration(TimeSpan.FromSeconds(2))?.BytesSent ?? 0) == 0:
                    DropIncoming(name, a, "migration-failed", $"no source sent it within {IncomingConnectLimit.TotalSeconds:0} s");
                    return;
            }
        }
    }

    private static string LastLine(string file) =>
        VmmLauncher.Tail(file).Split('\n', StringSplitOptions.RemoveEmptyEntries).LastOrDefault() ?? "(no log)";

    private void Arrived(string name, Attached a)
    {
        lock (LockFor(name))
        {
            if (!_incoming.TryRemove(new KeyValuePair<string, Attached>(name, a)))
            {
                return;
            }
            _running[name] = a;
            _store.SetRunning(name, a.Pid, a.StartTime);
            _events.Publish(name, "migrated-in", DomainState.Running, $"pid {a.Pid}");
        }
    }

    private void DropIncoming(string name, Attached a, string evt, string why)
    {
        lock (LockFor(name))
        {
            if (!_incoming.TryRemove(new KeyValuePair<string, Attached>(name, a)))
            {
                return;
            }
            VmmLauncher.KillAndWait(a.Pid);
            a.Api.Dispose();
            _committed.TryRemove(name, out _);
            _store.Undefine(name);
            if (Directory.Exists(VmDir(name)))
            {
                Directory.Delete(VmDir(name), recursive: true);
            }
            _events.Publish(name, evt, DomainState.ShutOff, why);
        }
    }
}
