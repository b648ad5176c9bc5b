using Vireo.Interop;

namespace Vireo.Interop.Tests;

public class InteropTests
{
    [Fact]
    public void EventFd_counts_signals_and_reads_zero_when_empty()
    {
        using var e = new EventFd(nonBlocking: true);
        Assert.Equal(0UL, e.Consume());
        e.Signal();
        e.Signal(2);
        Assert.Equal(3UL, e.Consume());
        Assert.Equal(0UL, e.Consume());
    }

    [Fact]
    public void A_stale_socket_is_removed_but_a_file_in_its_place_is_refused()
    {
        string dir = Vireo.Tests.TempDirectory.Create("vireo-sock");
        string sock = Path.Combine(dir, "s"), file = Path.Combine(dir, "f");
        // Kept open: .NET unlinks a bound socket's file when the socket is disposed; a crashed VMM does not.
        using var s = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
        s.Bind(new System.Net.Sockets.UnixDomainSocketEndPoint(sock));
        File.WriteAllText(file, "precious");
        Assert.True(Libc.IsSocket(sock));
        Assert.False(Libc.IsSocket(file));
        Libc.RemoveStaleSocket(sock);
        Assert.False(File.Exists(sock));
        Assert.Throws<IOException>(() => Libc.RemoveStaleSocket(file));
        Assert.Equal("precious", File.ReadAllText(file));
        Libc.RemoveStaleSocket(Path.Combine(dir, "absent")); // nothing there: nothing to do
    }

    [Fact]
    public void Open_of_a_missing_file_names_the_call_and_errno()
    {
        var e = Assert.Throws<SysError>(() => FileDescriptor.Open("/nonexistent/vireo", Libc.O_RDONLY));
        Assert.Equal(Libc.ENOENT, e.Errno);
        Assert.Contains("open(/nonexistent/vireo)", e.Message);
    }

    [Fact]
    public void Kick_signal_interrupts_a_blocked_read_without_killing_the_process()
    {
        using var e = new EventFd();
        nuint target = 0;
        var ready = new ManualResetEventSlim();
        int errno = 0;
        var t = new Thread(() =>
        {
            target = Signals.PthreadSelf();
            ready.Set();
            unsafe
            {
                ulong v;
                nint n = Libc.Read(e.Fd, (byte*)&v, 8); // blocks: nothing signalled the eventfd
                errno = n < 0 ? Libc.LastErrno : 0;
            }
        });
        _ = Signals.KickSignal;
        t.Start();
        ready.Wait();
        for (int i = 0; i < 100 && t.IsAlive; i++)
        {
            Thread.Sleep(10);
            Signals.Kick(target);
        }
        Assert.True(t.Join(2000), "the kicked thread stayed blocked");
        Assert.Equal(Libc.EINTR, errno);
    }
    [Fact]
    public void Allocated_bytes_count_what_a_sparse_file_holds_not_its_size()
    {
        string file = Path.Combine(Vireo.Tests.TempDirectory.Create("vireo-sparse"), "f");
        using (var f = File.Create(file))
        {
            f.SetLength(64 << 20); // a hole: the size, and no blocks
        }
        Assert.True(Libc.AllocatedBytesAt(file) < 1 << 20);
        using (var f = File.OpenWrite(file))
        {
            f.Seek(32 << 20, SeekOrigin.Begin);
            f.Write(Enumerable.Repeat((byte)1, 1 << 20).ToArray());
        }
        Assert.InRange(Libc.AllocatedBytesAt(file)!.Value, 1 << 20, 3 << 20);
        Assert.Null(Libc.AllocatedBytesAt(file + ".absent"));
    }

    [Fact]
    public void Dup_at_or_above_gives_a_close_on_exec_copy_at_the_floor_or_higher()
    {
        using var e = new EventFd(nonBlocking: true);
        int copy = Libc.DupAtOrAbove(e.Fd, 200);
        Assert.True(copy >= 200, $"{copy}");
        using var owned = new FileDescriptor(copy);
        // fdinfo's flags are octal; O_CLOEXEC is 02000000.
        string flags = File.ReadLines($"/proc/self/fdinfo/{copy}").First(l => l.StartsWith("flags:", StringComparison.Ordinal))[6..].Trim();
        Assert.NotEqual(0, Convert.ToInt32(flags, 8) & 0x80000);
        Assert.True(Libc.DupAtOrAbove(-1, 200) < 0);
    }
}
