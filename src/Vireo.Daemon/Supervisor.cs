using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Vireo.Api;

namespace Vireo.Daemon;

/// <summary>
/// Spawns one vireo-vmm process per running VM, drives it over its API socket, and watches it:
/// a VMM that ends is noticed within a poll (100 ms) and the VM's on_poweroff or on_crash policy
/// applied. VMMs run in their own session with their console in a file, so they outlive the
/// daemon; a restarted daemon re-attaches to those still alive (checked by pid and start time).
/// </summary>
internal sealed class Supervisor : IDisposable
{
    private readonly VmStore _store;
    private readonly string _stateDir;
    private readonly string _vmmPath;
    private readonly ConcurrentDictionary<string, Attached> _running = new();
    private readonly ConcurrentDictionary<string, Lock> _vmLocks = new();
    private readonly ConcurrentDictionary<string, bool> _destroying = new(); // ended by the operator: no policy applies
    private readonly Thread _poller;
    private volatile bool _disposed;

    private sealed record Attached(int Pid, long StartTime, string Dir, HttpClient Api);

    public event Action<string, string>? Changed; // (vm, what happened), for the event stream

    public Supervisor(VmStore store, string stateDir, string vmmPath)
    {
        _store = store;
        _stateDir = stateDir;
        _vmmPath = vmmPath;
        foreach (var vm in store.All())
        {
            if (vm.Pid is int pid && vm.PidStartTime is long start && IsAlive(pid, start))
            {
                _running[vm.Name] = Attach(pid, start, VmDir(vm.Name));
                Changed?.Invoke(vm.Name, "reattached");
            }
            else if (vm.State is DomainState.Running or DomainState.Paused)
            {
                Ended(vm.Name); // it ended while the daemon was away
            }
        }
        foreach (var vm in store.All().Where(v => v.Definition.Autostart && v.State == DomainState.ShutOff))
        {
            Start(vm.Name);
        }
        _poller = new Thread(Poll) { IsBackground = true, Name = "supervisor" };
        _poller.Start();
    }

    public bool IsRunning(string name) => _running.ContainsKey(name);

    public int? PidOf(string name) => _running.TryGetValue(name, out var a) ? a.Pid : null;

    /// <summary>Starts a defined VM; null when it runs, else why not.</summary>
    public string? Start(string name)
    {
        lock (LockFor(name))
        {
            var vm = _store.Get(name);
            if (vm is null)
            {
                return $"no VM named '{name}'";
            }
            if (_running.ContainsKey(name))
            {
                return $"'{name}' is already running";
            }
            string dir = VmDir(name);
            Directory.CreateDirectory(dir);
            foreach (var stale in new[] { "api.sock", "status" })
            {
                File.Delete(Path.Combine(dir, stale));
            }
            var psi = new ProcessStartInfo("/bin/sh")
            {
                UseShellExecute = false,
                ArgumentList =
                {
                    "-c", "exec setsid \"$0\" --api-sock \"$1\" --status-file \"$2\" >> \"$3\" 2>> \"$4\" < /dev/null",
                    _vmmPath, Path.Combine(dir, "api.sock"), Path.Combine(dir, "status"), Path.Combine(dir, "console.log"), Path.Combine(dir, "vmm.log"),
                },
            };
            using var process = Process.Start(psi)!;
            int pid = process.Id;
            var deadline = DateTime.UtcNow.AddSeconds(15);
            while (!Accepts(Path.Combine(dir, "api.sock"))) // the file appears at bind, a moment before listen
            {
                if (process.HasExited || DateTime.UtcNow > deadline)
                {
                    Kill(pid);
                    return $"the VMM process did not start: {Tail(Path.Combine(dir, "vmm.log"))}";
                }
                Thread.Sleep(10);
            }
            var attached = Attach(pid, StartTime(pid) ?? 0, dir);
            string? error = Configure(attached.Api, vm.Definition);
            if (error is not null)
            {
                Kill(pid);
                attached.Api.Dispose();
                return error;
            }
            _running[name] = attached;
            _store.SetRunning(name, pid, attached.StartTime);
            Changed?.Invoke(name, "started");
            return null;
        }
    }

    /// <summary>pause, resume, shutdown (ACPI power button), reboot (reset), destroy (stop now).</summary>
    public string? Act(string name, string action)
    {
        if (!_running.TryGetValue(name, out var a))
        {
            return _store.Get(name) is null ? $"no VM named '{name}'" : $"'{name}' is not running";
        }
        string apiAction = action switch
        {
            "pause" => InstanceAction.Pause,
            "resume" => InstanceAction.Resume,
            "shutdown" => InstanceAction.Shutdown,
            "reboot" => InstanceAction.Reset,
            "destroy" => InstanceAction.Stop,
            _ => "",
        };
        if (apiAction == "")
        {
            return $"unknown action '{action}'";
        }
        if (action == "destroy")
        {
            _destroying[name] = true;
        }
        string? error = Put(a.Api, "actions", $$"""{"action_type": "{{apiAction}}"}""");
        if (error is not null && action == "destroy")
        {
            Kill(a.Pid); // an unresponsive VMM is destroyed anyway
            error = null;
        }
        if (error is null)
        {
            if (action is "pause" or "resume")
            {
                _store.SetState(name, action == "pause" ? DomainState.Paused : DomainState.Running);
            }
            if (action == "destroy")
            {
                WaitForEnd(name, TimeSpan.FromSeconds(10));
            }
            Changed?.Invoke(name, action);
        }
        return error;
    }

    private void WaitForEnd(string name, TimeSpan limit)
    {
        var deadline = DateTime.UtcNow + limit;
        while (_running.TryGetValue(name, out var a))
        {
            if (DateTime.UtcNow > deadline)
            {
                Kill(a.Pid);
            }
            if (!IsAlive(a.Pid, a.StartTime))
            {
                Ended(name);
                return;
            }
            Thread.Sleep(20);
        }
        lock (LockFor(name))
        {
            // The poller took it out of the running set: wait until it has recorded the end too.
        }
    }

    private void Poll()
    {
        while (!_disposed)
        {
            foreach (var (name, a) in _running)
            {
                if (!IsAlive(a.Pid, a.StartTime))
                {
                    Ended(name);
                }
            }
            Thread.Sleep(100);
        }
    }

    /// <summary>The VMM is gone: read why, and apply on_poweroff or on_crash.</summary>
    private void Ended(string name)
    {
        lock (LockFor(name))
        {
            if (_running.TryRemove(name, out var a))
            {
                a.Api.Dispose();
            }
            var vm = _store.Get(name);
            if (vm is null)
            {
                return;
            }
            string statusFile = Path.Combine(VmDir(name), "status");
            string status = File.Exists(statusFile) ? File.ReadAllText(statusFile).Trim() : "";
            bool clean = status.StartsWith("0 ", StringComparison.Ordinal);
            string lastExit = status == "" ? "the VMM process died" : status[(status.IndexOf(' ') + 1)..];
            string policy = clean ? vm.Definition.OnPoweroff : vm.Definition.OnCrash;
            _store.SetStopped(name, !clean && policy == LifecyclePolicy.Preserve ? DomainState.Crashed : DomainState.ShutOff, lastExit);
            Changed?.Invoke(name, clean ? "stopped" : "crashed");
            bool destroyed = _destroying.TryRemove(name, out _);
            if (policy == LifecyclePolicy.Restart && !destroyed)
            {
                ThreadPool.QueueUserWorkItem(_ => Start(name));
            }
        }
    }

    private static string? Configure(HttpClient api, VmDefinition d)
    {
        var steps = new List<(string Path, string Body)>
        {
            ("boot-source", JsonBody(w =>
            {
                w.WriteString("kernel_image_path", d.Kernel);
                if (d.Initrd is not null) w.WriteString("initrd_path", d.Initrd);
                if (d.Cmdline is not null) w.WriteString("boot_args", d.Cmdline);
            })),
            ("machine-config", JsonBody(w => { w.WriteNumber("vcpu_count", d.Vcpus); w.WriteNumber("mem_size_mib", d.MemoryMib); })),
        };
        for (int i = 0; i < (d.Disks?.Length ?? 0); i++)
        {
            string id = $"disk{i}";
            steps.Add(($"drives/{id}", JsonBody(w => { w.WriteString("drive_id", id); w.WriteString("path_on_host", d.Disks![i]); })));
        }
        steps.Add(("actions", """{"action_type": "InstanceStart"}"""));
        foreach (var (path, body) in steps)
        {
            if (Put(api, path, body) is { } error)
            {
                return error;
            }
        }
        return null;
    }

    private static string JsonBody(Action<Utf8JsonWriter> write)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            write(w);
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(ms.ToArray());
    }

    /// <summary>One PUT to a VMM; null on 2xx, else its fault message.</summary>
    private static string? Put(HttpClient api, string path, string json)
    {
        try
        {
            using var r = api.PutAsync(path, new StringContent(json, Encoding.UTF8, "application/json")).GetAwaiter().GetResult();
            if (r.IsSuccessStatusCode)
            {
                return null;
            }
            string body = r.Content.ReadAsStringAsync().GetAwaiter().GetResult();
            try
            {
                return JsonDocument.Parse(body).RootElement.GetProperty("fault_message").GetString();
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
            {
                return $"the VMM answered {(int)r.StatusCode}";
            }
        }
        catch (Exception e) when (e is HttpRequestException or IOException or TaskCanceledException)
        {
            return $"the VMM did not answer: {e.Message}";
        }
    }

    private static Attached Attach(int pid, long startTime, string dir)
    {
        string socket = Path.Combine(dir, "api.sock");
        var api = new HttpClient(new SocketsHttpHandler
        {
            ConnectCallback = async (_, ct) =>
            {
                var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await s.ConnectAsync(new UnixDomainSocketEndPoint(socket), ct);
                }
                catch
                {
                    s.Dispose();
                    throw;
                }
                return new NetworkStream(s, ownsSocket: true);
            },
        })
        { BaseAddress = new Uri("http://vmm/"), Timeout = TimeSpan.FromSeconds(30) };
        return new Attached(pid, startTime, dir, api);
    }

    private static bool Accepts(string path)
    {
        using var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            s.Connect(new UnixDomainSocketEndPoint(path));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    private string VmDir(string name) => Path.Combine(_stateDir, "vms", name);

    private Lock LockFor(string name) => _vmLocks.GetOrAdd(name, _ => new Lock());

    /// <summary>The process start time in clock ticks (field 22 of /proc/PID/stat): a pid with another start time is another process.</summary>
    internal static long? StartTime(int pid) => Stat(pid)?.StartTime;

    /// <summary>Alive: the same process (pid and start time) and not a zombie.</summary>
    internal static bool IsAlive(int pid, long startTime) =>
        Stat(pid) is { State: not ("Z" or "X") } stat && stat.StartTime == startTime;

    /// <summary>The state letter and start time from /proc/PID/stat; null when there is no such process.</summary>
    private static (string State, long StartTime)? Stat(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' '); // after "pid (comm) ": the comm may hold spaces
            return (fields[0], long.Parse(fields[19]));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
        {
            return null;
        }
    }

    private static void Kill(int pid)
    {
        try
        {
            Process.GetProcessById(pid).Kill();
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            // already gone
        }
    }

    private static string Tail(string file) => File.Exists(file) ? File.ReadAllText(file).Trim() : "(no log)";

    public void Dispose()
    {
        _disposed = true;
        foreach (var a in _running.Values)
        {
            a.Api.Dispose();
        }
    }
}
