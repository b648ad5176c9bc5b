using System.Net;
using System.Net.Sockets;
using Vireo.Interop;

namespace Vireo.Vmm.Migration;

/// <summary>Why a migration did not happen (or was refused), in words for the user; the source VM goes on.</summary>
public sealed class MigrationException(string message) : Exception(message);

/// <summary>
/// Where a migration goes, in Cloud Hypervisor's words: <c>tcp:HOST:PORT</c> or <c>unix:PATH</c>.
/// The destination listens on it (<see cref="Listen"/>); the source connects (<see cref="Connect"/>).
/// </summary>
public sealed record MigrationUrl(string Text, string? Host, int Port, string? Path)
{
    public bool IsUnix => Path is not null;

    public override string ToString() => Text;

    /// <summary>Parses <paramref name="text"/>; throws <see cref="MigrationException"/> naming <paramref name="field"/>.</summary>
    public static MigrationUrl Parse(string field, string? text)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            throw new MigrationException($"{field} is required: tcp:HOST:PORT or unix:PATH");
        }
        if (text.StartsWith("unix:", StringComparison.Ordinal))
        {
            string path = text[5..];
            if (path.Length == 0 || path.Contains('\0'))
            {
                throw new MigrationException($"{field}: '{text}' names no socket path after unix:");
            }
            if (!UnixSocket.PathFits(path))
            {
                throw new MigrationException($"{field}: the socket path is too long for a Unix socket (at most {UnixSocket.MaxPathBytes} bytes)");
            }
            return new MigrationUrl(text, null, 0, path);
        }
        if (text.StartsWith("tcp:", StringComparison.Ordinal))
        {
            string rest = text[4..];
            int colon = rest.LastIndexOf(':');
            if (colon <= 0 || !int.TryParse(rest[(colon + 1)..], System.Globalization.NumberStyles.None, null, out int port) || port is < 1 or > 65535)
            {
                throw new MigrationException($"{field}: '{text}' is not tcp:HOST:PORT with a port from 1 to 65535");
            }
            string host = rest[..colon].TrimStart('[').TrimEnd(']');
            return new MigrationUrl(text, host, port, null);
        }
        throw new MigrationException($"{field}: '{text}' is not tcp:HOST:PORT or unix:PATH");
    }

    private IPAddress[] Addresses()
    {
        if (IPAddress.TryParse(Host, out var ip))
        {
            return [ip];
        }
        try
        {
            return Dns.GetHostAddresses(Host!);
        }
        catch (SocketException e)
        {
            throw new MigrationException($"{Text}: cannot resolve {Host}: {e.Message}");
        }
    }

    /// <summary>Connects within <paramref name="timeout"/>; throws <see cref="MigrationException"/>.</summary>
    public Socket Connect(TimeSpan timeout)
    {
        Socket socket = IsUnix
            ? new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
            : new Socket(SocketType.Stream, ProtocolType.Tcp);
        try
        {
            var connect = IsUnix
                ? socket.ConnectAsync(new UnixDomainSocketEndPoint(Path!))
                : socket.ConnectAsync(Addresses(), Port);
            if (!connect.Wait(timeout))
            {
                throw new MigrationException($"{Text}: no answer within {timeout.TotalSeconds:0} s");
            }
            if (!IsUnix)
            {
                socket.NoDelay = true;
            }
            return socket;
        }
        catch (AggregateException e) when (e.InnerException is SocketException s)
        {
            socket.Dispose();
            throw new MigrationException($"{Text}: cannot connect: {s.Message}");
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Binds and listens (a stale socket file at a unix: path is replaced, anything else refused).</summary>
    public Socket Listen()
    {
        if (IsUnix)
        {
            if (UnixSocket.BindProblem(Path!) is { } problem)
            {
                throw new MigrationException($"receiver_url: {Path} {problem}");
            }
            Libc.RemoveStaleSocket(Path!);
        }
        Socket socket = IsUnix
            ? new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
            : new Socket(SocketType.Stream, ProtocolType.Tcp);
        try
        {
            socket.Bind(IsUnix ? new UnixDomainSocketEndPoint(Path!) : new IPEndPoint(Addresses()[0], Port));
            socket.Listen(1);
            return socket;
        }
        catch (SocketException e)
        {
            socket.Dispose();
            throw new MigrationException($"receiver_url: cannot listen on {Text}: {e.Message}");
        }
    }
}
