using Vireo.Api;

namespace Vireo.Daemon.Access;

/// <summary>
/// Who sent a request, as <see cref="Authentication"/> found out: a user, its tenant and role, and
/// how it was known (client). Every handler that filters or places things by tenant asks this.
/// </summary>
internal sealed record Caller(string User, string Tenant, string Role, string Client)
{
    private const string Key = "vireo.caller";

    /// <summary>The host's own administrator: root (or vireod's own user) on the Unix socket, or the --token-file's holder.</summary>
    public const string HostAdmin = "root";

    public bool IsAdmin => Role == Roles.Admin;

    /// <summary>Whether this caller may see and touch what belongs to <paramref name="tenant"/>.</summary>
    public bool Sees(string tenant) => IsAdmin || tenant == Tenant;

    public WhoAmI WhoAmI => new(User, Tenant, Role, Client);

    public static Caller Of(HttpContext context) => (Caller)context.Items[Key]!;

    public static Caller? Find(HttpContext context) => context.Items.TryGetValue(Key, out var c) ? c as Caller : null;

    public void Attach(HttpContext context) => context.Items[Key] = this;
}
