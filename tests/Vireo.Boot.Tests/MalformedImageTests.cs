using System.Buffers.Binary;
using Vireo.Memory;
using static Vireo.Boot.Tests.ImageBuilder;

namespace Vireo.Boot.Tests;

/// <summary>Every malformed image gets a one-line BootException naming the problem, and guest RAM is left untouched.</summary>
public class MalformedImageTests
{
    private const ulong MiB = 1UL << 20;

    // A BootException or a kind of one (CmdlineTooLongException: the configuration, not the image, is wrong).
    private static string Refused(byte[] kernel, byte[]? initrd = null, string cmdline = "", ulong memory = 64 * MiB, int vcpus = 1)
    {
        using var m = GuestMemory.Create(memory);
        var e = Assert.ThrowsAny<BootException>(() => BootLoader.Load(m, new BootSource(kernel, initrd is null ? null : (ReadOnlyMemory<byte>)initrd, cmdline, vcpus)));
        Assert.DoesNotContain('\n', e.Message);
        // Nothing was half-loaded: low memory (boot structures) and the kernel area are still zero.
        Assert.True(m.GetSpan(new GuestAddress(0), 2 * MiB).IndexOfAnyExcept((byte)0) < 0, "guest memory was written before the image was refused");
        return e.Message;
    }

    [Fact]
    public void Empty() => Assert.Contains("empty", Refused([]));

    [Fact]
    public void Not_a_kernel() => Assert.Contains("neither an ELF file nor a Linux bzImage", Refused(Fill(4096, 0x41)));

    [Fact]
    public void Truncated_elf_header() => Assert.Contains("truncated", Refused(SimplePvh()[..40]));

    [Fact]
    public void Wrong_elf_class()
    {
        var f = SimplePvh();
        f[4] = 7;
        Assert.Contains("invalid class 7", Refused(f));
    }

    [Fact]
    public void Big_endian_elf()
    {
        var f = SimplePvh();
        f[5] = 2;
        Assert.Contains("not little-endian", Refused(f));
    }

    [Fact]
    public void Wrong_machine()
    {
        var f = SimplePvh();
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(18), 40); // ARM
        Assert.Contains("machine 40", Refused(f));
    }

    [Fact]
    public void Program_headers_past_the_end()
    {
        var f = SimplePvh();
        BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(28), 0xfffff0);
        Assert.Contains("program headers lie beyond the end", Refused(f));
    }

    [Fact]
    public void Segment_data_past_the_end_of_a_truncated_file()
    {
        var f = SimplePvh(size: 0x4000);
        Assert.Contains("beyond the end of the file", Refused(f[..(f.Length - 0x100)]));
    }

    [Fact]
    public void File_size_larger_than_memory_size() =>
        Assert.Contains("larger than its memory size",
            Refused(Elf(false, 0x100000, [new Segment(0x100000, Fill(0x100, 1), 0x10)], pvhEntry: 0x100000)));

    [Fact]
    public void Segment_outside_ram() =>
        Assert.Contains("outside guest RAM (64 MiB)",
            Refused(Elf(false, 0x8000000, [new Segment(0x8000000, Fill(16, 1), 16)], pvhEntry: 0x8000000)));

    [Fact]
    public void Segment_partly_outside_ram() =>
        Assert.Contains("outside guest RAM",
            Refused(Elf(false, 0x3fff000, [new Segment(0x3fff000, Fill(16, 1), 0x2000)], pvhEntry: 0x3fff000)));

    [Fact]
    public void Segment_below_1mib() =>
        Assert.Contains("below 1 MiB",
            Refused(Elf(false, 0x8000, [new Segment(0x8000, Fill(16, 1), 16)], pvhEntry: 0x8000)));

    [Fact]
    public void Elf32_without_a_pvh_note() =>
        Assert.Contains("no PVH entry note",
            Refused(Elf(false, 0x100000, [new Segment(0x100000, Fill(16, 1), 16)])));

    [Fact]
    public void Entry_outside_every_segment() =>
        Assert.Contains("entry point 0x200000 is not inside any loaded segment",
            Refused(Elf(false, 0x100000, [new Segment(0x100000, Fill(16, 1), 16)], pvhEntry: 0x200000)));

    [Fact]
    public void Pvh_note_of_a_strange_size() =>
        Assert.Contains("2-byte value",
            Refused(Elf(false, 0x100000, [new Segment(0x100000, Fill(16, 1), 16)], pvhEntry: 0x100000, pvhDescSize: 2)));

    [Fact]
    public void No_loadable_segments() =>
        Assert.Contains("no loadable segments", Refused(Elf(false, 0x100000, [], pvhEntry: 0x100000)));

    [Fact]
    public void Truncated_bzimage() => Assert.Contains("truncated", Refused(BzImage()[..0x240]));

    [Fact]
    public void Bzimage_without_boot_flag()
    {
        var f = BzImage();
        f[0x1fe] = 0;
        Assert.Contains("0xAA55", Refused(f));
    }

    [Fact]
    public void Bzimage_with_an_old_boot_protocol() => Assert.Contains("boot protocol 2.04", Refused(BzImage(version: 0x0204)));

    [Fact]
    public void Bzimage_without_a_64_bit_entry() => Assert.Contains("XLF_KERNEL_64", Refused(BzImage(kernel64: false)));

    [Fact]
    public void Zimage_is_not_loaded_high()
    {
        var f = BzImage();
        f[0x211] = 0;
        Assert.Contains("zImage", Refused(f));
    }

    [Fact]
    public void Bzimage_cut_inside_its_setup_sectors() =>
        Assert.Contains("protected-mode kernel should start", Refused(BzImage(setupSects: 30)[..0x1000]));

    [Fact]
    public void Bzimage_that_needs_more_ram_to_decompress_than_the_vm_has() =>
        Assert.Contains("outside guest RAM", Refused(BzImage(initSize: 0x8000000)));

    [Fact]
    public void Initrd_too_large() =>
        Assert.Contains("initrd is too large", Refused(SimplePvh(), initrd: new byte[64 * MiB]));

    [Fact]
    public void Initrd_empty() => Assert.Contains("initrd is empty", Refused(SimplePvh(), initrd: []));

    [Fact]
    public void Command_line_too_long_for_the_kernel() =>
        Assert.Contains("accepts at most 2047", Refused(BzImage(), cmdline: new string('x', 3000)));

    [Fact]
    public void Vcpu_count_out_of_range() => Assert.Contains("vCPU count 300", Refused(SimplePvh(), vcpus: 300));

    [Fact]
    public void Random_garbage_never_escapes_as_anything_but_a_boot_exception()
    {
        var rng = new Random(1234);
        using var m = GuestMemory.Create(32 * MiB);
        var seeds = new[] { SimplePvh(), BzImage(), Elf(true, 0x1000000, [new Segment(0x1000000, [1], 16)]) };
        for (int i = 0; i < 3000; i++)
        {
            var f = (byte[])seeds[i % seeds.Length].Clone();
            int flips = rng.Next(1, 16);
            for (int k = 0; k < flips; k++)
            {
                f[rng.Next(Math.Min(f.Length, 0x300))] = (byte)rng.Next(256);
            }
            if (rng.Next(4) == 0)
            {
                f = f[..rng.Next(f.Length)];
            }
            try
            {
                BootLoader.Load(m, new BootSource(f, null, "", 1));
            }
            catch (BootException)
            {
            }
        }
    }
}
