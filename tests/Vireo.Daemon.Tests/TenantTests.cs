using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Vireo.Api;
using Vireo.Tests;

namespace Vireo.Daemon.Tests;

/// <summary>
/// Users, tenants and roles on a real vireod: a tenant reaches nothing of another's, route by route
/// over every route the OpenAPI document lists; roles hold; a local uid is its user by SO_PEERCRED;
/// every change is in the audit log.
/// </summary>
public class TenantTests
{
    private sealed record Tenant(string Name, HttpClient Operator, HttpClient Viewer);

    private static async Task<string> Ok(HttpClient http, HttpMethod method, string path, string? json = null, int expect = 200)
    {
        using var request = new HttpRequestMessage(method, path);
        if (json is not null)
        {
            request.Content = new StringContent(json, Encoding.UTF8, "application/json");
        }
        using var response = await http.SendAsync(request);
        string body = await response.Content.ReadAsStringAsync();
        Assert.True((int)response.StatusCode == expect, $"{method} {path}: {(int)response.StatusCode} {Fault(body)}");
        return body;
    }

    /// <summary>A refusal's fault_message as a user reads it (JSON escapes its quotes); any other body as it is.</summary>
    private static string Fault(string body)
    {
        try
        {
            using var doc = JsonDocument.Parse(body);
            return doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("fault_message", out var m) ? m.GetString() ?? "" : body;
        }
        catch (JsonException)
        {
            return body;
        }
    }

    private static async Task<(int Status, string Body)> Call(HttpClient http, HttpMethod method, string path, string? json = null)
    {
        using var request = new HttpRequestMessage(method, path);
        if (json is not null)
        {
            request.Content = new StringContent(json, Encoding.UTF8, "application/json");
        }
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cts.Token);
        // A stream (the console) of a VM the caller may see would not end: its status is enough.
        string body = response.Content.Headers.ContentType?.MediaType is "text/event-stream" || (int)response.StatusCode == 200 && method == HttpMethod.Get && path.EndsWith("/console", StringComparison.Ordinal)
            ? "" : Fault(await response.Content.ReadAsStringAsync(cts.Token));
        return ((int)response.StatusCode, body);
    }

    private static HttpClient WithToken(DaemonProcess d, string token)
    {
        var http = UnixHttp.Client(d.Socket);
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        return http;
    }

    private static async Task<Tenant> MakeTenant(DaemonProcess d, string name)
    {
        var info = JsonSerializer.Deserialize(await Ok(d.Http, HttpMethod.Post, "tenants", $$"""{"name": "{{name}}"}""", 201), DaemonJson.Default.TenantInfo)!;
        File.Copy(TestEnvironment.Guest("idle"), Path.Combine(info.ImageDirs[0], "idle.elf"));
        var op = JsonSerializer.Deserialize(await Ok(d.Http, HttpMethod.Post, "users", $$"""{"name": "{{name}}-op", "tenant": "{{name}}", "role": "operator"}""", 201), DaemonJson.Default.UserInfo)!;
        var viewer = JsonSerializer.Deserialize(await Ok(d.Http, HttpMethod.Post, "users", $$"""{"name": "{{name}}-viewer", "tenant": "{{name}}", "role": "viewer"}""", 201), DaemonJson.Default.UserInfo)!;
        Assert.StartsWith("vireo_", op.Token);
        return new Tenant(name, WithToken(d, op.Token!), WithToken(d, viewer.Token!));
    }

    [Fact]
    public async Task A_tenant_reaches_nothing_of_another_tenants_on_any_route()
    {
        using var d = new DaemonProcess();
        var acme = await MakeTenant(d, "acme");
        var globex = await MakeTenant(d, "globex");
        string kernel = Path.Combine(d.StateDir, "tenants", "acme", "images", "idle.elf");
        await Ok(acme.Operator, HttpMethod.Post, "vms", $$"""{"name": "a1", "kernel": "{{kernel}}", "memory_mib": 32}""", 201);
        await Ok(acme.Operator, HttpMethod.Post, "vms/a1/snapshots/s1/revert", expect: 404); // no such snapshot: the owner reaches the route

        // Another tenant's kernel, or the default tenant's images, are outside acme's directories.
        var (status, body) = await Call(globex.Operator, HttpMethod.Post, "vms", $$"""{"name": "g1", "kernel": "{{kernel}}", "memory_mib": 32}""");
        Assert.True(status == 400 && body.Contains("outside the image directories"), body);
        (status, body) = await Call(globex.Operator, HttpMethod.Post, "vms", $$"""{"name": "g1", "kernel": "{{TestEnvironment.Guest("idle")}}", "memory_mib": 32}""");
        Assert.True(status == 400 && body.Contains("outside the image directories"), body);

        // Every route the API has, as globex's operator, aimed at acme's VM.
        using var doc = JsonDocument.Parse(await d.Http.GetStringAsync("openapi/v1.json"));
        var seen = new List<string>();
        foreach (var path in doc.RootElement.GetProperty("paths").EnumerateObject())
        {
            foreach (var op in path.Value.EnumerateObject())
            {
                var method = new HttpMethod(op.Name.ToUpperInvariant());
                string route = path.Name;
                string url = route.TrimStart('/').Replace("{name}", "a1").Replace("{snapshot}", "s1");
                string? json = method == HttpMethod.Get || method == HttpMethod.Delete ? null : route switch
                {
                    "/vms/{name}/save" or "/restore" => $$"""{"file": "{{d.StateDir}}/tenants/globex/images/x.save"}""",
                    "/vms/{name}/rename" => """{"new_name": "mine"}""",
                    "/vms/{name}/migrate" => $$"""{"destination": "unix:{{d.Socket}}"}""",
                    "/vms/{name}" => $$"""{"name": "a1", "kernel": "{{kernel}}"}""",
                    _ => "{}",
                };
                (status, body) = await Call(globex.Operator, method, url, json);
                seen.Add($"{op.Name.ToUpperInvariant()} {route}");
                if (route.StartsWith("/vms/{name}", StringComparison.Ordinal) && route != "/vms/{name}/migrate")
                {
                    Assert.True(status == 404 && body.Contains("no VM named 'a1'"), $"{method} {route}: {status} {body}");
                }
                else if (route.StartsWith("/users", StringComparison.Ordinal) || route.StartsWith("/tenants", StringComparison.Ordinal)
                    || route.StartsWith("/migrations", StringComparison.Ordinal) || route == "/vms/{name}/migrate")
                {
                    Assert.True(status is 403 or 404, $"{method} {route}: {status} {body}");
                    Assert.True(status == 404 ? body.Contains("no VM named") : body.Contains("needs the admin role"), $"{method} {route}: {status} {body}");
                }
                else
                {
                    // The routes that are no VM's: the caller's own view, or a refusal that names nothing of acme's.
                    Assert.True(route is "/vms" or "/restore" or "/events" or "/whoami" or "/schemas/vm-definition" or "/openapi/v1.json", $"{route}: a route this test does not know; say what a tenant may see of it");
                    Assert.DoesNotContain("a1", body);
                    Assert.DoesNotContain("acme", body);
                }
            }
        }
        Assert.Contains("DELETE /vms/{name}", seen);
        Assert.Contains("POST /users", seen);

        // Nothing of acme's changed, and globex sees an empty host.
        var a1 = JsonSerializer.Deserialize(await Ok(acme.Viewer, HttpMethod.Get, "vms/a1"), DaemonJson.Default.VmSummary)!;
        Assert.Equal(("a1", DomainState.ShutOff, "acme", 32L), (a1.Name, a1.State, a1.Tenant, a1.MemoryMib));
        Assert.Equal("[]", await Ok(globex.Viewer, HttpMethod.Get, "vms"));
        Assert.Contains("\"a1\"", await d.Http.GetStringAsync("vms")); // the host's admin sees every tenant's
        // acme's events are acme's: globex's replay from the start has none of them.
        (status, body) = await ReadEvents(globex.Viewer);
        Assert.DoesNotContain("a1", body);
        Assert.Contains("\"vm\":\"a1\"", (await ReadEvents(acme.Viewer)).Body);
    }

    private static async Task<(int Status, string Body)> ReadEvents(HttpClient http)
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(2));
        using var response = await http.GetAsync("events?after=0", HttpCompletionOption.ResponseHeadersRead);
        var text = new StringBuilder();
        try
        {
            using var stream = await response.Content.ReadAsStreamAsync(cts.Token);
            var buffer = new byte[4096];
            int n;
            while ((n = await stream.ReadAsync(buffer, cts.Token)) > 0)
            {
                text.Append(Encoding.UTF8.GetString(buffer, 0, n));
            }
        }
        catch (OperationCanceledException)
        {
            // the stream does not end: what came in 2 s is the replay
        }
        return ((int)response.StatusCode, text.ToString());
    }

    [Fact]
    public async Task Roles_hold_tokens_are_checked_and_every_change_is_audited()
    {
        using var d = new DaemonProcess();
        var acme = await MakeTenant(d, "acme");
        string kernel = Path.Combine(d.StateDir, "tenants", "acme", "images", "idle.elf");
        string def = $$"""{"name": "a1", "kernel": "{{kernel}}", "memory_mib": 32}""";
        var (status, body) = await Call(acme.Viewer, HttpMethod.Post, "vms", def);
        Assert.True(status == 403 && body.Contains("acme-viewer is a viewer: POST /vms needs the operator role"), body);
        await Ok(acme.Operator, HttpMethod.Post, "vms", def, 201);
        Assert.Contains("\"a1\"", await Ok(acme.Viewer, HttpMethod.Get, "vms"));
        (status, body) = await Call(acme.Operator, HttpMethod.Post, "users", """{"name": "eve", "tenant": "acme", "role": "admin"}""");
        Assert.True(status == 403 && body.Contains("needs the admin role"), body);
        (status, body) = await Call(acme.Operator, HttpMethod.Post, "vms?tenant=default", def.Replace("a1", "a2"));
        Assert.True(status == 403 && body.Contains("its own tenant"), body);
        using (var wrong = WithToken(d, "vireo_not-a-token"))
        {
            (status, body) = await Call(wrong, HttpMethod.Get, "vms");
            Assert.True(status == 401 && body.Contains("no vireod user's"), body);
        }
        Assert.Contains("\"role\":\"operator\"", await Ok(acme.Operator, HttpMethod.Get, "whoami"));
        // A new token: the old one stops working at once.
        var renewed = JsonSerializer.Deserialize(await Ok(d.Http, HttpMethod.Post, "users/acme-op/token"), DaemonJson.Default.UserInfo)!;
        Assert.Equal(401, (await Call(acme.Operator, HttpMethod.Get, "vms")).Status);
        using (var fresh = WithToken(d, renewed.Token!))
        {
            Assert.Contains("acme-op", await Ok(fresh, HttpMethod.Get, "whoami"));
        }
        // vireod keeps no token, only its hash.
        Assert.DoesNotContain(renewed.Token!, Encoding.Latin1.GetString(File.ReadAllBytes(Path.Combine(d.StateDir, "vireo.db"))));
        Assert.Contains("\"token\":null", await d.Http.GetStringAsync("users"));
        // A field of the wrong kind is named, with what it takes.
        (status, body) = await Call(d.Http, HttpMethod.Post, "users", """{"name": "neg", "tenant": "acme", "role": "viewer", "uid": -1}""");
        Assert.True(status == 400 && body.Contains("user: uid must be a whole number from 0 to 4294967295, got -1"), body);
        (status, body) = await Call(d.Http, HttpMethod.Post, "tenants", """{"name": "nested", "image_dirs": [["/srv"]]}""");
        Assert.True(status == 400 && body.Contains("tenant: image_dirs must be an array of strings, got an array"), body);
        (status, body) = await Call(d.Http, HttpMethod.Delete, "tenants/acme");
        Assert.True(status == 409 && body.Contains("still has 1 VM(s) and 2 user(s)"), body);

        var audit = File.ReadAllLines(Path.Combine(d.StateDir, "audit.log")).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        var refused = audit.Single(e => e.GetProperty("user").GetString() == "acme-viewer" && e.GetProperty("path").GetString() == "/vms");
        Assert.Equal((403, "POST", "acme"), (refused.GetProperty("status").GetInt32(), refused.GetProperty("method").GetString(), refused.GetProperty("tenant").GetString()));
        Assert.Contains(audit, e => e.GetProperty("user").GetString() == "acme-op" && e.GetProperty("status").GetInt32() == 201);
        Assert.Contains(audit, e => e.GetProperty("user").GetString() == "root" && e.GetProperty("path").GetString() == "/users/acme-op/token"
            && e.GetProperty("client").GetString()!.StartsWith("unix uid 0 pid ", StringComparison.Ordinal));
        Assert.All(audit, e => Assert.NotEqual("GET", e.GetProperty("method").GetString()));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(d.StateDir, "audit.log")));
    }

    [Fact]
    public async Task A_local_uid_is_its_user_by_its_peer_credentials_and_an_unknown_uid_is_refused()
    {
        // The socket is gid 4242's (--socket-group); its directory lets others through, not list it.
        using var d = new DaemonProcess(extraArgs: "--socket-group 4242");
        File.SetUnixFileMode(d.StateDir, (UnixFileMode)0x1c9); // 0711
        Assert.Equal(4242u, SocketGid(d.Socket));
        await MakeTenant(d, "acme");
        await Ok(d.Http, HttpMethod.Post, "users", """{"name": "alice", "tenant": "acme", "role": "viewer", "uid": 4242}""", 201);
        TestEnvironment.ProcessResult WhoAmI(int uid, int gid) =>
            TestEnvironment.Run("setpriv", $"--reuid={uid} --regid={gid} --clear-groups curl -sS --unix-socket {d.Socket} http://vireod/whoami");
        var alice = WhoAmI(4242, 4242);
        Assert.True(alice.Output.Contains("\"user\":\"alice\"") && alice.Output.Contains("\"client\":\"unix uid 4242 pid "), alice.Output + alice.Error);
        var stranger = WhoAmI(4343, 4242); // in the socket's group, yet no user's
        Assert.True(Fault(stranger.Output).Contains("uid 4343 is no vireod user"), stranger.Output + stranger.Error);
        var outsider = WhoAmI(4444, 4444); // not even in the group: the socket's mode stops its connect (EACCES; curl's exit 7)
        Assert.True(outsider.ExitCode == 7 && outsider.Output == "", outsider.Output + outsider.Error);
        Assert.Contains("\"user\":\"root\"", await d.Http.GetStringAsync("whoami"));
        var (status, body) = await Call(d.Http, HttpMethod.Post, "users", """{"name": "bob", "tenant": "acme", "role": "viewer", "uid": 4242}""");
        Assert.True(status == 409 && body.Contains("4242 is alice's"), body);
    }

    private static uint SocketGid(string path) =>
        uint.Parse(TestEnvironment.Run("stat", $"-c %g {path}").Output.Trim(), System.Globalization.CultureInfo.InvariantCulture);
}
