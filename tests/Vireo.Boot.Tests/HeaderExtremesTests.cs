using System.Buffers.Binary;
using Vireo.Memory;
using static Vireo.Boot.Tests.ImageBuilder;

namespace Vireo.Boot.Tests;

/// <summary>
/// Every header field of an ELF (file header, program headers, the PVH note) and of a bzImage
/// setup header, set to each of its extremes, either loads correctly or is refused with a
/// one-line BootException: never another exception. Run with a small VM and with one whose RAM
/// goes past 4 GiB, where sizes of 2 GiB and more fit and 32-bit arithmetic would wrap.
/// </summary>
public class HeaderExtremesTests : IDisposable
{
    private const ulong MiB = 1UL << 20, GiB = 1UL << 30;
    private readonly GuestMemory _small = GuestMemory.Create(64 * MiB);
    private readonly GuestMemory _large = GuestMemory.Create(6 * GiB); // MAP_NORESERVE: untouched RAM costs nothing

    public void Dispose()
    {
        _small.Dispose();
        _large.Dispose();
    }

    /// <summary>0, 1, max-1, max and the sign boundaries of a field <paramref name="width"/> bytes wide.</summary>
    public static ulong[] Extremes(int width)
    {
        ulong max = width == 8 ? ulong.MaxValue : (1UL << (width * 8)) - 1;
        ulong signBit = 1UL << (width * 8 - 1);
        return [0, 1, 2, 3, 4, 0x100000, max - 1, max, signBit - 1, signBit, signBit + 1, 0x7fffffff, 0x80000000, 0xffffffff, 0x100000000];
    }

    // (name, offset, width) of every field, for ELF64 and ELF32 images built by ImageBuilder:
    // the file header, then program header 0 (the PT_LOAD) and 1 (the PT_NOTE), then the note.
    private static readonly (string, int, int)[] Elf64Fields =
    [
        ("e_type", 16, 2), ("e_machine", 18, 2), ("e_entry", 24, 8), ("e_phoff", 32, 8), ("e_shoff", 40, 8),
        ("e_ehsize", 52, 2), ("e_phentsize", 54, 2), ("e_phnum", 56, 2),
        ("load.p_type", 64, 4), ("load.p_offset", 72, 8), ("load.p_vaddr", 80, 8), ("load.p_paddr", 88, 8),
        ("load.p_filesz", 96, 8), ("load.p_memsz", 104, 8),
        ("note.p_type", 120, 4), ("note.p_offset", 128, 8), ("note.p_paddr", 144, 8), ("note.p_filesz", 152, 8), ("note.p_memsz", 160, 8),
    ];

    private static readonly (string, int, int)[] Elf32Fields =
    [
        ("e_type", 16, 2), ("e_machine", 18, 2), ("e_entry", 24, 4), ("e_phoff", 28, 4), ("e_shoff", 32, 4),
        ("e_ehsize", 40, 2), ("e_phentsize", 42, 2), ("e_phnum", 44, 2),
        ("load.p_type", 52, 4), ("load.p_offset", 56, 4), ("load.p_paddr", 64, 4), ("load.p_filesz", 68, 4), ("load.p_memsz", 72, 4),
        ("note.p_type", 84, 4), ("note.p_offset", 88, 4), ("note.p_paddr", 96, 4), ("note.p_filesz", 100, 4), ("note.p_memsz", 104, 4),
    ];

    // The setup header (Documentation/arch/x86/boot.rst), at its documented offsets.
    private static readonly (string, int, int)[] BzFields =
    [
        ("setup_sects", 0x1f1, 1), ("root_flags", 0x1f2, 2), ("syssize", 0x1f4, 4), ("boot_flag", 0x1fe, 2), ("jump", 0x200, 2),
        ("version", 0x206, 2), ("kernel_version", 0x20e, 2), ("type_of_loader", 0x210, 1), ("loadflags", 0x211, 1),
        ("code32_start", 0x214, 4), ("ramdisk_image", 0x218, 4), ("ramdisk_size", 0x21c, 4), ("heap_end_ptr", 0x224, 2),
        ("cmd_line_ptr", 0x228, 4), ("initrd_addr_max", 0x22c, 4), ("kernel_alignment", 0x230, 4), ("relocatable_kernel", 0x234, 1),
        ("min_alignment", 0x235, 1), ("xloadflags", 0x236, 2), ("cmdline_size", 0x238, 4), ("hardware_subarch", 0x23c, 4),
        ("payload_offset", 0x248, 4), ("payload_length", 0x24c, 4), ("setup_data", 0x250, 8), ("pref_address", 0x258, 8),
        ("init_size", 0x260, 4), ("handover_offset", 0x264, 4),
    ];

    public static TheoryData<string> Images() => ["elf64-pvh", "elf32-pvh", "elf64-linux", "bzimage"];

    private static (byte[] Image, (string, int, int)[] Fields) Seed(string kind) => kind switch
    {
        "elf64-pvh" => (Elf(true, 0x100000, [new Segment(0x100000, Fill(0x1000, 0x90), 0x2000)], pvhEntry: 0x100000), Elf64Fields),
        "elf32-pvh" => (Elf(false, 0x100000, [new Segment(0x100000, Fill(0x1000, 0x90), 0x2000)], pvhEntry: 0x100000), Elf32Fields),
        "elf64-linux" => (Elf(true, 0x1000000, [new Segment(0x1000000, Fill(0x1000, 0x90), 0x2000), new Segment(0, Fill(24, 0), 0, 4)]), Elf64Fields),
        _ => (BzImage(), BzFields),
    };

    [Theory]
    [MemberData(nameof(Images))]
    public void Every_header_field_at_its_extremes_loads_or_is_one_line(string kind)
    {
        var (seed, fields) = Seed(kind);
        foreach (var (name, offset, width) in fields)
        {
            foreach (ulong value in Extremes(width))
            {
                var f = (byte[])seed.Clone();
                Set(f, offset, width, value);
                Check(f, $"{kind} {name}=0x{value:x}");
            }
        }
    }

    [Fact]
    public void Every_note_field_at_its_extremes_loads_or_is_one_line()
    {
        foreach (bool is64 in new[] { false, true })
        {
            var seed = Elf(is64, 0x100000, [new Segment(0x100000, Fill(0x1000, 0x90), 0x2000)], pvhEntry: 0x100000, pvhDescSize: 8);
            int note = seed.Length - 24; // the note is the last thing in the file: namesz, descsz, type, "Xen\0", an 8-byte value
            foreach (var (name, at, width) in new[] { ("namesz", 0, 4), ("descsz", 4, 4), ("type", 8, 4), ("name", 12, 4), ("desc", 16, 8), ("desc.low", 16, 4) })
            {
                foreach (ulong value in Extremes(width))
                {
                    var f = (byte[])seed.Clone();
                    Set(f, note + at, width, value);
                    Check(f, $"ELF{(is64 ? 64 : 32)} note {name}=0x{value:x}");
                }
            }
        }
    }

    [Fact]
    public void A_bss_of_2_gib_and_more_loads_when_ram_has_room_and_is_refused_in_one_line_when_not()
    {
        foreach (ulong memsz in new[] { 0x7fffffffUL, 0x80000000UL, 0x80001000UL, 0xbfe00000UL })
        {
            var f = Elf(true, 0x100000, [new Segment(0x100000, Fill(0x1000, 0x90), memsz)], pvhEntry: 0x100000);
            BootLoader.Load(_large, new BootSource(f, null, "", 1));
            Assert.Equal(0x90, _large.GetSpan(new GuestAddress(0x100000), 1)[0]);
            Assert.Equal(0, _large.GetSpan(new GuestAddress(0x100000 + memsz - 1), 1)[0]);
            var e = Assert.Throws<BootException>(() => BootLoader.Load(_small, new BootSource(f, null, "", 1)));
            Assert.Contains("outside guest RAM (64 MiB)", e.Message);
        }
        // Above 4 GiB too (64-bit entry): a 2 GiB segment in the RAM past the PCI hole.
        var high = Elf(true, 4 * GiB, [new Segment(4 * GiB, Fill(0x1000, 0x90), 2 * GiB)]);
        BootLoader.Load(_large, new BootSource(high, null, "", 1));
        Assert.Equal(0x90, _large.GetSpan(new GuestAddress(4 * GiB), 1)[0]);
    }

    [Fact]
    public void A_bzimage_whose_cmdline_size_is_the_largest_u32_takes_vireos_limit_not_minus_one()
    {
        var f = BzImage();
        BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(0x238), uint.MaxValue);
        BootLoader.Load(_small, new BootSource(f, null, new string('x', 4000), 1));
        var e = Assert.Throws<CmdlineTooLongException>(() => BootLoader.Load(_small, new BootSource(f, null, new string('x', 5000), 1)));
        Assert.Equal("command line is 5000 bytes; this kernel accepts at most 4095", e.Message);
    }

    [Fact]
    public void A_bzimage_that_asks_for_4_gib_to_decompress_is_loaded_where_ram_has_room()
    {
        var f = BzImage(initSize: uint.MaxValue);
        var e = Assert.Throws<BootException>(() => BootLoader.Load(_large, new BootSource(f, null, "", 1)));
        Assert.Contains("outside guest RAM", e.Message); // 1 MiB + 4 GiB crosses the PCI hole
        f = BzImage(initSize: 0xbfe00000);
        BootLoader.Load(_large, new BootSource(f, null, "", 1));
        Assert.Equal(0xcc, _large.GetSpan(new GuestAddress(BootLayout.BzImageLoadAddr), 1)[0]);
    }

    /// <summary>Loads into both VMs: a success must have put every segment's file bytes where it says.</summary>
    private void Check(byte[] f, string what)
    {
        foreach (var memory in new[] { _small, _large })
        {
            foreach (byte[]? initrd in new[] { null, Fill(4096, 0x17) })
            {
                try
                {
                    BootLoader.Load(memory, new BootSource(f, initrd is null ? null : (ReadOnlyMemory<byte>)initrd, "console=ttyS0", 1));
                }
                catch (BootException e)
                {
                    Assert.False(e.Message.Contains('\n'), $"{what}: a message of more than one line: {e.Message}");
                    Assert.False(string.IsNullOrWhiteSpace(e.Message), $"{what}: an empty message");
                    continue;
                }
                catch (Exception e)
                {
                    Assert.Fail($"{what} ({memory.Size / MiB} MiB{(initrd is null ? "" : ", initrd")}): {e.GetType().Name}: {e.Message}");
                }
                foreach (var seg in KernelImage.Parse(f).Segments)
                {
                    int n = Math.Min(seg.FileSize, 256);
                    Assert.True(memory.GetSpan(new GuestAddress(seg.GuestAddress), (ulong)n).SequenceEqual(f.AsSpan(seg.FileOffset, n)),
                        $"{what}: segment at 0x{seg.GuestAddress:x} does not hold its file bytes");
                }
            }
        }
    }

    private static void Set(byte[] f, int offset, int width, ulong value)
    {
        var s = f.AsSpan(offset, width);
        switch (width)
        {
            case 1: s[0] = (byte)value; break;
            case 2: BinaryPrimitives.WriteUInt16LittleEndian(s, (ushort)value); break;
            case 4: BinaryPrimitives.WriteUInt32LittleEndian(s, (uint)value); break;
            default: BinaryPrimitives.WriteUInt64LittleEndian(s, value); break;
        }
    }
}
