using System.Net.Sockets;
using Vireo.Interop;

namespace Vireo.Daemon;

/// <summary>
/// Carries a sandboxed VMM's migration stream to its receiver. The VMM's root holds only its own
/// directory and its network namespace has no interface, so it reaches no other VMM's socket; vireod
/// listens on a socket in the VM's directory (the VM's uid's, 0600), takes the one connection the
/// VMM makes, connects to the receiver itself and copies both ways until each side has said all it
/// had (a half-close is passed on). The stream's last word is the receiver's, after the commit, so the
/// VMM's send returns only once every byte went through.
/// </summary>
internal sealed class MigrationRelay : IDisposable
{
    private readonly Socket _listener;
    private readonly Thread _thread;
    private readonly string _receiver;
    private Socket? _from, _to;
    private volatile bool _disposed;

    public string Path { get; }

    private MigrationRelay(string path, Socket listener, string receiver)
    {
        Path = path;
        _listener = listener;
        _receiver = receiver;
        _thread = new Thread(Run) { IsBackground = true, Name = "migration relay" };
    }

    /// <summary>Listens at <paramref name="path"/> for the VMM of uid <paramref name="uid"/>, to carry its stream to the unix socket <paramref name="receiver"/>.</summary>
    public static MigrationRelay Start(string path, uint uid, string receiver)
    {
        // The socket is made, and given its mode and owner, in a directory of root's beside the VM's (chmod
        // follows a link, which the VM's uid could put in the socket's place in its own directory), then
        // renamed into the VM's directory, never over anything: whatever the VM's uid left there goes first.
        VmDirEntries.RemoveUnless(path, FileKind.Socket);
        File.Delete(path);
        string staging = System.IO.Path.Combine(System.IO.Path.GetDirectoryName(System.IO.Path.GetDirectoryName(path)!)!, $".relay-{Guid.NewGuid():n}");
        Directory.CreateDirectory(staging, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        string made = System.IO.Path.Combine(staging, "s");
        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            listener.Bind(new UnixDomainSocketEndPoint(made));
            Check.Io(Namespaces.Chmod(made, 0x180), $"chmod({made})");
            Check.Io(Namespaces.LChown(made, uid, uid), $"lchown({made})");
            Check.Io(Namespaces.RenameNoReplace(made, path), $"rename({made}, {path})");
            listener.Listen(1);
        }
        catch
        {
            listener.Dispose();
            File.Delete(made);
            throw;
        }
        finally
        {
            Directory.Delete(staging, recursive: true);
        }
        var relay = new MigrationRelay(path, listener, receiver);
        relay._thread.Start();
        return relay;
    }

    private void Run()
    {
        try
        {
            _from = _listener.Accept();
            _listener.Close(); // one stream, one connection
            _to = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            _to.Connect(new UnixDomainSocketEndPoint(_receiver));
            var back = new Thread(() => Copy(_to, _from)) { IsBackground = true, Name = "migration relay back" };
            back.Start();
            Copy(_from, _to);
            back.Join();
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // Ended by Dispose, or the receiver is gone: the VMM's send fails on its own socket, and says why.
            _from?.Dispose();
        }
    }

    private static void Copy(Socket from, Socket to)
    {
        var buffer = new byte[1 << 20];
        try
        {
            int n;
            while ((n = from.Receive(buffer)) > 0)
            {
                for (int sent = 0; sent < n;)
                {
                    sent += to.Send(buffer, sent, n - sent, SocketFlags.None);
                }
            }
            to.Shutdown(SocketShutdown.Send);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // One side went: both go, so that the other end sees it.
            from.Dispose();
            to.Dispose();
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        _listener.Dispose();
        _from?.Dispose();
        _to?.Dispose();
        _thread.Join(TimeSpan.FromSeconds(5));
        File.Delete(Path);
    }
}
