using System.Diagnostics;
using System.Net.Http.Json;
using System.Text;
using Vireo.Api;
using Vireo.Tests;

namespace Vireo.Daemon.Tests;

/// <summary>A real vireod on a state directory, and an HTTP client on its socket. Restartable on the same state.</summary>
internal sealed class DaemonProcess : IDisposable
{
    private Process _process = null!;
    public string StateDir { get; }
    public string Socket { get; }
    public HttpClient Http { get; private set; } = null!;

    /// <summary>vireod's process id.</summary>
    public int Pid => _process.Id;

    private readonly string _extraArgs;
    private readonly string? _netns;

    /// <param name="netns">a network namespace (ip netns) to run vireod in, and so its VMMs</param>
    public DaemonProcess(string? stateDir = null, string extraArgs = "", string? netns = null)
    {
        _extraArgs = extraArgs;
        _netns = netns;
        _ = TestEnvironment.GuestDir;
        StateDir = stateDir ?? TempDirectory.Create("vireod");
        Socket = Path.Combine(StateDir, "vireod.sock");
        Launch();
    }

    private void Launch()
    {
        string args = $"--socket {Socket} --state {StateDir} --image-dir {TestEnvironment.GuestDir} {_extraArgs}";
        // ip netns exec execs vireod once in the namespace: the process is still vireod's.
        var psi = new ProcessStartInfo(_netns is null ? TestEnvironment.Shipped("vireod") : "ip",
            _netns is null ? args : $"netns exec {_netns} {TestEnvironment.Shipped("vireod")} {args}")
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        _process = Process.Start(psi)!;
        _process.ErrorDataReceived += (_, e) =>
        {
            lock (_log)
            {
                _log.AppendLine(e.Data);
            }
        };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine(); // the structured log: read, so that a full pipe never stalls the daemon
        UnixHttp.WaitForSocket(Socket, () => _process.HasExited, () => Log);
        Http = UnixHttp.Client(Socket);
    }

    /// <summary>SIGKILL, as a crash would: no clean-up runs. Then a new daemon on the same state.</summary>
    public void KillAndRestart()
    {
        _process.Kill();
        _process.WaitForExit();
        Http.Dispose();
        File.Delete(Socket);
        Launch();
    }

    /// <summary>SIGKILL, and no restart: its socket stays, with no one answering on it.</summary>
    public void KillProcess()
    {
        _process.Kill();
        _process.WaitForExit();
    }

    /// <summary>A new daemon on the same state, after <see cref="KillProcess"/>.</summary>
    public void Relaunch()
    {
        Http.Dispose();
        File.Delete(Socket);
        Launch();
    }

    public static string Definition(string name, string guest = "idle", string extra = "") =>
        $$"""{"name": "{{name}}", "kernel": "{{TestEnvironment.Guest(guest)}}", "memory_mib": 32{{extra}}}""";

    /// <summary>Everything vireod logged so far (structured: one JSON object a line).</summary>
    public string Log
    {
        get
        {
            lock (_log)
            {
                return _log.ToString();
            }
        }
    }

    private readonly StringBuilder _log = new();

    public async Task<(int Status, string Body)> Send(HttpMethod method, string path, string? json = null)
    {
        using var request = new HttpRequestMessage(method, path);
        if (json is not null)
        {
            request.Content = new StringContent(json, Encoding.UTF8, "application/json");
        }
        using var r = await Http.SendAsync(request);
        return ((int)r.StatusCode, await r.Content.ReadAsStringAsync());
    }

    public async Task<VmSummary> Ok(HttpMethod method, string path, string? json = null)
    {
        var (status, body) = await Send(method, path, json);
        Assert.True(status is >= 200 and < 300, $"{method} {path}: {status} {body}");
        return System.Text.Json.JsonSerializer.Deserialize(body, DaemonJson.Default.VmSummary)!;
    }

    public async Task<VmListEntry[]> List() => (await Http.GetFromJsonAsync("vms", DaemonJson.Default.VmListEntryArray))!;

    public async Task<VmSummary> Get(string name) => (await Http.GetFromJsonAsync($"vms/{name}", DaemonJson.Default.VmSummary))!;

    public void Dispose()
    {
        Http.Dispose();
        if (!_process.HasExited)
        {
            _process.Kill();
            _process.WaitForExit();
        }
        // The VMM processes outlive a daemon by design: stop the ones this test left.
        foreach (var p in Process.GetProcessesByName("vireo-vmm"))
        {
            try
            {
                if (File.ReadAllText($"/proc/{p.Id}/cmdline").Contains(StateDir, StringComparison.Ordinal))
                {
                    p.Kill();
                }
            }
            catch (Exception e) when (e is IOException or InvalidOperationException)
            {
            }
        }
    }
}
