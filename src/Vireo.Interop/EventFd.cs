namespace Vireo.Interop;

/// <summary>An eventfd(2): the doorbell between KVM (irqfd, ioeventfd) and Vireo's threads.</summary>
public sealed unsafe class EventFd : IDisposable
{
    public FileDescriptor Handle { get; }

    public EventFd(bool nonBlocking = false)
    {
        int fd = Libc.EventFd(0, Libc.EFD_CLOEXEC | (nonBlocking ? Libc.EFD_NONBLOCK : 0));
        Handle = new FileDescriptor(Check.Io(fd, "eventfd"));
    }

    public int Fd => Handle.Fd;

    /// <summary>Adds <paramref name="value"/> to the counter; wakes whoever waits on it.</summary>
    public void Signal(ulong value = 1)
    {
        nint n;
        do
        {
            n = Libc.Write(Fd, (byte*)&value, sizeof(ulong));
        } while (n < 0 && Libc.LastErrno == Libc.EINTR);
        Check.Io(n, "write(eventfd)");
    }

    /// <summary>Reads and clears the counter; 0 when a non-blocking eventfd was not signalled.</summary>
    public ulong Consume()
    {
        ulong value = 0;
        nint n;
        do
        {
            n = Libc.Read(Fd, (byte*)&value, sizeof(ulong));
        } while (n < 0 && Libc.LastErrno == Libc.EINTR);
        if (n < 0 && Libc.LastErrno == Libc.EAGAIN)
        {
            return 0;
        }
        Check.Io(n, "read(eventfd)");
        return value;
    }

    public void Dispose() => Handle.Dispose();
}
