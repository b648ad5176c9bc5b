using System.Runtime.InteropServices;
using System.Text;

namespace Vireo.Interop;

/// <summary>
/// Unix datagram sockets through libc, for the packet path: a full or empty socket is an errno
/// (EAGAIN), not an exception, so the event loop pays nothing when it reads until empty.
/// </summary>
public static unsafe partial class UnixSocket
{
    public const int AF_UNIX = 1, SOCK_STREAM = 1, SOCK_DGRAM = 2, SOCK_NONBLOCK = 0x800, SOCK_CLOEXEC = 0x80000;
    public const int SOL_SOCKET = 1, SO_SNDBUF = 7, SO_RCVBUF = 8;
    public const int MSG_DONTWAIT = 0x40;
    public const int SockaddrSize = 110;   // sizeof(struct sockaddr_un): sun_family then 108 bytes of path

    /// <summary>The longest path a socket address holds: 108 bytes with the terminating NUL.</summary>
    public const int MaxPathBytes = 107;

    /// <summary>True when <paramref name="path"/>, plus <paramref name="reserve"/> bytes appended later, fits a socket address.</summary>
    public static bool PathFits(string path, int reserve = 0) =>
        path.Length > 0 && Encoding.UTF8.GetByteCount(path) + reserve <= MaxPathBytes;

    /// <summary>
    /// Why <paramref name="path"/> cannot be a socket this process binds (the words after the path),
    /// or null: too long for an address, a directory, or anything but a stale socket, which alone
    /// <see cref="Libc.RemoveStaleSocket"/> replaces (a file there is never deleted).
    /// </summary>
    public static string? BindProblem(string path)
    {
        if (!PathFits(path))
        {
            return path.Length == 0 ? "is empty" : $"is {Encoding.UTF8.GetByteCount(path)} bytes; a Unix socket path is at most {MaxPathBytes}";
        }
        return Libc.KindAt(path) switch
        {
            null or FileKind.Socket => null,
            FileKind.Directory => "is a directory, not a socket",
            _ => "exists and is not a socket; refusing to replace it",
        };
    }

    [LibraryImport("libc", EntryPoint = "socket", SetLastError = true)]
    private static partial int Socket(int domain, int type, int protocol);

    [LibraryImport("libc", EntryPoint = "bind", SetLastError = true)]
    private static partial int Bind(int fd, byte* addr, int length);

    [LibraryImport("libc", EntryPoint = "listen", SetLastError = true)]
    private static partial int ListenOn(int fd, int backlog);

    [LibraryImport("libc", EntryPoint = "accept4", SetLastError = true)]
    private static partial int Accept4(int fd, byte* addr, int* length, int flags);

    [LibraryImport("libc", EntryPoint = "shutdown", SetLastError = true)]
    private static partial int Shutdown(int fd, int how);

    [LibraryImport("libc", EntryPoint = "setsockopt", SetLastError = true)]
    private static partial int SetSockOpt(int fd, int level, int name, int* value, int length);

    [LibraryImport("libc", EntryPoint = "sendto", SetLastError = true)]
    private static partial nint SendTo(int fd, byte* buf, nuint length, int flags, byte* addr, int addrLength);

    [LibraryImport("libc", EntryPoint = "recv", SetLastError = true)]
    private static partial nint Recv(int fd, byte* buf, nuint length, int flags);

    /// <summary>struct sockaddr_un for <paramref name="path"/>; throws if the path does not fit.</summary>
    public static byte[] Address(string path)
    {
        if (!PathFits(path))
        {
            throw new ArgumentException($"socket path '{path}' must be 1 to {MaxPathBytes} bytes", nameof(path));
        }
        var bytes = Encoding.UTF8.GetBytes(path);
        var address = new byte[SockaddrSize];
        address[0] = AF_UNIX;
        bytes.CopyTo(address, 2);
        return address;
    }

    /// <summary>A non-blocking datagram socket bound to <paramref name="path"/>, with both buffers set to <paramref name="bufferBytes"/>.</summary>
    public static FileDescriptor BindDatagram(string path, int bufferBytes)
    {
        var address = Address(path);
        var fd = new FileDescriptor(Check.Io(Socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), "socket(AF_UNIX)"));
        try
        {
            fixed (byte* a = address)
            {
                Check.Io(Bind(fd.Fd, a, SockaddrSize), $"bind({path})");
            }
            Check.Io(SetSockOpt(fd.Fd, SOL_SOCKET, SO_SNDBUF, &bufferBytes, sizeof(int)), "SO_SNDBUF");
            Check.Io(SetSockOpt(fd.Fd, SOL_SOCKET, SO_RCVBUF, &bufferBytes, sizeof(int)), "SO_RCVBUF");
            return fd;
        }
        catch
        {
            fd.Dispose();
            throw;
        }
    }

    /// <summary>sendto(2) without blocking; the byte count, or -1 with errno.</summary>
    public static nint SendTo(int fd, ReadOnlySpan<byte> packet, ReadOnlySpan<byte> address)
    {
        fixed (byte* p = packet)
        fixed (byte* a = address)
        {
            return SendTo(fd, p, (nuint)packet.Length, MSG_DONTWAIT, a, address.Length);
        }
    }

    /// <summary>recv(2) without blocking; the byte count, or -1 with errno (EAGAIN when empty).</summary>
    public static nint Receive(int fd, Span<byte> packet)
    {
        fixed (byte* p = packet)
        {
            return Recv(fd, p, (nuint)packet.Length, MSG_DONTWAIT);
        }
    }

    /// <summary>A non-blocking stream socket bound to <paramref name="path"/> and listening (SysError if it cannot be).</summary>
    public static FileDescriptor ListenStream(string path, int backlog)
    {
        var address = Address(path);
        var fd = new FileDescriptor(Check.Io(Socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), "socket(AF_UNIX)"));
        try
        {
            fixed (byte* a = address)
            {
                Check.Io(Bind(fd.Fd, a, SockaddrSize), $"bind({path})");
            }
            Check.Io(ListenOn(fd.Fd, backlog), $"listen({path})");
            return fd;
        }
        catch
        {
            fd.Dispose();
            throw;
        }
    }

    /// <summary>accept4(2): the next connection, non-blocking and close-on-exec; -1 with errno (EAGAIN when none waits).</summary>
    public static int Accept(int listener) => Accept4(listener, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);

    /// <summary>shutdown(2) of the sending side (SHUT_WR): the peer reads the end of the stream.</summary>
    public static int ShutdownWrite(int fd) => Shutdown(fd, 1);
}
