using System.Text;
using System.Text.Json;
using Vireo.Api;

namespace Vireo.Daemon;

/// <summary>The daemon's side of one vireo-vmm's API socket: configuration, actions, and the console stream.</summary>
internal sealed class VmmClient : IDisposable
{
    private readonly HttpClient _api;      // requests that answer at once
    private readonly HttpClient _streams;  // the console, which lasts as long as the VM

    public VmmClient(string socketPath)
    {
        _api = UnixSocketHttp.Client(socketPath, TimeSpan.FromSeconds(30));
        _streams = UnixSocketHttp.Client(socketPath, Timeout.InfiniteTimeSpan);
    }

    /// <summary>One PUT of a JSON body; null on 2xx, else the VMM's fault message.</summary>
    public string? Put(string path, string json) => Send(_api, HttpMethod.Put, path, json);

    /// <summary>PATCH /vm and the like: null on 2xx, else the VMM's fault message.</summary>
    public string? Patch(string path, string json) => Send(_api, HttpMethod.Patch, path, json);

    /// <summary>
    /// A PUT that takes as long as the guest's RAM takes to write or map (snapshot/create, snapshot/load):
    /// no time limit but the VMM's end, which closes the socket.
    /// </summary>
    public string? PutLong(string path, string json) => Send(_streams, HttpMethod.Put, path, json);

    /// <summary>GET /vm: the VMM's own account of its state; null when it does not answer within <paramref name="limit"/>.</summary>
    public VmInfo? Info(TimeSpan limit) => GetJson("vm", VmmJson.Default.VmInfo, limit);

    /// <summary>GET /migration: where the VMM's migration is; null when it does not answer within <paramref name="limit"/> (or has ended).</summary>
    public MigrationInfo? Migration(TimeSpan limit) => GetJson("migration", VmmJson.Default.MigrationInfo, limit);

    private T? GetJson<T>(string path, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> type, TimeSpan limit) where T : class
    {
        try
        {
            using var cts = new CancellationTokenSource(limit);
            using var r = _api.GetAsync(path, cts.Token).GetAwaiter().GetResult();
            return r.IsSuccessStatusCode ? JsonSerializer.Deserialize(r.Content.ReadAsStringAsync(cts.Token).GetAwaiter().GetResult(), type) : null;
        }
        catch (Exception e) when (e is HttpRequestException or IOException or OperationCanceledException or JsonException)
        {
            return null;
        }
    }

    /// <summary>
    /// Keystrokes for the guest's console. The VMM answers once the guest has taken them all, which
    /// takes as long as the guest takes to read them: no time limit (a short one cut input off half
    /// delivered), only <paramref name="ct"/>, the client's request, and the VM's end.
    /// </summary>
    public async Task<string?> SendInput(byte[] input, CancellationToken ct)
    {
        try
        {
            using var r = await _streams.PutAsync("console/input", new ByteArrayContent(input), ct);
            return r.IsSuccessStatusCode ? null : Fault((int)r.StatusCode, await r.Content.ReadAsStringAsync(ct));
        }
        catch (Exception e) when (e is HttpRequestException or IOException or OperationCanceledException)
        {
            return $"the VMM did not answer: {e.Message}";
        }
    }

    private static string? Send(HttpClient client, HttpMethod method, string path, string json)
    {
        try
        {
            using var request = new HttpRequestMessage(method, path) { Content = new StringContent(json, Encoding.UTF8, "application/json") };
            using var r = client.SendAsync(request).GetAwaiter().GetResult();
            return r.IsSuccessStatusCode ? null : Fault((int)r.StatusCode, r.Content.ReadAsStringAsync().GetAwaiter().GetResult());
        }
        catch (Exception e) when (e is HttpRequestException or IOException or TaskCanceledException)
        {
            return $"the VMM did not answer: {e.Message}";
        }
    }

    private static string? Fault(int status, string body)
    {
        try
        {
            return JsonDocument.Parse(body).RootElement.GetProperty("fault_message").GetString();
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            return $"the VMM answered {status}";
        }
    }

    /// <summary>The console: history, then live output until the VM ends or <paramref name="ct"/> fires.</summary>
    public async Task<Stream> OpenConsole(CancellationToken ct)
    {
        var r = await _streams.GetAsync("console", HttpCompletionOption.ResponseHeadersRead, ct);
        r.EnsureSuccessStatusCode();
        return await r.Content.ReadAsStreamAsync(ct);
    }

    public void Dispose()
    {
        _api.Dispose();
        _streams.Dispose();
    }
}
