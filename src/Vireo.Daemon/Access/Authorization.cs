using Vireo.Api;

namespace Vireo.Daemon.Access;

/// <summary>The role a route needs, when it is not the default (a read needs a viewer, a change an operator).</summary>
internal sealed record Needs(string Role);

/// <summary>
/// What a caller may do, decided once per request from the route it matched, before its handler:
/// <list type="bullet">
/// <item>a route under /vms/{name} of a VM another tenant owns answers 404, as for no VM at all: a
/// tenant learns nothing of another's VMs (save that a name is taken, at define or rename);</item>
/// <item>then the role: GET and HEAD need a viewer, everything else an operator, and routes marked
/// <see cref="Needs"/> what they say (users, tenants and migrations need an admin).</item>
/// </list>
/// Lists, the event stream, define, save and restore filter or place by tenant themselves (<see cref="Caller"/>).
/// </summary>
internal sealed class Authorization(VmStore store)
{
    public async Task Invoke(HttpContext context, RequestDelegate next)
    {
        var caller = Caller.Of(context);
        var endpoint = context.GetEndpoint();
        string pattern = (endpoint as RouteEndpoint)?.RoutePattern.RawText ?? context.Request.Path;
        if (!caller.IsAdmin && pattern.StartsWith("/vms/{name}", StringComparison.Ordinal)
            && context.Request.RouteValues["name"] is string name && store.Get(name) is { } vm && vm.Tenant != caller.Tenant)
        {
            await Refuse(context, 404, $"no VM named '{name}'");
            return;
        }
        string needed = endpoint?.Metadata.GetMetadata<Needs>()?.Role
            ?? (HttpMethods.IsGet(context.Request.Method) || HttpMethods.IsHead(context.Request.Method) ? Roles.Viewer : Roles.Operator);
        if (endpoint is RouteEndpoint && !Roles.Holds(caller.Role, needed))
        {
            await Refuse(context, 403, $"{caller.User} is {Article(caller.Role)} {caller.Role}: {context.Request.Method} {pattern} needs the {needed} role");
            return;
        }
        await next(context);
    }

    private static string Article(string role) => role[0] is 'a' or 'o' ? "an" : "a";

    private static Task Refuse(HttpContext context, int status, string why)
    {
        context.Response.StatusCode = status;
        return context.Response.WriteAsJsonAsync(new ApiError(why), DaemonJson.Default.ApiError);
    }
}

internal static class NeedsExtensions
{
    /// <summary>Marks a route as needing <paramref name="role"/> (<see cref="Authorization"/>).</summary>
    public static TBuilder Needs<TBuilder>(this TBuilder builder, string role) where TBuilder : IEndpointConventionBuilder =>
        builder.WithMetadata(new Needs(role));
}
