using Vireo.Memory;
using Vireo.Virtio.Block;
using Vireo.Virtio.Queue;
using Vireo.Virtio.Rng;
using static Vireo.Virtio.Tests.DriverRing;

namespace Vireo.Virtio.Tests;

/// <summary>
/// What a device writes to guest RAM is marked dirty (KVM's log sees only the vCPUs' writes): a
/// diff snapshot or a migration round that missed it would hand the guest stale buffers.
/// </summary>
public class DirtyTrackingTests
{
    private const ulong Header = 0x40000, Data = 0x50000, Status = 0x58000;

    private static HashSet<ulong> DirtyPages(GuestMemory memory)
    {
        var bits = new ulong[memory.Regions[0].Dirty!.Words];
        memory.Regions[0].Dirty!.TakeInto(bits);
        var pages = new HashSet<ulong>();
        for (ulong p = 0; p < (ulong)bits.Length * 64; p++)
        {
            if ((bits[p >> 6] & (1UL << (int)(p & 63))) != 0)
            {
                pages.Add(p << 12);
            }
        }
        return pages;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)] // O_DIRECT: the kernel writes guest RAM through Linux AIO, behind the device's back
    public void A_disk_read_marks_its_buffer_its_status_byte_and_the_used_ring(bool direct)
    {
        string path = Path.Combine(Vireo.Tests.TempDirectory.Create("vireo-dirty"), "disk.img");
        File.WriteAllBytes(path, Enumerable.Repeat((byte)0x5a, 1 << 20).ToArray());
        using var memory = NewMemory();
        using var blk = new VirtioBlock(new BlockConfig(path, Direct: direct));
        var ring = new DriverRing(memory, 16);
        Assert.True(blk.Activate(memory, VirtioConstants.Bit(32), [ring.State()], _ => { }, () => { }));
        memory.WriteObj(new GuestAddress(Header), 0u); // VIRTIO_BLK_T_IN, sector 0
        memory.WriteObj(new GuestAddress(Header + 8), 0UL);
        ring.SetDesc(0, Header, 16, NEXT, 1);
        ring.SetDesc(1, Data, 8192, NEXT | WRITE, 2);
        ring.SetDesc(2, Status, 1, WRITE, 0);
        ring.Publish(0);
        memory.TrackDirty = true; // from here on: only the device writes
        blk.NotifyQueue(0);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (ring.UsedIdx == 0)
        {
            Assert.True(sw.ElapsedMilliseconds < 5000, "the read never completed");
            blk.OnCompletions();
        }
        Assert.Equal(0x5a, memory.ReadObj<byte>(new GuestAddress(Data + 8191)));
        var dirty = DirtyPages(memory);
        Assert.Contains(Data, dirty);
        Assert.Contains(Data + 4096, dirty);
        Assert.Contains(Status, dirty);
        Assert.Contains(UsedAddr, dirty);
        Assert.DoesNotContain(Header, dirty); // read, not written
        Assert.DoesNotContain(DescAddr, dirty);
        Assert.Empty(DirtyPages(memory)); // taken: the next round starts empty
    }

    [Fact]
    public void Random_bytes_mark_the_pages_they_fill()
    {
        using var memory = NewMemory();
        var rng = new VirtioRng();
        var ring = new DriverRing(memory, 16);
        Assert.True(rng.Activate(memory, VirtioConstants.Bit(32), [ring.State()], _ => { }, () => { }));
        ring.SetDesc(0, Data + 4000, 200, WRITE, 0); // straddles two pages
        ring.Publish(0);
        memory.TrackDirty = true;
        rng.NotifyQueue(0);
        var dirty = DirtyPages(memory);
        Assert.Equal([UsedAddr, Data, Data + 4096], dirty.Order());
    }

    [Fact]
    public void Nothing_is_marked_while_tracking_is_off()
    {
        using var memory = NewMemory();
        memory.Write(new GuestAddress(Data), [1, 2, 3]);
        Assert.Null(memory.Regions[0].Dirty);
        memory.TrackDirty = true;
        memory.Write(new GuestAddress(Data), [1, 2, 3]);
        memory.WriteObj(new GuestAddress(Status + 4094), 0u); // crosses into the next page
        Assert.Equal([Data, Status, Status + 4096], DirtyPages(memory).Order());
        memory.TrackDirty = false;
        Assert.Null(memory.Regions[0].Dirty);
    }
}
