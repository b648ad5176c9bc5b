using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Spectre.Console;
using Vireo.Api;

namespace Vireo.Cli.Manage;

/// <summary>
/// Who may do what: `vireo whoami`, and for admins `vireo tenant add|list|remove` and
/// `vireo user add|list|remove|token`. A user's token is printed once, when it is made.
/// </summary>
internal static class AccessCommands
{
    public static IEnumerable<Command> Create(Option<bool> json)
    {
        var whoami = new Command("whoami", "Who vireod takes you for: user, tenant, role, and how it knew") { json };
        whoami.SetAction(p => ManageCommands.Run(p, client =>
        {
            var me = client.Get("whoami", DaemonJson.Default.WhoAmI);
            Console.WriteLine(p.GetValue(json) ? JsonSerializer.Serialize(me, DaemonJson.Default.WhoAmI)
                : $"{me.User} ({me.Role} of tenant {me.Tenant}), by {me.Client}");
        }));
        yield return whoami;
        yield return Tenant(json);
        yield return User(json);
    }

    private static Command Tenant(Option<bool> json)
    {
        var tenant = new Command("tenant", "Tenants: each owns VMs and image directories, and sees only its own (admins only)");

        var addName = new Argument<string>("name") { Description = "The tenant's name (letters, digits, '.', '_', '-')" };
        var imageDir = new Option<string[]>("--image-dir")
        {
            Description = "A directory its VMs' kernels, initrds, disks and saves lie in (repeatable; default STATE/tenants/NAME/images, made for it)",
            AllowMultipleArgumentsPerToken = false,
        };
        var add = new Command("add", "Add a tenant") { addName, imageDir, json };
        add.SetAction(p => ManageCommands.Run(p, client =>
        {
            string[]? dirs = p.GetValue(imageDir) is { Length: > 0 } given ? [.. given.Select(Path.GetFullPath)] : null;
            var info = client.Send(HttpMethod.Post, "tenants", DaemonJson.Default.TenantInfo,
                JsonSerializer.Serialize(new TenantRequest(p.GetValue(addName)!, dirs), DaemonJson.Default.TenantRequest));
            Console.WriteLine(p.GetValue(json) ? JsonSerializer.Serialize(info, DaemonJson.Default.TenantInfo)
                : $"tenant {info.Name}: added, images in {string.Join(", ", info.ImageDirs)}");
        }));
        tenant.Subcommands.Add(add);

        var list = new Command("list", "Every tenant: Name, VMs, Users, Image directories") { json };
        list.SetAction(p => ManageCommands.Run(p, client =>
        {
            var tenants = client.Get("tenants", DaemonJson.Default.TenantInfoArray);
            if (p.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(tenants, DaemonJson.Default.TenantInfoArray));
                return;
            }
            var table = new Table { Border = TableBorder.None };
            table.AddColumn("Name").AddColumn(new TableColumn("VMs").RightAligned()).AddColumn(new TableColumn("Users").RightAligned()).AddColumn("Image directories");
            foreach (var t in tenants)
            {
                table.AddRow(Markup.Escape(t.Name), t.Vms.ToString(CultureInfo.InvariantCulture), t.Users.ToString(CultureInfo.InvariantCulture),
                    Markup.Escape(string.Join(", ", t.ImageDirs)));
            }
            AnsiConsole.Write(table);
        }));
        tenant.Subcommands.Add(list);

        var removeName = new Argument<string>("name") { Description = "The tenant's name" };
        var remove = new Command("remove", "Remove a tenant with no VMs and no users (its image directories stay)") { removeName };
        remove.SetAction(p => ManageCommands.Run(p, client =>
        {
            client.Send(HttpMethod.Delete, $"tenants/{Uri.EscapeDataString(p.GetValue(removeName)!)}");
            Console.WriteLine($"tenant {p.GetValue(removeName)}: removed");
        }));
        tenant.Subcommands.Add(remove);
        return tenant;
    }

    private static Command User(Option<bool> json)
    {
        var user = new Command("user", "Users: each of one tenant, with a role (viewer, operator, admin) and a token (admins only)");

        var addName = new Argument<string>("name") { Description = "The user's name (letters, digits, '.', '_', '-'); a client certificate's CN names it too" };
        var tenant = new Option<string>("--tenant") { Description = "Its tenant", Required = true };
        var role = new Option<string>("--role") { Description = "viewer (reads), operator (also changes its tenant's VMs) or admin (anything, any tenant)", Required = true };
        role.AcceptOnlyFromAmong(Roles.All);
        var uid = ManageCommands.WholeNumber("--uid", "A local Unix user's uid that is this user on vireod's socket (SO_PEERCRED), with no token", 1, uint.MaxValue);
        var add = new Command("add", "Add a user; its token is printed this once") { addName, tenant, role, uid, json };
        add.SetAction(p => ManageCommands.Run(p, client =>
        {
            var request = new UserRequest(p.GetValue(addName)!, p.GetValue(tenant)!, p.GetValue(role)!, p.GetValue(uid) is long u ? (uint)u : null);
            var info = client.Send(HttpMethod.Post, "users", DaemonJson.Default.UserInfo, JsonSerializer.Serialize(request, DaemonJson.Default.UserRequest));
            PrintWithToken(info, p.GetValue(json), "added");
        }));
        user.Subcommands.Add(add);

        var list = new Command("list", "Every user: Name, Tenant, Role, UID, Created (UTC)") { json };
        list.SetAction(p => ManageCommands.Run(p, client =>
        {
            var users = client.Get("users", DaemonJson.Default.UserInfoArray);
            if (p.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(users, DaemonJson.Default.UserInfoArray));
                return;
            }
            var table = new Table { Border = TableBorder.None };
            table.AddColumn("Name").AddColumn("Tenant").AddColumn("Role").AddColumn(new TableColumn("UID").RightAligned()).AddColumn("Created");
            foreach (var u in users)
            {
                table.AddRow(Markup.Escape(u.Name), Markup.Escape(u.Tenant), u.Role, u.Uid?.ToString(CultureInfo.InvariantCulture) ?? "-",
                    u.CreatedAt.ToUniversalTime().ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture));
            }
            AnsiConsole.Write(table);
        }));
        user.Subcommands.Add(list);

        var tokenName = new Argument<string>("name") { Description = "The user's name" };
        var token = new Command("token", "Give a user a new token (the old one stops working at once); printed this once") { tokenName, json };
        token.SetAction(p => ManageCommands.Run(p, client =>
            PrintWithToken(client.Send(HttpMethod.Post, $"users/{Uri.EscapeDataString(p.GetValue(tokenName)!)}/token", DaemonJson.Default.UserInfo),
                p.GetValue(json), "has a new token")));
        user.Subcommands.Add(token);

        var removeName = new Argument<string>("name") { Description = "The user's name" };
        var remove = new Command("remove", "Remove a user: its token stops working at once") { removeName };
        remove.SetAction(p => ManageCommands.Run(p, client =>
        {
            client.Send(HttpMethod.Delete, $"users/{Uri.EscapeDataString(p.GetValue(removeName)!)}");
            Console.WriteLine($"user {p.GetValue(removeName)}: removed");
        }));
        user.Subcommands.Add(remove);
        return user;
    }

    /// <summary>The token alone on stdout (so `vireo user add ... > FILE` makes a token file); what it is, on stderr. --json: the whole answer.</summary>
    private static void PrintWithToken(UserInfo info, bool json, string what)
    {
        if (json)
        {
            Console.WriteLine(JsonSerializer.Serialize(info, DaemonJson.Default.UserInfo));
            return;
        }
        Console.Error.WriteLine($"user {info.Name} ({info.Role} of tenant {info.Tenant}{(info.Uid is { } u ? $", uid {u}" : "")}): {what}; its token, shown this once:");
        Console.WriteLine(info.Token);
    }
}
