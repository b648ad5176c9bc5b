using Vireo.Api;
using Vireo.Api.Definitions;

namespace Vireo.Daemon.Access;

/// <summary>
/// The routes of who is who: GET /whoami for anyone; tenants and users for admins only. A user's
/// token is shown once, in the answer that made it.
/// </summary>
internal static class AccessApi
{
    public static void Map(WebApplication app, VmStore store, AccessStore access)
    {
        app.MapGet("/whoami", (HttpContext context) => Results.Json(Caller.Of(context).WhoAmI, DaemonJson.Default.WhoAmI))
            .WithSummary("Who vireod takes the caller for: user, tenant, role, and how it knew (client)").Produces<WhoAmI>();

        app.MapGet("/tenants", () => Results.Json(access.Tenants().Select(t => Info(t, store, access)).ToArray(), DaemonJson.Default.TenantInfoArray))
            .WithSummary("Every tenant, the default one first. Admins only").Needs(Roles.Admin).Produces<TenantInfo[]>();

        app.MapPost("/tenants", async (HttpRequest request) =>
        {
            var (body, error) = await DaemonApi.ReadOptional(request, DaemonJson.Default.TenantRequest, "tenant", null);
            if (error is not null)
            {
                return error;
            }
            if (DefinitionReader.CheckName(body!.Name) is { } bad)
            {
                return DaemonApi.Fail(400, $"name: {bad}");
            }
            var dirs = new List<string>();
            var given = body.ImageDirs ?? [];
            for (int i = 0; i < given.Length; i++)
            {
                if (!Path.IsPathFullyQualified(given[i]) || given[i].Contains('\0', StringComparison.Ordinal))
                {
                    return DaemonApi.Fail(400, $"image_dirs[{i}]: '{given[i]}' is not an absolute path");
                }
                if (!Directory.Exists(given[i]))
                {
                    return DaemonApi.Fail(400, $"image_dirs[{i}]: {given[i]} is not a directory");
                }
                dirs.Add(Path.GetFullPath(given[i]).TrimEnd('/') + "/");
            }
            if (dirs.Count == 0)
            {
                dirs.Add(access.DefaultImageDirOf(body.Name));
            }
            if (access.Tenant(body.Name) is not null || !access.AddTenant(body.Name, [.. dirs]))
            {
                return DaemonApi.Fail(409, $"name: a tenant named '{body.Name}' exists");
            }
            if (body.ImageDirs is null or [])
            {
                Directory.CreateDirectory(dirs[0], UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            }
            return Results.Json(Info(access.Tenant(body.Name)!, store, access), DaemonJson.Default.TenantInfo, statusCode: 201);
        })
        .WithSummary("Add a tenant, with the directories its images lie in (STATE/tenants/NAME/images, made now, when none are given). Admins only")
        .Needs(Roles.Admin).Body<TenantRequest>("application/json")
        .Produces<TenantInfo>(201).Produces<ApiError>(400).Produces<ApiError>(409);

        app.MapDelete("/tenants/{name}", (string name) =>
        {
            if (name == Tenants.Default)
            {
                return DaemonApi.Fail(409, "the default tenant cannot be removed");
            }
            if (access.Tenant(name) is null)
            {
                return DaemonApi.Fail(404, $"no tenant named '{name}'");
            }
            int vms = store.CountOf(name), users = access.Users().Count(u => u.Tenant == name);
            if (vms > 0 || users > 0)
            {
                return DaemonApi.Fail(409, $"tenant '{name}' still has {vms} VM(s) and {users} user(s): undefine and remove them first");
            }
            access.RemoveTenant(name);
            return Results.NoContent();
        })
        .WithSummary("Remove a tenant that has no VMs and no users (its image directories stay). Admins only")
        .Needs(Roles.Admin).Produces(204).Produces<ApiError>(404).Produces<ApiError>(409);

        app.MapGet("/users", () => Results.Json(access.Users().Select(u => u.Info()).ToArray(), DaemonJson.Default.UserInfoArray))
            .WithSummary("Every user (tokens are never shown again). Admins only").Needs(Roles.Admin).Produces<UserInfo[]>();

        app.MapPost("/users", async (HttpRequest request) =>
        {
            var (body, error) = await DaemonApi.ReadOptional(request, DaemonJson.Default.UserRequest, "user", null);
            if (error is not null)
            {
                return error;
            }
            if (DefinitionReader.CheckName(body!.Name) is { } bad)
            {
                return DaemonApi.Fail(400, $"name: {bad}");
            }
            if (body.Name == Caller.HostAdmin)
            {
                return DaemonApi.Fail(409, $"name: '{Caller.HostAdmin}' is the host's own admin (root on the unix socket)");
            }
            if (!Roles.All.Contains(body.Role))
            {
                return DaemonApi.Fail(400, $"role: '{body.Role}' is not one of {string.Join(", ", Roles.All)}");
            }
            if (access.Tenant(body.Tenant) is null)
            {
                return DaemonApi.Fail(400, $"tenant: no tenant named '{body.Tenant}'");
            }
            if (body.Uid == 0)
            {
                return DaemonApi.Fail(400, "uid: 0 is root, the host's own admin");
            }
            if (body.Uid is { } uid && access.UserByUid(uid) is { } taken)
            {
                return DaemonApi.Fail(409, $"uid: {uid} is {taken.Name}'s");
            }
            var (user, token) = access.AddUser(body.Name, body.Tenant, body.Role, body.Uid);
            return user is null ? DaemonApi.Fail(409, $"name: a user named '{body.Name}' exists")
                : Results.Json(user.Info(token), DaemonJson.Default.UserInfo, statusCode: 201);
        })
        .WithSummary("Add a user of a tenant with a role (viewer, operator, admin), and a uid to map a local Unix user to it; " +
            "the answer holds its token, shown this once. Admins only")
        .Needs(Roles.Admin).Body<UserRequest>("application/json")
        .Produces<UserInfo>(201).Produces<ApiError>(400).Produces<ApiError>(409);

        app.MapPost("/users/{name}/token", (string name) => access.NewTokenFor(name) is { } token && access.User(name) is { } user
                ? Results.Json(user.Info(token), DaemonJson.Default.UserInfo)
                : DaemonApi.Fail(404, $"no user named '{name}'"))
            .WithSummary("Give a user a new token (the old one stops working at once); shown this once. Admins only")
            .Needs(Roles.Admin).Produces<UserInfo>().Produces<ApiError>(404);

        app.MapDelete("/users/{name}", (string name) => access.RemoveUser(name) ? Results.NoContent() : DaemonApi.Fail(404, $"no user named '{name}'"))
            .WithSummary("Remove a user: its token stops working at once. Admins only").Needs(Roles.Admin).Produces(204).Produces<ApiError>(404);
    }

    private static TenantInfo Info(TenantRecord t, VmStore store, AccessStore access) =>
        new(t.Name, t.ImageDirs, store.CountOf(t.Name), access.Users().Count(u => u.Tenant == t.Name), t.CreatedAt);
}
