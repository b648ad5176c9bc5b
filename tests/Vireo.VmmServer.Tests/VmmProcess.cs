using System.Diagnostics;
using System.Net.Http.Json;
using System.Text;
using Vireo.Tests;

namespace Vireo.VmmServer.Tests;

/// <summary>A real vireo-vmm process and an HTTP client on its API socket.</summary>
internal sealed class VmmProcess : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _stdout = new();

    public string Socket { get; }

    public int Pid => _process.Id;
    public HttpClient Http { get; }

    /// <param name="options">More of vireo-vmm's options (--restore ...), after --api-sock.</param>
    public VmmProcess(string? socket = null, params string[] options)
        : this(readStdout: true, socket, options)
    {
    }

    /// <summary>A vireo-vmm whose stdout nobody reads: the pipe's reading end is closed at once, so every write to it fails (EPIPE).</summary>
    public static VmmProcess WithStdoutClosed() => new(readStdout: false, null, []);

    private VmmProcess(bool readStdout, string? socket, string[] options)
    {
        _ = TestEnvironment.GuestDir; // the guest kit is built first
        Socket = socket ?? Path.Combine(TempDirectory.Create("vireo-vmm"), "api.sock");
        var psi = new ProcessStartInfo(TestEnvironment.Shipped("vireo-vmm"), ["--api-sock", Socket, .. options])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        _process = Process.Start(psi)!;
        if (readStdout)
        {
            _process.OutputDataReceived += (_, e) => { lock (_stdout) { _stdout.AppendLine(e.Data); } };
            _process.BeginOutputReadLine();
        }
        else
        {
            _process.StandardOutput.Close();
        }
        UnixHttp.WaitForSocket(Socket, () => _process.HasExited, () => _process.HasExited ? _process.StandardError.ReadToEnd() : "no socket yet");
        Http = UnixHttp.Client(Socket);
    }

    public string Output
    {
        get
        {
            lock (_stdout)
            {
                return _stdout.ToString();
            }
        }
    }

    public async Task<(int Status, string Body)> Put(string path, string json)
    {
        using var r = await Http.PutAsync(path, new StringContent(json, Encoding.UTF8, "application/json"));
        return ((int)r.StatusCode, await r.Content.ReadAsStringAsync());
    }

    public async Task Ok(string path, string json)
    {
        var (status, body) = await Put(path, json);
        Assert.True(status == 204, $"PUT {path} {json}: {status} {body}");
    }

    /// <summary>The fault_message of an error body.</summary>
    public static string Fault(string body) => System.Text.Json.JsonDocument.Parse(body).RootElement.GetProperty("fault_message").GetString()!;

    public Task<Api.VmInfo?> Info() => Http.GetFromJsonAsync("vm", Api.VmmJson.Default.VmInfo);

    public int WaitForExit(int ms = 30_000)
    {
        Assert.True(_process.WaitForExit(ms), "vireo-vmm did not exit");
        _process.WaitForExit();
        return _process.ExitCode;
    }

    /// <summary>SIGKILL, as a crash or the OOM killer ends a process.</summary>
    public void Kill()
    {
        _process.Kill();
        _process.WaitForExit();
    }

    public void Dispose()
    {
        Http.Dispose();
        if (!_process.HasExited)
        {
            _process.Kill();
            _process.WaitForExit();
        }
        _process.Dispose();
    }
}

/// <summary>
/// One vireo-vmm for a whole test class whose cases leave it as they found it (each is a refused
/// PUT, which changes nothing): one process per case would cost minutes.
/// </summary>
public sealed class SharedVmm : IDisposable
{
    internal VmmProcess Vmm { get; } = new();

    public void Dispose() => Vmm.Dispose();
}
