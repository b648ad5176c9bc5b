using Vireo.Interop;
using Vireo.Memory;

namespace Vireo.Memory.Tests;

public class GuestMemoryTests
{
    private const ulong MiB = MemoryLayout.MiB, GiB = MemoryLayout.GiB;

    [Fact]
    public void Small_vm_is_one_region_from_zero()
    {
        using var m = GuestMemory.Create(64 * MiB);
        var r = Assert.Single(m.Regions);
        Assert.Equal(0UL, r.Start.Value);
        Assert.Equal(64 * MiB, r.Size);
        Assert.Equal(64 * MiB, m.Size);
        Assert.Equal(64 * MiB, m.LowRamEnd);
    }

    [Fact]
    public void Large_vm_splits_around_the_pci_hole()
    {
        using var m = GuestMemory.Create(5 * GiB); // MAP_NORESERVE: costs nothing until touched
        Assert.Equal(2, m.Regions.Count);
        Assert.Equal((0UL, 3 * GiB), (m.Regions[0].Start.Value, m.Regions[0].Size));
        Assert.Equal((4 * GiB, 2 * GiB), (m.Regions[1].Start.Value, m.Regions[1].Size));
        Assert.Equal(3 * GiB, m.LowRamEnd);
        Assert.False(m.IsValidRange(new GuestAddress(3 * GiB), 1));
        Assert.True(m.IsValidRange(new GuestAddress(6 * GiB - 8), 8));
        Assert.False(m.IsValidRange(new GuestAddress(6 * GiB - 8), 9));
    }

    [Fact]
    public void Reads_and_writes_round_trip_in_each_region()
    {
        using var m = GuestMemory.Create(4 * GiB);
        m.WriteObj(new GuestAddress(0x1000), 0x1122334455667788UL);
        m.WriteObj(new GuestAddress(4 * GiB + 0x10), 0xdeadbeefU);
        Assert.Equal(0x1122334455667788UL, m.ReadObj<ulong>(new GuestAddress(0x1000)));
        Assert.Equal(0xdeadbeefU, m.ReadObj<uint>(new GuestAddress(4 * GiB + 0x10)));
        var buf = new byte[3];
        m.Read(new GuestAddress(0x1000), buf);
        Assert.Equal(new byte[] { 0x88, 0x77, 0x66 }, buf);
    }

    [Theory]
    [InlineData(64UL << 20, 1)]                 // just past the end
    [InlineData((64UL << 20) - 4, 8)]           // straddles the end
    [InlineData(ulong.MaxValue - 2, 8)]         // address + length wraps
    [InlineData(0x1000, ulong.MaxValue)]        // absurd length
    public void Out_of_bounds_ranges_are_refused(ulong address, ulong length)
    {
        using var m = GuestMemory.Create(64 * MiB);
        Assert.False(m.TryGetSpan(new GuestAddress(address), length, out _));
        Assert.False(m.IsValidRange(new GuestAddress(address), length));
        Assert.Throws<ArgumentOutOfRangeException>(() => m.GetSpan(new GuestAddress(address), length));
    }

    [Fact]
    public void A_range_may_not_cross_from_one_region_into_the_hole()
    {
        using var m = GuestMemory.Create(4 * GiB);
        Assert.False(m.TryGetSpan(new GuestAddress(3 * GiB - 4), 8, out _));
    }

    [Theory]
    [InlineData(1UL << 20)]          // below the 16 MiB minimum
    [InlineData(2048UL << 30)]       // above the maximum
    public void Impossible_sizes_are_refused(ulong size) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => GuestMemory.Create(size));

    [Fact]
    public void Sizes_must_be_page_multiples() =>
        Assert.Throws<ArgumentException>(() => GuestMemory.Create((64 * MiB) + 100));

    [Fact]
    public void Guest_address_add_detects_wrap()
    {
        Assert.True(new GuestAddress(10).TryAdd(5, out var a));
        Assert.Equal(15UL, a.Value);
        Assert.False(new GuestAddress(ulong.MaxValue).TryAdd(1, out _));
    }

    [Fact]
    public void Overlapping_regions_are_rejected()
    {
        using var a = GuestRegion.Allocate(new GuestAddress(0), 2 * MiB);
        using var b = GuestRegion.Allocate(new GuestAddress(MiB), 2 * MiB);
        Assert.Throws<ArgumentException>(() => new GuestMemory([a, b]));
    }

    [Fact]
    public void Guest_ram_asks_for_transparent_huge_pages()
    {
        using var region = GuestRegion.Allocate(new GuestAddress(0), 4 * MiB);
        string start = region.HostAddress.ToString("x") + "-";
        var lines = File.ReadAllLines("/proc/self/smaps");
        int at = Array.FindIndex(lines, l => l.StartsWith(start, StringComparison.Ordinal));
        Assert.True(at >= 0, "the region is not in /proc/self/smaps");
        var flags = lines.Skip(at + 1).First(l => l.StartsWith("VmFlags:", StringComparison.Ordinal));
        Assert.Contains(" hg", flags);   // MADV_HUGEPAGE
        Assert.Contains(" dc", flags);   // MADV_DONTFORK
    }

    [Fact]
    public void Dirty_runs_are_found_across_words_cut_at_their_longest_and_stop_at_the_last_page()
    {
        var bits = new ulong[3];
        foreach (int p in new[] { 0, 62, 63, 64, 65, 100, 129, 130, 131 })
        {
            bits[p >> 6] |= 1UL << (p & 63);
        }
        bits[2] |= 1UL << 63; // page 191: past the 140 pages the region has
        var runs = new List<(ulong, ulong)>();
        ulong from = 0;
        while (DirtyBitmap.NextRun(bits, 140, ref from, 3, out ulong first, out ulong count))
        {
            runs.Add((first, count));
        }
        Assert.Equal([(0UL, 1UL), (62UL, 3UL), (65UL, 1UL), (100UL, 1UL), (129UL, 3UL)], runs);
        Assert.Equal(140UL, from);
    }

    [Fact]
    public void Only_ranges_that_were_written_may_hold_data_anonymous_shared_or_over_a_file()
    {
        using (var anon = GuestMemory.CreateAnonymous(64 * MiB))
        {
            var r = anon.Regions[0];
            Assert.False(anon.MayHoldData(r, 0, 64 * MiB));
            anon.Write(new GuestAddress(10 * MiB + 5), [1]);
            Assert.True(anon.MayHoldData(r, 10 * MiB, 2 * MiB));
            Assert.False(anon.MayHoldData(r, 12 * MiB, 2 * MiB));
        }
        using (var shared = GuestMemory.Create(64 * MiB))
        {
            var r = shared.Regions[0];
            Assert.False(shared.MayHoldData(r, 0, 64 * MiB));
            shared.Write(new GuestAddress(20 * MiB), [1]);
            Assert.True(shared.MayHoldData(r, 20 * MiB, 2 * MiB));
            Assert.False(shared.MayHoldData(r, 22 * MiB, 2 * MiB));
        }
        // Copy-on-write over a file (a restored VM): the file's data, and what the guest wrote
        // into a hole since, which only this process's pages hold.
        string path = Path.Combine(Directory.CreateTempSubdirectory("vireo-mem").FullName, "ram");
        using (var f = File.Create(path))
        {
            f.SetLength((long)(64 * MiB));
            f.Position = (long)(30 * MiB);
            f.WriteByte(7);
        }
        int fd = Libc.Open(path, Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
        using var restored = GuestMemory.FromFile(new FileDescriptor(fd), 64 * MiB, shared: false);
        var region = restored.Regions[0];
        Assert.True(restored.MayHoldData(region, 30 * MiB, 2 * MiB));
        Assert.False(restored.MayHoldData(region, 40 * MiB, 2 * MiB));
        restored.Write(new GuestAddress(40 * MiB + 4096), [9]);
        Assert.True(restored.MayHoldData(region, 40 * MiB, 2 * MiB)); // a hole in the file, written here
        Assert.Equal(7, restored.ReadObj<byte>(new GuestAddress(30 * MiB)));
    }

    [Fact]
    public void Anonymous_ram_has_the_file_offsets_a_memory_file_of_it_would_have()
    {
        // A snapshot writes each region at its FileOffset: two regions at 0 would overwrite each other.
        using var m = GuestMemory.CreateAnonymous(3 * GiB + 64 * MiB);
        Assert.Null(m.Backing);
        Assert.Equal([0UL, 3 * GiB], m.Regions.Select(r => r.FileOffset));
    }

    [Fact]
    public void Marks_in_the_high_region_land_in_its_own_bitmap_and_a_range_over_the_end_stops_there()
    {
        using var m = GuestMemory.CreateAnonymous(3 * GiB + 64 * MiB);
        m.TrackDirty = true;
        m.MarkDirty(new GuestAddress(4 * GiB + 0x5000), 1);
        m.MarkDirty(new GuestAddress(3 * GiB - 0x1000), 0x3000); // runs past the low region's end into the hole
        var low = new ulong[m.Regions[0].Dirty!.Words];
        var high = new ulong[m.Regions[1].Dirty!.Words];
        m.Regions[0].Dirty!.TakeInto(low);
        m.Regions[1].Dirty!.TakeInto(high);
        Assert.Equal(1UL << 5, high[0]);
        Assert.Equal(1UL << 63, low[^1]);
        Assert.Equal(1, low.Sum(w => System.Numerics.BitOperations.PopCount(w)));
    }

    [Fact]
    public void Ram_lives_in_a_memfd_with_the_regions_one_after_another_and_the_hole_left_out()
    {
        using var m = GuestMemory.Create(3 * GiB + 64 * MiB);
        Assert.True(m.IsShared);
        Assert.NotNull(m.Backing);
        Assert.Equal([0UL, 3 * GiB], m.Regions.Select(r => r.FileOffset));
        m.Write(new GuestAddress(0x1000), "low"u8);
        m.Write(new GuestAddress(4 * GiB + 0x2000), "high"u8);
        var read = new byte[4];
        Assert.Equal(3, Libc.PreadFully(m.Backing!.Fd, read.AsSpan(0, 3), 0x1000));
        Assert.Equal("low"u8.ToArray(), read[..3]);
        Assert.Equal(4, Libc.PreadFully(m.Backing.Fd, read, (long)(3 * GiB) + 0x2000));
        Assert.Equal("high"u8.ToArray(), read);
        Assert.Equal(3 * GiB + 64 * MiB, (ulong)Libc.StatOf(m.Backing.Fd).Size);
    }

    [Fact]
    public void A_private_mapping_of_a_file_reads_it_and_never_writes_it()
    {
        string path = Path.GetTempFileName();
        try
        {
            using (var f = File.OpenWrite(path))
            {
                f.SetLength((long)(64 * MiB));
                f.Position = 0x3000;
                f.Write("saved"u8);
            }
            var fd = FileDescriptor.Open(path, Libc.O_RDONLY);
            using (var m = GuestMemory.FromFile(fd, 64 * MiB, shared: false))
            {
                Assert.False(m.IsShared);
                var got = new byte[5];
                m.Read(new GuestAddress(0x3000), got);
                Assert.Equal("saved"u8.ToArray(), got);
                m.Write(new GuestAddress(0x3000), "guest"u8); // copy-on-write: the page is the process's own now
                m.Read(new GuestAddress(0x3000), got);
                Assert.Equal("guest"u8.ToArray(), got);
            }
            var bytes = File.ReadAllBytes(path);
            Assert.Equal("saved"u8.ToArray(), bytes[0x3000..0x3005]);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Anonymous_ram_has_no_backing_file()
    {
        using var m = GuestMemory.CreateAnonymous(64 * MiB);
        Assert.Null(m.Backing);
        Assert.False(m.IsShared);
    }
}
