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

    /// <summary>Standard error so far, once the process has ended.</summary>
    public string Errors => _process.HasExited ? _process.StandardError.ReadToEnd() : "";

    /// <param name="options">More of vireo-vmm's options (--restore ...), after --api-sock.</param>
    public VmmProcess(string? socket = null, params string[] options)
        : this(readStdout: true, socket, options)
    {
    }

    /// <summary>A vireo-vmm whose stdout nobody reads: the pipe's reading end is closed at once, so every write to it fails (EPIPE).</summary>
    public static VmmProcess WithStdoutClosed() => new(readStdout: false, null, [], null);

    /// <summary>A vireo-vmm under strace, each of its threads' calls in a file <paramref name="traceDir"/>/t.TID.</summary>
    public static VmmProcess Traced(string traceDir, params string[] options) => new(readStdout: true, null, options, traceDir);

    private readonly bool _traced;

    private VmmProcess(bool readStdout, string? socket, string[] options, string? traceDir = null)
    {
        _ = TestEnvironment.GuestDir; // the guest kit is built first
        Socket = socket ?? Path.Combine(TempDirectory.Create("vireo-vmm"), "api.sock");
        _traced = traceDir is not null;
        string[] command = [TestEnvironment.Shipped("vireo-vmm"), "--api-sock", Socket, .. options];
        var psi = traceDir is null
            ? new ProcessStartInfo(command[0], command[1..])
            : new ProcessStartInfo("strace", ["-f", "-ff", "-qq", "-o", Path.Combine(traceDir, "t"), .. command]);
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        psi.UseShellExecute = false;
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
        if (_traced && !_process.HasExited)
        {
            // strace's end would only detach vireo-vmm: the VMM goes first, then strace ends on its own.
            foreach (string child in File.ReadAllText($"/proc/{_process.Id}/task/{_process.Id}/children").Split(' ', StringSplitOptions.RemoveEmptyEntries))
            {
                try
                {
                    Process.GetProcessById(int.Parse(child)).Kill();
                }
                catch (ArgumentException)
                {
                }
            }
            _process.WaitForExit(10_000);
        }
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
