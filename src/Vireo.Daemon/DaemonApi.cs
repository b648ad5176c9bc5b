using System.Net.ServerSentEvents;
using System.Text.Json;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.AspNetCore.OpenApi;
using Microsoft.Net.Http.Headers;
using Microsoft.OpenApi;
using Vireo.Api;
using Vireo.Api.Definitions;
using Vireo.Daemon.Access;

namespace Vireo.Daemon;

/// <summary>
/// vireod's REST API: VM definitions and lifecycle, the console, logs, the lifecycle event stream
/// (server-sent events), and the OpenAPI document that describes all of it (GET /openapi/v1.json).
/// Every refusal is a 4xx with {"fault_message"} that says why; nothing a client sends stops the daemon.
/// </summary>
internal static class DaemonApi
{
    public static void AddServices(IServiceCollection services)
    {
        services.ConfigureHttpJsonOptions(o =>
        {
            o.SerializerOptions.PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower;
            o.SerializerOptions.TypeInfoResolverChain.Insert(0, DaemonJson.Default);
        });
        services.AddOpenApi(o => o.AddDocumentTransformer((document, _, _) =>
        {
            document.Info = new OpenApiInfo
            {
                Title = "vireod",
                Version = "1",
                Description = "Vireo's management daemon: VMs defined once and started many times, each in its own VMM process. " +
                    "Served on a Unix socket, and on TCP to clients that send `Authorization: Bearer TOKEN`.",
            };
            return Task.CompletedTask;
        }));
    }

    public static void Map(WebApplication app, VmStore store, Supervisor supervisor, EventHub events, AccessStore access)
    {
        app.MapOpenApi().Needs(Roles.Viewer);

        app.MapPost("/vms", async (HttpContext context, string? tenant) =>
        {
            var caller = Caller.Of(context);
            if (tenant is not null && tenant != caller.Tenant && !caller.IsAdmin)
            {
                return Fail(403, $"tenant: {caller.User} defines VMs in its own tenant, '{caller.Tenant}', only");
            }
            tenant ??= caller.Tenant;
            if (access.Tenant(tenant) is null)
            {
                return Fail(400, $"tenant: no tenant named '{tenant}'");
            }
            var (def, error) = await ReadDefinition(context.Request, access.ImageDirsOf(tenant));
            if (error is not null)
            {
                return error;
            }
            if (!supervisor.Define(def!, tenant))
            {
                return Fail(409, $"name: a VM named '{def!.Name}' is already defined");
            }
            events.Publish(def!.Name, "defined", DomainState.ShutOff, tenant: tenant);
            return Answer(def.Name, store, supervisor, 201);
        })
        .WithSummary("Define a VM from a JSON or YAML definition (schema: GET /schemas/vm-definition), in the caller's tenant " +
            "(an admin may name another: ?tenant=NAME); its files must lie in that tenant's image directories")
        .Body<VmDefinition>("application/json", "application/yaml")
        .Produces<VmSummary>(201).Produces<ApiError>(400).Produces<ApiError>(403).Produces<ApiError>(409);

        app.MapGet("/vms", (HttpContext context) =>
            {
                var caller = Caller.Of(context);
                return Results.Json(store.All().Where(vm => caller.Sees(vm.Tenant)).Select(vm => ListEntry(vm, supervisor)).ToArray(), DaemonJson.Default.VmListEntryArray);
            })
            .WithSummary("Every defined VM the caller's tenant owns (an admin: every tenant's), in id order").Produces<VmListEntry[]>();

        app.MapGet("/vms/{name}", (string name) => store.Get(name) is { } vm
                ? Results.Json(Summary(vm, supervisor), DaemonJson.Default.VmSummary) : NoSuchVm(name))
            .WithSummary("One VM: its state and its definition").Produces<VmSummary>().Produces<ApiError>(404);

        app.MapPut("/vms/{name}", async (string name, HttpRequest request) =>
        {
            if (store.Get(name) is not { } vm)
            {
                return NoSuchVm(name);
            }
            var (def, error) = await ReadDefinition(request, access.ImageDirsOf(vm.Tenant));
            if (error is not null)
            {
                return error;
            }
            if (def!.Name != name)
            {
                return Fail(400, $"name: '{def.Name}' differs from '{name}': use POST /vms/{name}/rename to rename");
            }
            if (!store.Redefine(def))
            {
                return NoSuchVm(name);
            }
            events.Publish(name, "redefined", store.Get(name)?.State ?? DomainState.ShutOff, supervisor.IsRunning(name) ? "takes effect at the next start" : null);
            return Answer(name, store, supervisor);
        })
        .WithSummary("Replace a VM's definition; a running VM picks it up at its next start")
        .Body<VmDefinition>("application/json", "application/yaml")
        .Produces<VmSummary>().Produces<ApiError>(400).Produces<ApiError>(404);

        app.MapDelete("/vms/{name}", (string name) =>
        {
            string? tenant = store.Get(name)?.Tenant;
            if (supervisor.Undefine(name) is { } refused)
            {
                return Fail(refused.Status, refused.Why);
            }
            events.Publish(name, "undefined", DomainState.ShutOff, tenant: tenant);
            return Results.NoContent();
        })
        .WithSummary("Undefine a VM that is not running").Produces(204).Produces<ApiError>(404).Produces<ApiError>(409);

        foreach (var action in new[] { "start", "pause", "resume", "reboot", "destroy" })
        {
            app.MapPost($"/vms/{{name}}/{action}", (string name) => Lifecycle(name, store, supervisor,
                    () => action == "start" ? supervisor.Start(name) : supervisor.Act(name, action)))
                .WithSummary(action switch
                {
                    "start" => "Start a VM in a new VMM process",
                    "reboot" => "Reset the VM (the guest is not asked)",
                    "destroy" => "Stop the VM at once (no on_* policy applies)",
                    _ => $"{char.ToUpperInvariant(action[0])}{action[1..]} the VM's vCPUs",
                })
                .Produces<VmSummary>().Produces<ApiError>(404).Produces<ApiError>(409);
        }

        app.MapPost("/vms/{name}/shutdown", async (string name, HttpRequest request) =>
        {
            var (body, error) = await ReadOptional(request, DaemonJson.Default.ShutdownRequest, "shutdown", new ShutdownRequest());
            if (error is not null)
            {
                return error;
            }
            if (body!.TimeoutSeconds is < 0 or > 86400)
            {
                return Fail(400, $"timeout_seconds: {body.TimeoutSeconds} is outside 0..86400");
            }
            return Lifecycle(name, store, supervisor, () => supervisor.Shutdown(name, TimeSpan.FromSeconds(body.TimeoutSeconds)), 202);
        })
        .WithSummary("Press the ACPI power button; destroy the VM if it is still running after timeout_seconds (default 60)")
        .Body<ShutdownRequest>("application/json")
        .Produces<VmSummary>(202).Produces<ApiError>(400).Produces<ApiError>(404).Produces<ApiError>(409);

        app.MapPost("/vms/{name}/rename", async (string name, HttpRequest request) =>
        {
            var (body, error) = await ReadOptional(request, DaemonJson.Default.RenameRequest, "rename", null);
            if (error is not null)
            {
                return error;
            }
            if (DefinitionReader.CheckName(body!.NewName) is { } bad)
            {
                return Fail(400, $"new_name: {bad}");
            }
            if (store.Get(name) is null)
            {
                return NoSuchVm(name);
            }
            if (supervisor.Rename(name, body.NewName) is { } refused)
            {
                return Fail(409, refused);
            }
            return Answer(body.NewName, store, supervisor);
        })
        .WithSummary("Rename a VM that is not running").Body<RenameRequest>("application/json")
        .Produces<VmSummary>().Produces<ApiError>(400).Produces<ApiError>(404).Produces<ApiError>(409);

        app.MapPost("/vms/{name}/save", async (string name, HttpContext context) =>
        {
            var (body, error) = await ReadOptional(context.Request, DaemonJson.Default.SaveRequest, "save", null);
            if (error is not null)
            {
                return error;
            }
            if (store.Get(name) is { } vm && !Caller.Of(context).IsAdmin
                && ImagePolicy.CheckPlace("file", body!.File, access.ImageDirsOf(vm.Tenant), existing: false) is { } outside)
            {
                return Fail(400, outside);
            }
            return supervisor.Save(name, body!.File) is { } refused ? Fail(refused.Status, refused.Why) : Answer(name, store, supervisor);
        })
        .WithSummary("Pause the VM, write its state to file and its RAM to file.mem beside it, and end its VMM (xl save); the VM is then 'saved'")
        .Body<SaveRequest>("application/json")
        .Produces<VmSummary>().Produces<ApiError>(400).Produces<ApiError>(404).Produces<ApiError>(409);

        app.MapPost("/restore", async (HttpContext context) =>
        {
            var (body, error) = await ReadOptional(context.Request, DaemonJson.Default.SaveRequest, "restore", null);
            if (error is not null)
            {
                return error;
            }
            var caller = Caller.Of(context);
            if (!caller.IsAdmin && ImagePolicy.CheckPlace("file", body!.File, access.ImageDirsOf(caller.Tenant), existing: true) is { } outside)
            {
                return Fail(400, outside);
            }
            var (name, refused) = supervisor.Restore(body!.File, caller.IsAdmin ? null : caller.Tenant);
            return refused is { } r ? Fail(r.Status, r.Why) : Answer(name!, store, supervisor);
        })
        .WithSummary("Run a saved VM again from its save file, in a fresh VMM, under its name (xl restore)")
        .Body<SaveRequest>("application/json")
        .Produces<VmSummary>().Produces<ApiError>(400).Produces<ApiError>(409);

        app.MapGet("/vms/{name}/progress", (string name) => store.Get(name) is null ? NoSuchVm(name)
                : Results.Json(supervisor.ProgressOf(name), DaemonJson.Default.OperationProgress))
            .WithSummary("The save, snapshot or migration under way (operation null when none): bytes of RAM written or sent so far, of bytes_total; " +
                "migration: the migrating VMM's GET /migration (null when not migrating)")
            .Produces<OperationProgress>().Produces<ApiError>(404);

        app.MapPost("/vms/{name}/migrate", async (string name, HttpRequest request) =>
        {
            var (body, error) = await ReadOptional(request, DaemonJson.Default.MigrateRequest, "migrate", null);
            if (error is not null)
            {
                return error;
            }
            var (result, refused) = supervisor.Migrate(name, body!);
            return refused is { } r ? Fail(r.Status, r.Why) : Results.Json(result!, DaemonJson.Default.MigrationResult);
        })
        .WithSummary("Move a running VM to another vireod on this host (xl migrate): once it runs there it is undefined here; " +
            "if it cannot be moved it runs on here. GET /vms/{name}/progress follows it meanwhile. Admins only")
        .Needs(Roles.Admin)
        .Body<MigrateRequest>("application/json")
        .Produces<MigrationResult>().Produces<ApiError>(400).Produces<ApiError>(404).Produces<ApiError>(409);

        app.MapPost("/migrations/incoming", async (HttpRequest request) =>
        {
            var (body, error) = await ReadOptional(request, DaemonJson.Default.IncomingMigration, "incoming migration", null, limit: 4 * DefinitionReader.MaxLength);
            if (error is not null)
            {
                return error;
            }
            var (answer, refused) = supervisor.Incoming(body!);
            if (refused is { } r)
            {
                return Fail(r.Status, r.Why);
            }
            return Results.Json(answer!, DaemonJson.Default.IncomingMigrationAnswer, statusCode: 201);
        })
        .WithSummary("From another vireod (its POST /vms/{name}/migrate): define a VM that is about to arrive, and have a fresh VMM, " +
            "with the VM's files on the fd numbers they have in the source's, wait for it; answers the receiver_url for the source's VMM. Admins only")
        .Needs(Roles.Admin)
        .Body<IncomingMigration>("application/json")
        .Produces<IncomingMigrationAnswer>(201).Produces<ApiError>(400).Produces<ApiError>(409);

        app.MapDelete("/migrations/incoming/{name}", (string name) =>
                supervisor.AbortIncoming(name) is { } r ? Fail(r.Status, r.Why) : Results.NoContent())
            .WithSummary("From the source vireod: the migration failed; end the waiting VMM and drop the VM's definition. Admins only")
            .Needs(Roles.Admin)
            .Produces(204).Produces<ApiError>(404).Produces<ApiError>(409);

        app.MapGet("/vms/{name}/snapshots", (string name) => supervisor.ListSnapshots(name) is { } list
                ? Results.Json(list, DaemonJson.Default.SnapshotInfoArray) : NoSuchVm(name))
            .WithSummary("The VM's snapshots, oldest first").Produces<SnapshotInfo[]>().Produces<ApiError>(404);

        app.MapPost("/vms/{name}/snapshots", async (string name, HttpRequest request) =>
        {
            var (body, error) = await ReadOptional(request, DaemonJson.Default.SnapshotRequest, "snapshot", new SnapshotRequest());
            if (error is not null)
            {
                return error;
            }
            var (info, refused) = supervisor.CreateSnapshot(name, body!.Name);
            return refused is { } r ? Fail(r.Status, r.Why) : Results.Json(info!, DaemonJson.Default.SnapshotInfo, statusCode: 201);
        })
        .WithSummary("Snapshot a running VM (paused while its RAM is written, then resumed); name defaults to a UTC timestamp")
        .Body<SnapshotRequest>("application/json")
        .Produces<SnapshotInfo>(201).Produces<ApiError>(400).Produces<ApiError>(404).Produces<ApiError>(409);

        app.MapPost("/vms/{name}/snapshots/{snapshot}/revert", (string name, string snapshot) =>
                supervisor.RevertSnapshot(name, snapshot) is { } r ? Fail(r.Status, r.Why) : Answer(name, store, supervisor))
            .WithSummary("End the VM's VMM, if it runs, and run the snapshot in a fresh one (disks are not reverted)")
            .Produces<VmSummary>().Produces<ApiError>(400).Produces<ApiError>(404).Produces<ApiError>(409);

        app.MapDelete("/vms/{name}/snapshots/{snapshot}", (string name, string snapshot) =>
                supervisor.DeleteSnapshot(name, snapshot) is { } r ? Fail(r.Status, r.Why) : Results.NoContent())
            .WithSummary("Delete a snapshot and its files").Produces(204).Produces<ApiError>(400).Produces<ApiError>(404);

        app.MapGet("/vms/{name}/console", async (string name, HttpContext context) =>
        {
            if (supervisor.ApiOf(name) is not { } vmm)
            {
                return store.Get(name) is null ? NoSuchVm(name) : Fail(409, $"'{name}' is not running");
            }
            // vireo-vmm sends its answer's headers with the console's first bytes: a VMM with no output
            // yet (a fresh restore: its history is empty) would hold the client's answer, and a client
            // that types only once attached, until the guest wrote something. So the client's answer
            // starts anyway after a moment.
            var opening = vmm.OpenConsole(context.RequestAborted);
            bool started = false;
            if (await Task.WhenAny(opening, Task.Delay(ConsoleHeadersWait)) != opening)
            {
                context.Response.ContentType = "application/octet-stream";
                await context.Response.StartAsync(context.RequestAborted);
                await context.Response.Body.FlushAsync(context.RequestAborted);
                started = true;
            }
            Stream console;
            try
            {
                console = await opening;
            }
            catch (Exception e) when (e is HttpRequestException or IOException or OperationCanceledException)
            {
                return started ? Results.Empty : Fail(409, $"'{name}': its console could not be opened: {e.Message}");
            }
            await using (console)
            {
                if (!started)
                {
                    context.Response.ContentType = "application/octet-stream";
                    await context.Response.StartAsync(context.RequestAborted);
                    await context.Response.Body.FlushAsync(context.RequestAborted);
                }
                try
                {
                    // Each chunk is flushed, so console bytes reach the client as the guest writes them.
                    var buffer = new byte[4096];
                    int n;
                    while ((n = await console.ReadAsync(buffer, context.RequestAborted)) > 0)
                    {
                        await context.Response.Body.WriteAsync(buffer.AsMemory(0, n), context.RequestAborted);
                        await context.Response.Body.FlushAsync(context.RequestAborted);
                    }
                }
                catch (Exception e) when (e is OperationCanceledException or IOException or HttpRequestException)
                {
                    // the client detached, or the VM ended
                }
            }
            return Results.Empty;
        })
        .WithSummary("The guest's console: the last 64 KiB, then live output until the VM ends (a byte stream)")
        .Produces(200, contentType: "application/octet-stream").Produces<ApiError>(404).Produces<ApiError>(409);

        app.MapPut("/vms/{name}/console/input", async (string name, HttpRequest request) =>
        {
            if (supervisor.ApiOf(name) is not { } vmm)
            {
                return store.Get(name) is null ? NoSuchVm(name) : Fail(409, $"'{name}' is not running");
            }
            // All or nothing: the whole input is read, and refused above the limit, before a byte goes to the guest.
            string tooLarge = $"console input is limited to {ConsoleInputLimit} bytes a request: send more in several";
            if (request.ContentLength > ConsoleInputLimit)
            {
                return Fail(413, tooLarge);
            }
            byte[]? body;
            try
            {
                if ((body = await BodyReader.ReadBounded(request.Body, ConsoleInputLimit, request.HttpContext.RequestAborted)) is null)
                {
                    return Fail(413, tooLarge);
                }
            }
            catch (Exception e) when (e is IOException or OperationCanceledException or BadHttpRequestException)
            {
                return Fail(400, $"the request body could not be read: {e.Message}");
            }
            return await vmm.SendInput(body, request.HttpContext.RequestAborted) is { } error ? Fail(409, error) : Results.NoContent();
        })
        .WithSummary($"Keystrokes for the guest's console (raw bytes, at most {ConsoleInputLimit} a request); answered once the guest has taken them all")
        .Body<byte[]>("application/octet-stream").Produces(204).Produces<ApiError>(404).Produces<ApiError>(409).Produces<ApiError>(413);

        app.MapGet("/vms/{name}/logs", (string name, [Microsoft.AspNetCore.Mvc.FromQuery(Name = "tail_bytes")] long? tailBytes) =>
        {
            if (store.Get(name) is null)
            {
                return NoSuchVm(name);
            }
            string path = supervisor.ConsoleLogOf(name);
            if (!File.Exists(path))
            {
                return Results.Text("", "text/plain");
            }
            using var file = File.OpenRead(path);
            long take = Math.Min(file.Length, Math.Clamp(tailBytes ?? 1 << 20, 0, 16 << 20));
            file.Seek(-take, SeekOrigin.End);
            var bytes = new byte[take];
            file.ReadExactly(bytes);
            return Results.Bytes(bytes, "text/plain; charset=utf-8");
        })
        .WithSummary("The console output the VM wrote across its runs (the last tail_bytes, default 1 MiB)")
        .Produces(200, contentType: "text/plain").Produces<ApiError>(404);

        app.MapGet("/events", async (HttpContext context, long? after) =>
        {
            long from = long.TryParse(context.Request.Headers["Last-Event-ID"], out long last) ? last : after ?? LatestOnly;
            context.Response.ContentType = "text/event-stream";
            context.Response.Headers.CacheControl = "no-cache";
            await context.Response.StartAsync(context.RequestAborted);
            await context.Response.Body.FlushAsync(context.RequestAborted); // headers now, not at the first event
            try
            {
                var caller = Caller.Of(context);
                await SseFormatter.WriteAsync(Stream(events.Follow(from, e => caller.Sees(e.Tenant), context.RequestAborted)), context.Response.Body, context.RequestAborted);
            }
            catch (Exception e) when (e is OperationCanceledException or IOException)
            {
                // the client left
            }
        })
        .WithSummary("Lifecycle events of the caller's tenant's VMs (an admin: every tenant's) as server-sent events (event: lifecycle, data: a LifecycleEvent). " +
            "Last-Event-ID or ?after=SEQ replays the kept events after that one.")
        .Produces<LifecycleEvent>(200, "text/event-stream");

        app.MapGet("/schemas/vm-definition", () => Results.Text(DefinitionReader.SchemaText, "application/schema+json"))
            .WithSummary("The JSON Schema of a VM definition").Produces(200, contentType: "application/schema+json");

        AccessApi.Map(app, store, access);

        app.MapFallback(() => Fail(404, "no such resource (the API is described at GET /openapi/v1.json)")).Needs(Roles.Viewer);
    }

    /// <summary>
    /// Describes the request body in the OpenAPI document. (Accepts&lt;T&gt; would also make routing
    /// refuse other content types; the daemon reads YAML and JSON whatever the client calls them.)
    /// </summary>
    internal static RouteHandlerBuilder Body<T>(this RouteHandlerBuilder endpoint, params string[] contentTypes) =>
        endpoint.AddOpenApiOperationTransformer(async (operation, context, ct) =>
        {
            var schema = typeof(T) == typeof(byte[]) ? new OpenApiSchema { Type = JsonSchemaType.String, Format = "binary" }
                : await context.GetOrCreateSchemaAsync(typeof(T), null, ct);
            operation.RequestBody = new OpenApiRequestBody
            {
                Required = typeof(T) != typeof(ShutdownRequest) && typeof(T) != typeof(SnapshotRequest),
                Content = contentTypes.ToDictionary(c => c, _ => new OpenApiMediaType { Schema = schema }),
            };
        });

    /// <summary>What one console input request may carry: a paste, not a file transfer (the guest reads it a UART byte at a time).</summary>
    internal const int ConsoleInputLimit = 64 << 10;

    /// <summary>How long the console's answer waits for the VMM's before it starts without it.</summary>
    private static readonly TimeSpan ConsoleHeadersWait = TimeSpan.FromMilliseconds(300);

    /// <summary>A shutdown or rename body is a few bytes.</summary>
    private const int SmallBodyLimit = 64 << 10;

    private const long LatestOnly = long.MaxValue; // no replay: only what happens from now on

    private static async IAsyncEnumerable<SseItem<string>> Stream(IAsyncEnumerable<LifecycleEvent> source)
    {
        await foreach (var e in source)
        {
            yield return new SseItem<string>(JsonSerializer.Serialize(e, DaemonJson.Default.LifecycleEvent), "lifecycle") { EventId = e.Seq.ToString(System.Globalization.CultureInfo.InvariantCulture) };
        }
    }

    private static IResult Lifecycle(string name, VmStore store, Supervisor supervisor, Func<string?> act, int okStatus = 200)
    {
        if (store.Get(name) is null)
        {
            return NoSuchVm(name);
        }
        return act() is { } error ? Fail(409, error) : Answer(name, store, supervisor, okStatus);
    }

    /// <summary>The VM as it is now; a 404 if it was undefined meanwhile (another request may have got in between).</summary>
    private static IResult Answer(string name, VmStore store, Supervisor supervisor, int status = 200) =>
        store.Get(name) is { } vm ? Results.Json(Summary(vm, supervisor), DaemonJson.Default.VmSummary, statusCode: status) : NoSuchVm(name);

    private static VmSummary Summary(VmRecord vm, Supervisor supervisor) => new(vm.Name, vm.Id, vm.State, vm.Definition.Vcpus, vm.Definition.MemoryMib,
        supervisor.PidOf(vm.Name), Uptime(vm), vm.LastExit, vm.Definition, SavedTo(vm, supervisor), vm.Tenant);

    private static VmListEntry ListEntry(VmRecord vm, Supervisor supervisor) =>
        new(vm.Name, vm.Id, vm.State, vm.Definition.Vcpus, vm.Definition.MemoryMib, Uptime(vm), supervisor.PidOf(vm.Name), SavedTo(vm, supervisor), vm.Tenant);

    /// <summary>A saved VM's save file; null in every other state.</summary>
    private static string? SavedTo(VmRecord vm, Supervisor supervisor) => vm.State == DomainState.Saved ? supervisor.LatestSave(vm.Id) : null;

    private static double? Uptime(VmRecord vm) => vm.StartedAt is { } t ? Math.Round((DateTime.UtcNow - t).TotalSeconds, 1) : null;

    private static IResult NoSuchVm(string name) => Fail(404, $"no VM named '{name}'");

    internal static IResult Fail(int status, string message, SchemaError[]? errors = null) =>
        Results.Json(new ApiError(message, errors), DaemonJson.Default.ApiError, statusCode: status);

    /// <summary>A definition from the body (YAML or JSON), checked against the schema, then against the image directories.</summary>
    private static async Task<(VmDefinition? Definition, IResult? Error)> ReadDefinition(HttpRequest request, List<string> imageDirs)
    {
        string text;
        try
        {
            using var reader = new StreamReader(request.Body);
            text = await reader.ReadToEndAsync(request.HttpContext.RequestAborted);
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or BadHttpRequestException)
        {
            return (null, Fail(400, $"the request body could not be read: {e.Message}"));
        }
        var result = DefinitionReader.Parse(text);
        if (result.Definition is null)
        {
            return (null, Fail(400, $"invalid definition: {result.ErrorText}", [.. result.Errors]));
        }
        if (ImagePolicy.Check(result.Definition, imageDirs) is { } refused)
        {
            return (null, Fail(400, $"invalid definition: {refused}", [refused]));
        }
        if (MemoryAdmission.HostMib() is long host && MemoryAdmission.CheckDefine(result.Definition.MemoryMib, host) is { } tooBig)
        {
            var error = new SchemaError("memory_mib", tooBig);
            return (null, Fail(400, $"invalid definition: {error}", [error]));
        }
        return (result.Definition, null);
    }

    /// <summary>A small JSON body that may be absent (then <paramref name="absent"/>).</summary>
    internal static async Task<(T? Value, IResult? Error)> ReadOptional<T>(HttpRequest request, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> type, string what, T? absent,
        int limit = SmallBodyLimit)
    {
        try
        {
            if (request.ContentLength is 0 || (request.ContentLength is null && !request.Headers.ContainsKey(HeaderNames.TransferEncoding)))
            {
                return absent is null ? (default, Fail(400, "a JSON body is required")) : (absent, null);
            }
            byte[]? body = await BodyReader.ReadBounded(request.Body, limit, request.HttpContext.RequestAborted);
            return body is null ? (default, Fail(413, $"body: larger than {limit} bytes"))
                : BodyReader.TryRead(body, type, what, out var value) is { } error ? (default, Fail(400, error)) : (value, null);
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or BadHttpRequestException)
        {
            return (default, Fail(400, $"the request body could not be read: {e.Message}"));
        }
    }
}
