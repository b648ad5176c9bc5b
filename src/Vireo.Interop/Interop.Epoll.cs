using System.Runtime.InteropServices;

namespace Vireo.Interop;

/// <summary>struct epoll_event: packed on x86-64, so the 64-bit data sits at offset 4.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 4)]
public struct epoll_event
{
    public uint events;
    public ulong data;
}

/// <summary>epoll(7), for the device event loops.</summary>
public static unsafe partial class Epoll
{
    private const string Lib = "libc";
    public const int EPOLL_CLOEXEC = 0x80000;
    public const int EPOLL_CTL_ADD = 1, EPOLL_CTL_DEL = 2;
    public const uint EPOLLIN = 1, EPOLLOUT = 4, EPOLLERR = 8, EPOLLHUP = 0x10, EPOLLRDHUP = 0x2000, EPOLLET = 1u << 31;

    [LibraryImport(Lib, EntryPoint = "epoll_create1", SetLastError = true)]
    public static partial int Create1(int flags);

    [LibraryImport(Lib, EntryPoint = "epoll_ctl", SetLastError = true)]
    public static partial int Ctl(int epfd, int op, int fd, epoll_event* ev);

    [LibraryImport(Lib, EntryPoint = "epoll_wait", SetLastError = true)]
    public static partial int Wait(int epfd, epoll_event* events, int maxEvents, int timeoutMs);

    /// <summary>Watches <paramref name="fd"/> for input, tagged with <paramref name="data"/>.</summary>
    public static void AddInput(int epfd, int fd, ulong data, bool edgeTriggered = false, bool writable = false)
    {
        var ev = new epoll_event { events = EPOLLIN | (writable ? EPOLLOUT : 0) | (edgeTriggered ? EPOLLET : 0), data = data };
        Check.Io(Ctl(epfd, EPOLL_CTL_ADD, fd, &ev), "epoll_ctl");
    }

    public const int EPOLL_CTL_MOD = 3;

    /// <summary>Changes what <paramref name="fd"/> is watched for (edge-triggered input, plus output when <paramref name="writable"/>).</summary>
    public static void ModifyInput(int epfd, int fd, ulong data, bool writable)
    {
        var ev = new epoll_event { events = EPOLLIN | EPOLLET | (writable ? EPOLLOUT : 0), data = data };
        Check.Io(Ctl(epfd, EPOLL_CTL_MOD, fd, &ev), "epoll_ctl(MOD)");
    }

    /// <summary>Watches <paramref name="fd"/> for exactly <paramref name="events"/>, tagged with <paramref name="data"/>.</summary>
    public static void Add(int epfd, int fd, uint events, ulong data)
    {
        var ev = new epoll_event { events = events, data = data };
        Check.Io(Ctl(epfd, EPOLL_CTL_ADD, fd, &ev), "epoll_ctl");
    }

    /// <summary>Stops watching <paramref name="fd"/>.</summary>
    public static void Remove(int epfd, int fd) => _ = Ctl(epfd, EPOLL_CTL_DEL, fd, null);

    /// <summary>epoll_wait into a span; -1 with errno on failure.</summary>
    public static int Wait(int epfd, Span<epoll_event> events, int timeoutMs)
    {
        fixed (epoll_event* p = events)
        {
            return Wait(epfd, p, events.Length, timeoutMs);
        }
    }
}
