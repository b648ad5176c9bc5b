using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using System.Text.RegularExpressions;
using Vireo.Api;
using Vireo.Daemon;

// vireod --socket PATH --state DIR [--image-dir DIR]...: many VMs per host, each in its own
// vireo-vmm process that the daemon spawns and supervises; state in DIR/vireo.db (SQLite).
string? socketPath = null, stateDir = null;
var imageDirs = new List<string>();
for (int i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--socket" when i + 1 < args.Length: socketPath = args[++i]; break;
        case "--state" when i + 1 < args.Length: stateDir = Path.GetFullPath(args[++i]); break;
        case "--image-dir" when i + 1 < args.Length: imageDirs.Add(Path.GetFullPath(args[++i]).TrimEnd('/') + "/"); break;
        default:
            Console.Error.WriteLine($"vireod: unknown argument '{args[i]}' (usage: vireod --socket PATH --state DIR [--image-dir DIR]...)");
            return 2;
    }
}
if (socketPath is null || stateDir is null)
{
    Console.Error.WriteLine("vireod: usage: vireod --socket PATH --state DIR [--image-dir DIR]...");
    return 2;
}
Directory.CreateDirectory(stateDir);
File.Delete(socketPath);

using var store = new VmStore(Path.Combine(stateDir, "vireo.db"));
using var supervisor = new Supervisor(store, stateDir, Path.Combine(AppContext.BaseDirectory, "vireo-vmm"));
supervisor.Changed += (vm, what) => Console.Error.WriteLine(JsonSerializer.Serialize(new Dictionary<string, string>
    { ["time"] = DateTime.UtcNow.ToString("O"), ["vm"] = vm, ["event"] = what }));

var builder = WebApplication.CreateSlimBuilder(args: []);
builder.Logging.ClearProviders();
builder.WebHost.ConfigureKestrel(o => o.ListenUnixSocket(socketPath));
var app = builder.Build();

app.MapPost("/vms", async (HttpRequest request) =>
{
    var (def, error) = await Read(request, DaemonJson.Default.VmDefinition);
    error ??= Validate(def!, imageDirs);
    if (error is not null)
    {
        return Fail(400, error);
    }
    return store.Define(def!) ? Results.Json(Summary(store.Get(def!.Name)!), DaemonJson.Default.VmSummary, statusCode: 201)
        : Fail(409, $"name: a VM named '{def!.Name}' is already defined");
});
app.MapGet("/vms", () => Results.Json(store.All().Select(Summary).ToArray(), DaemonJson.Default.VmSummaryArray));
app.MapGet("/vms/{name}", (string name) => store.Get(name) is { } vm
    ? Results.Json(Summary(vm), DaemonJson.Default.VmSummary) : Fail(404, $"no VM named '{name}'"));
app.MapPost("/vms/{name}/{action}", (string name, string action) =>
{
    if (store.Get(name) is null)
    {
        return Fail(404, $"no VM named '{name}'");
    }
    string? error = action == "start" ? supervisor.Start(name) : supervisor.Act(name, action);
    return error is null ? Results.Json(Summary(store.Get(name)!), DaemonJson.Default.VmSummary) : Fail(409, error);
});
app.MapDelete("/vms/{name}", (string name) =>
{
    if (supervisor.IsRunning(name))
    {
        return Fail(409, $"'{name}' is running: destroy it first");
    }
    return store.Undefine(name) ? Results.NoContent() : Fail(404, $"no VM named '{name}'");
});
app.MapFallback(() => Fail(404, "no such resource"));

await app.RunAsync();
File.Delete(socketPath);
return 0;

VmSummary Summary(VmRecord vm) => new(vm.Name, vm.Id, vm.State, vm.Definition.Vcpus, vm.Definition.MemoryMib,
    supervisor.PidOf(vm.Name), vm.StartedAt is { } t ? Math.Round((DateTime.UtcNow - t).TotalSeconds, 1) : null, vm.LastExit, vm.Definition);

static IResult Fail(int status, string message) => Results.Json(new ApiError(message), DaemonJson.Default.ApiError, statusCode: status);

static async Task<(T? Value, string? Error)> Read<T>(HttpRequest request, JsonTypeInfo<T> type)
{
    try
    {
        var value = await JsonSerializer.DeserializeAsync(request.Body, type, request.HttpContext.RequestAborted);
        return value is null ? (default, "malformed body: null") : (value, null);
    }
    catch (JsonException e)
    {
        return (default, $"malformed body: {e.Message}");
    }
    catch (Exception e) when (e is IOException or OperationCanceledException or BadHttpRequestException)
    {
        return (default, $"the request body could not be read: {e.Message}");
    }
}

// Errors name the field and the reason.
static string? Validate(VmDefinition d, List<string> imageDirs)
{
    if (!Regex.IsMatch(d.Name, "^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"))
    {
        return "name: 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit";
    }
    if (d.Vcpus is < 1 or > 254)
    {
        return $"vcpus: {d.Vcpus} is outside 1..254";
    }
    if (d.MemoryMib is < 16 or > 1024 * 1024)
    {
        return $"memory_mib: {d.MemoryMib} is outside 16..1048576";
    }
    foreach (var (field, policy) in new[] { ("on_poweroff", d.OnPoweroff), ("on_reboot", d.OnReboot), ("on_crash", d.OnCrash) })
    {
        if (!LifecyclePolicy.All.Contains(policy))
        {
            return $"{field}: '{policy}' is not one of {string.Join(", ", LifecyclePolicy.All)}";
        }
    }
    var paths = new List<(string Field, string Path)> { ("kernel", d.Kernel) };
    if (d.Initrd is not null)
    {
        paths.Add(("initrd", d.Initrd));
    }
    for (int i = 0; i < (d.Disks?.Length ?? 0); i++)
    {
        paths.Add(($"disks[{i}]", d.Disks![i]));
    }
    foreach (var (field, path) in paths)
    {
        string full = Path.GetFullPath(path);
        if (imageDirs.Count > 0 && !imageDirs.Any(dir => full.StartsWith(dir, StringComparison.Ordinal)))
        {
            return $"{field}: {path} is outside the image directories ({string.Join(", ", imageDirs)})";
        }
        if (!File.Exists(full))
        {
            return $"{field}: no such file: {path}";
        }
    }
    return null;
}
