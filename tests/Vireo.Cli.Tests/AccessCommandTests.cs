using System.Text.Json;
using Vireo.Api;
using Vireo.Daemon.Tests;
using Vireo.Tests;

namespace Vireo.Cli.Tests;

/// <summary>vireo whoami, tenant and user against a real vireod: a token file made by `user add > FILE` works as written.</summary>
public class AccessCommandTests
{
    private static TestEnvironment.ProcessResult Vireo(DaemonProcess d, string arguments, string? tokenFile = null) =>
        VireoProcess.Run(arguments, env: [("VIREO_CONNECT", d.Socket), .. tokenFile is null ? Array.Empty<(string, string)>() : [("VIREO_TOKEN_FILE", tokenFile)]]);

    [Fact]
    public void An_admin_makes_a_tenant_and_its_users_and_each_sees_what_its_role_allows()
    {
        using var d = new DaemonProcess();
        var added = Vireo(d, "tenant add acme");
        Assert.True(added.ExitCode == 0 && added.Output.Contains("tenant acme: added"), added.Output + added.Error);
        string images = Path.Combine(d.StateDir, "tenants", "acme", "images");
        Assert.True(Directory.Exists(images), images);
        File.Copy(TestEnvironment.Guest("idle"), Path.Combine(images, "idle.elf"));

        // The token alone is on stdout: redirected, it is a token file.
        var op = Vireo(d, "user add acme-op --tenant acme --role operator");
        Assert.True(op.ExitCode == 0 && op.Output.Trim().StartsWith("vireo_", StringComparison.Ordinal) && op.Output.Trim().Split('\n').Length == 1, op.Output + op.Error);
        string opToken = Path.Combine(d.StateDir, "acme-op.token");
        File.WriteAllText(opToken, op.Output);
        string viewerToken = Path.Combine(d.StateDir, "acme-viewer.token");
        File.WriteAllText(viewerToken, Vireo(d, "user add acme-viewer --tenant acme --role viewer").Output);

        var me = Vireo(d, "whoami", opToken);
        Assert.True(me.ExitCode == 0 && me.Output.Contains("acme-op (operator of tenant acme)"), me.Output + me.Error);
        Assert.Contains("root (admin of tenant default)", Vireo(d, "whoami").Output);

        string def = Path.Combine(d.StateDir, "a1.yaml");
        File.WriteAllText(def, $"name: a1\nkernel: {Path.Combine(images, "idle.elf")}\nmemory_mib: 32\n");
        var refused = Vireo(d, $"create --no-start {def}", viewerToken);
        Assert.True(refused.ExitCode == 5 && refused.Error.Contains("acme-viewer is a viewer: POST /vms needs the operator role"), $"{refused.ExitCode} {refused.Output} {refused.Error}");
        Assert.Equal(0, Vireo(d, $"create --no-start {def}", opToken).ExitCode);
        var onBehalf = Vireo(d, $"create --no-start --tenant default {def}", opToken); // only an admin names another tenant
        Assert.Equal(5, onBehalf.ExitCode);

        // An admin creates for a tenant by --tenant; the tenant's operator then sees it as its own.
        string def2 = Path.Combine(d.StateDir, "a2.yaml");
        File.WriteAllText(def2, $"name: a2\nkernel: {Path.Combine(images, "idle.elf")}\nmemory_mib: 32\n");
        Assert.Equal(0, Vireo(d, $"create --no-start --tenant acme {def2}").ExitCode);
        var list = JsonSerializer.Deserialize(Vireo(d, "list --json", viewerToken).Output, DaemonJson.Default.VmListEntryArray)!;
        Assert.Equal(["a1", "a2"], list.Select(v => v.Name).Order());
        Assert.All(list, v => Assert.Equal("acme", v.Tenant));

        var tenants = JsonSerializer.Deserialize(Vireo(d, "tenant list --json").Output, DaemonJson.Default.TenantInfoArray)!;
        var acme = tenants.Single(t => t.Name == "acme");
        Assert.Equal((2, 2), (acme.Vms, acme.Users));
        var users = Vireo(d, "user list");
        Assert.Contains("acme-viewer", users.Output);
        Assert.DoesNotContain("vireo_", users.Output);

        // A new token: the old file stops working (exit 5), the new one works.
        string renewed = Vireo(d, "user token acme-op").Output;
        Assert.Equal(5, Vireo(d, "list", opToken).ExitCode);
        File.WriteAllText(opToken, renewed);
        Assert.Equal(0, Vireo(d, "list", opToken).ExitCode);

        var busy = Vireo(d, "tenant remove acme");
        Assert.True(busy.ExitCode != 0 && busy.Error.Contains("still has 2 VM(s) and 2 user(s)"), busy.Error);
        Assert.Equal(0, Vireo(d, "undefine a1").ExitCode);
        Assert.Equal(0, Vireo(d, "undefine a2").ExitCode);
        Assert.Equal(0, Vireo(d, "user remove acme-op").ExitCode);
        Assert.Equal(0, Vireo(d, "user remove acme-viewer").ExitCode);
        Assert.Equal(5, Vireo(d, "list", viewerToken).ExitCode);
        Assert.Equal(0, Vireo(d, "tenant remove acme").ExitCode);
        Assert.DoesNotContain("acme", Vireo(d, "tenant list").Output);
    }
}
