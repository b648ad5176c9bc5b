using Vireo.Interop;

namespace Vireo.Interop.Tests;

/// <summary>Linux native AIO on a real O_DIRECT file: vectored writes and reads, fdatasync, refusals.</summary>
public class AioContextTests
{
    private static unsafe int Poll(int fd)
    {
        var pfd = new PollFd { Fd = fd, Events = Libc.POLLIN };
        return Libc.Poll(&pfd, 1, 5000);
    }

    private static AioCompletion Wait(AioContext aio)
    {
        Span<AioCompletion> done = stackalloc AioCompletion[4];
        Assert.True(Poll(aio.CompletionFd) > 0, "no completion within 5 s");
        Assert.Equal(1, aio.Reap(done));
        return done[0];
    }

    [Fact]
    public void Writes_two_segments_syncs_and_reads_them_back()
    {
        string path = Path.Combine(Vireo.Tests.TempDirectory.Create("vireo-aio"), "disk.img");
        File.WriteAllBytes(path, new byte[1 << 20]);
        using var file = FileDescriptor.Open(path, Libc.O_RDWR | Libc.O_DIRECT);
        using var aio = new AioContext(slots: 4, maxSegments: 2);
        using var a = new AlignedBuffer(4096);
        using var b = new AlignedBuffer(8192);
        a.Span.Fill(0xa5);
        new Random(1).NextBytes(b.Span);

        aio.SetSegment(2, 0, a.Span);
        aio.SetSegment(2, 1, b.Span);
        aio.Prepare(2, Aio.IOCB_CMD_PWRITEV, file.Fd, segments: 2, offset: 65536);
        aio.Submit((slot, errno) => Assert.Fail($"slot {slot} refused: errno {errno}"));
        Assert.Equal(new AioCompletion(2, 12288), Wait(aio));

        aio.Prepare(3, Aio.IOCB_CMD_FDSYNC, file.Fd, 0, 0);
        bool syncRefused = false;
        aio.Submit((_, errno) => syncRefused = errno == Libc.EINVAL); // file systems without async fsync refuse it
        if (!syncRefused)
        {
            Assert.Equal(new AioCompletion(3, 0), Wait(aio));
        }

        using var back = new AlignedBuffer(12288);
        aio.SetSegment(0, 0, back.Span);
        aio.Prepare(0, Aio.IOCB_CMD_PREADV, file.Fd, segments: 1, offset: 65536);
        aio.Submit((slot, errno) => Assert.Fail($"slot {slot} refused: errno {errno}"));
        Assert.Equal(new AioCompletion(0, 12288), Wait(aio));
        Assert.True(back.Span[..4096].SequenceEqual(a.Span));
        Assert.True(back.Span[4096..].SequenceEqual(b.Span));
        var onDisk = File.ReadAllBytes(path).AsSpan(65536, 12288);
        Assert.True(onDisk.SequenceEqual(back.Span));
    }

    [Fact]
    public void A_refused_request_is_reported_and_the_rest_of_the_batch_still_goes()
    {
        string path = Path.Combine(Vireo.Tests.TempDirectory.Create("vireo-aio"), "disk.img");
        File.WriteAllBytes(path, new byte[65536]);
        using var file = FileDescriptor.Open(path, Libc.O_RDWR | Libc.O_DIRECT);
        using var aio = new AioContext(slots: 2, maxSegments: 1);
        using var buffer = new AlignedBuffer(4096);
        aio.SetSegment(0, 0, buffer.Span);
        aio.SetSegment(1, 0, buffer.Span);
        aio.Prepare(0, Aio.IOCB_CMD_PREADV, fd: 9999, segments: 1, offset: 0);     // not an open file
        aio.Prepare(1, Aio.IOCB_CMD_PREADV, file.Fd, segments: 1, offset: 0);
        var refused = new List<(int, int)>();
        aio.Submit((slot, errno) => refused.Add((slot, errno)));
        Assert.Equal([(0, Libc.EBADF)], refused);
        Assert.Equal(new AioCompletion(1, 4096), Wait(aio));
    }

    [Fact]
    public void Slots_and_segments_out_of_range_throw()
    {
        using var aio = new AioContext(slots: 2, maxSegments: 1);
        using var buffer = new AlignedBuffer(4096);
        Assert.Throws<ArgumentOutOfRangeException>(() => aio.SetSegment(2, 0, buffer.Span));
        Assert.Throws<ArgumentOutOfRangeException>(() => aio.SetSegment(0, 1, buffer.Span));
        Assert.Throws<ArgumentOutOfRangeException>(() => aio.Prepare(-1, Aio.IOCB_CMD_FDSYNC, 0, 0, 0));
    }
}
