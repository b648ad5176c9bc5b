using System.Net.Sockets;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Connections.Features;
using Vireo.Api;

namespace Vireo.Daemon.Access;

/// <summary>
/// Finds who a request comes from, before anything else reads it:
/// <list type="bullet">
/// <item>a bearer token (Authorization: Bearer TOKEN), on either listener: the user it belongs to,
/// or the host's admin for --token-file's;</item>
/// <item>else, on TCP, a client certificate (when --tls-client-ca asks for them) whose subject's CN
/// names a user;</item>
/// <item>else, on the Unix socket, the peer's credentials (SO_PEERCRED): root and vireod's own user
/// are the host's admin, any other uid the user mapped to it (`vireo user add --uid`).</item>
/// </list>
/// Nobody else gets further: 401 with no credentials or unknown ones on TCP, 403 for an unmapped uid.
/// </summary>
internal sealed class Authentication(AccessStore access, byte[]? adminTokenHash)
{
    private static readonly uint OwnUid = Vireo.Interop.Libc.GetEuid();

    public async Task Invoke(HttpContext context, RequestDelegate next)
    {
        var (caller, status, why) = Identify(context);
        if (caller is null)
        {
            context.Response.StatusCode = status;
            if (status == 401)
            {
                context.Response.Headers.WWWAuthenticate = "Bearer";
            }
            await context.Response.WriteAsJsonAsync(new ApiError(why!), DaemonJson.Default.ApiError);
            return;
        }
        caller.Attach(context);
        await next(context);
    }

    private (Caller? Caller, int Status, string? Why) Identify(HttpContext context)
    {
        bool tcp = context.Connection.RemoteIpAddress is not null;
        string where = tcp ? $"{context.Connection.RemoteIpAddress}:{context.Connection.RemotePort}" : "the unix socket";
        string header = context.Request.Headers.Authorization.ToString();
        if (header.Length > 0)
        {
            if (!header.StartsWith("Bearer ", StringComparison.Ordinal))
            {
                return (null, 401, "Authorization: only a bearer token is taken (Authorization: Bearer TOKEN)");
            }
            byte[] hash = AccessStore.Hash(header["Bearer ".Length..].Trim());
            // Both checks always run, so the time taken says nothing of which one matched.
            var user = access.UserByTokenHash(hash);
            bool admin = adminTokenHash is not null && CryptographicOperations.FixedTimeEquals(hash, adminTokenHash);
            if (admin)
            {
                return (new Caller(Caller.HostAdmin, Tenants.Default, Roles.Admin, $"token from {where}"), 0, null);
            }
            if (user is not null)
            {
                return (new Caller(user.Name, user.Tenant, user.Role, $"token from {where}"), 0, null);
            }
            return (null, 401, "the bearer token is no vireod user's (an admin makes one: vireo user add NAME --tenant TENANT --role ROLE)");
        }
        if (tcp)
        {
            if (context.Connection.ClientCertificate is { } certificate)
            {
                string cn = certificate.GetNameInfo(System.Security.Cryptography.X509Certificates.X509NameType.SimpleName, forIssuer: false);
                return access.User(cn) is { } user
                    ? (new Caller(user.Name, user.Tenant, user.Role, $"certificate {cn} from {where}"), 0, null)
                    : (null, 401, $"the client certificate's CN '{cn}' is no vireod user's");
            }
            return (null, 401, "a bearer token is required on TCP (Authorization: Bearer TOKEN)");
        }
        if (PeerCredentials(context) is not var (pid, uid))
        {
            return (null, 403, "the unix socket's peer credentials could not be read");
        }
        if (uid == 0 || uid == OwnUid)
        {
            return (new Caller(Caller.HostAdmin, Tenants.Default, Roles.Admin, $"unix uid {uid} pid {pid}"), 0, null);
        }
        return access.UserByUid(uid) is { } mapped
            ? (new Caller(mapped.Name, mapped.Tenant, mapped.Role, $"unix uid {uid} pid {pid}"), 0, null)
            : (null, 403, $"uid {uid} is no vireod user (an admin maps it: vireo user add NAME --tenant TENANT --role ROLE --uid {uid}), or send a token");
    }

    /// <summary>struct ucred { pid_t pid; uid_t uid; gid_t gid; } of the peer, from getsockopt(SOL_SOCKET, SO_PEERCRED).</summary>
    private static (int Pid, uint Uid)? PeerCredentials(HttpContext context)
    {
        if (context.Features.Get<IConnectionSocketFeature>()?.Socket is not { AddressFamily: AddressFamily.Unix } socket)
        {
            return null;
        }
        Span<byte> ucred = stackalloc byte[12];
        try
        {
            if (socket.GetRawSocketOption(SolSocket, SoPeerCred, ucred) != ucred.Length)
            {
                return null;
            }
        }
        catch (SocketException)
        {
            return null;
        }
        return (BitConverter.ToInt32(ucred), BitConverter.ToUInt32(ucred[4..]));
    }

    private const int SolSocket = 1, SoPeerCred = 17;
}
