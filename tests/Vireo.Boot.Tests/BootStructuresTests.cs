using System.Buffers.Binary;
using Vireo.Memory;

namespace Vireo.Boot.Tests;

/// <summary>The boot structures against their documented layouts (boot.rst, start_info.h, the MP spec).</summary>
public class BootStructuresTests
{
    private static readonly E820Entry[] Map =
    [
        new(0, 0x9fc00, E820Type.Ram),
        new(0x9fc00, 0x60400, E820Type.Reserved),
        new(0x100000, 0x7f00000, E820Type.Ram),
    ];

    [Fact]
    public void Zero_page_fields_sit_at_their_documented_offsets()
    {
        var header = BzImageHeader.Parse(ImageBuilder.BzImage()).BzImage!;
        var zp = ZeroPage.Build(header, 0x20000, 0x7f00000, 0x123000, Map);
        Assert.Equal(4096, zp.Length);
        Assert.Equal(0xff, zp[0x210]);                                     // type_of_loader
        Assert.Equal(0x81, zp[0x211]);                                     // LOADED_HIGH | CAN_USE_HEAP
        Assert.Equal(0xaa55, BinaryPrimitives.ReadUInt16LittleEndian(zp.AsSpan(0x1fe)));
        Assert.Equal("HdrS"u8.ToArray(), zp[0x202..0x206]);
        Assert.Equal(0x020fu, BinaryPrimitives.ReadUInt16LittleEndian(zp.AsSpan(0x206)));
        Assert.Equal(0x20000u, BinaryPrimitives.ReadUInt32LittleEndian(zp.AsSpan(0x228))); // cmd_line_ptr
        Assert.Equal(0x7f00000u, BinaryPrimitives.ReadUInt32LittleEndian(zp.AsSpan(0x218))); // ramdisk_image
        Assert.Equal(0x123000u, BinaryPrimitives.ReadUInt32LittleEndian(zp.AsSpan(0x21c)));  // ramdisk_size
        Assert.Equal(0xfe00, BinaryPrimitives.ReadUInt16LittleEndian(zp.AsSpan(0x224)));     // heap_end_ptr
        Assert.Equal(3, zp[0x1e8]);                                        // e820_entries
        var e = zp.AsSpan(0x2d0 + 2 * 20);                                 // boot_e820_entry[2]
        Assert.Equal(0x100000UL, BinaryPrimitives.ReadUInt64LittleEndian(e));
        Assert.Equal(0x7f00000UL, BinaryPrimitives.ReadUInt64LittleEndian(e[8..]));
        Assert.Equal(1u, BinaryPrimitives.ReadUInt32LittleEndian(e[16..]));
    }

    [Fact]
    public void Zero_page_for_a_vmlinux_carries_a_minimal_header()
    {
        var zp = ZeroPage.Build(null, 0x20000, 0, 0, Map);
        Assert.Equal("HdrS"u8.ToArray(), zp[0x202..0x206]);
        Assert.Equal(0x01000000u, BinaryPrimitives.ReadUInt32LittleEndian(zp.AsSpan(0x230)));
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32LittleEndian(zp.AsSpan(0x218)));
    }

    [Fact]
    public void E820_reserves_the_bios_area_and_follows_the_regions()
    {
        using var m = GuestMemory.Create(5UL << 30);
        var map = E820.Build(m);
        Assert.Equal(
        [
            new E820Entry(0, 0x9fc00, E820Type.Ram),
            new E820Entry(0x9fc00, 0x100000 - 0x9fc00, E820Type.Reserved),
            new E820Entry(0x100000, (3UL << 30) - 0x100000, E820Type.Ram),
            new E820Entry(4UL << 30, 2UL << 30, E820Type.Ram),
        ], map);
    }

    [Fact]
    public void Pvh_start_info_matches_start_info_h()
    {
        var si = PvhStartInfo.Build(cmdlineAddr: 0x20000, modlistAddr: 0x6f00, moduleCount: 1, memmapAddr: 0x6040, memmapEntries: 3);
        Assert.Equal(56, si.Length);
        Assert.Equal(0x336ec578u, BinaryPrimitives.ReadUInt32LittleEndian(si));
        Assert.Equal(1u, BinaryPrimitives.ReadUInt32LittleEndian(si.AsSpan(4)));       // version
        Assert.Equal(1u, BinaryPrimitives.ReadUInt32LittleEndian(si.AsSpan(12)));      // nr_modules
        Assert.Equal(0x6f00UL, BinaryPrimitives.ReadUInt64LittleEndian(si.AsSpan(16))); // modlist_paddr
        Assert.Equal(0x20000UL, BinaryPrimitives.ReadUInt64LittleEndian(si.AsSpan(24))); // cmdline_paddr
        Assert.Equal(0UL, BinaryPrimitives.ReadUInt64LittleEndian(si.AsSpan(32)));     // rsdp_paddr
        Assert.Equal(0x6040UL, BinaryPrimitives.ReadUInt64LittleEndian(si.AsSpan(40))); // memmap_paddr
        Assert.Equal(3u, BinaryPrimitives.ReadUInt32LittleEndian(si.AsSpan(48)));      // memmap_entries

        var mm = PvhStartInfo.BuildMemmap(Map);
        Assert.Equal(3 * 24, mm.Length);
        Assert.Equal(0x9fc00UL, BinaryPrimitives.ReadUInt64LittleEndian(mm.AsSpan(24)));
        Assert.Equal(2u, BinaryPrimitives.ReadUInt32LittleEndian(mm.AsSpan(24 + 16)));

        var mod = PvhStartInfo.BuildModule(0x7000000, 0x1234);
        Assert.Equal(32, mod.Length);
        Assert.Equal(0x7000000UL, BinaryPrimitives.ReadUInt64LittleEndian(mod));
        Assert.Equal(0x1234UL, BinaryPrimitives.ReadUInt64LittleEndian(mod.AsSpan(8)));
    }

    [Fact]
    public void Page_tables_identity_map_four_gib_in_2mib_pages()
    {
        var tables = PageTables.Build().ToDictionary(t => t.Address, t => t.Table);
        Assert.Equal(6, tables.Count);
        ulong Entry(ulong table, int i) => BinaryPrimitives.ReadUInt64LittleEndian(tables[table].AsSpan(i * 8));
        Assert.Equal(BootLayout.PdptAddr | 3, Entry(BootLayout.Pml4Addr, 0));
        Assert.Equal(0UL, Entry(BootLayout.Pml4Addr, 1));
        for (int i = 0; i < 4; i++)
        {
            Assert.Equal((BootLayout.PdAddr + (ulong)i * 4096) | 3, Entry(BootLayout.PdptAddr, i));
        }
        Assert.Equal(0x83UL, Entry(BootLayout.PdAddr, 0));
        Assert.Equal(0x200083UL, Entry(BootLayout.PdAddr, 1));
        Assert.Equal(0xffe00083UL, Entry(BootLayout.PdAddr + 3 * 4096, 511));
    }

    [Fact]
    public void Gdt_segments_decode_as_long_mode_and_flat_protected_mode()
    {
        var code64 = Gdt.Segment(Gdt.Code64Selector);
        Assert.Equal((1, 0, 1, 11, 1, 0xffffffffu), (code64.l, code64.db, code64.present, code64.type, code64.s, code64.limit));
        var code32 = Gdt.Segment(Gdt.Code32Selector);
        Assert.Equal((0, 1, 11), (code32.l, code32.db, code32.type));
        var data = Gdt.Segment(Gdt.DataSelector);
        Assert.Equal((3, 1, 0UL, 0xffffffffu), (data.type, data.db, data.@base, data.limit));
        var tss = Gdt.Segment(Gdt.TssSelector);
        Assert.Equal((11, 0), (tss.type, tss.s));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    [InlineData(254)]
    public void Mp_table_has_valid_checksums_and_every_cpu(int vcpus)
    {
        const ulong at = 0xf0000;
        var b = MpTable.Build(at, vcpus);
        Assert.Equal("_MP_"u8.ToArray(), b[..4]);
        Assert.Equal(0, Sum(b.AsSpan(0, 16)));
        Assert.Equal((uint)(at + 16), BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(4)));
        var t = b.AsSpan(16);
        Assert.Equal("PCMP"u8.ToArray(), t[..4].ToArray());
        int length = BinaryPrimitives.ReadUInt16LittleEndian(t[4..]);
        Assert.Equal(0, Sum(t[..length]));
        Assert.Equal(0xfee00000u, BinaryPrimitives.ReadUInt32LittleEndian(t[36..]));
        int entries = BinaryPrimitives.ReadUInt16LittleEndian(t[34..]);
        int pos = 44, cpus = 0, bsp = 0, ioapics = 0;
        for (int i = 0; i < entries; i++)
        {
            if (t[pos] == 0)
            {
                Assert.Equal(cpus, t[pos + 1]);         // APIC id = vCPU index
                cpus++;
                bsp += (t[pos + 3] & 2) != 0 ? 1 : 0;
                pos += 20;
            }
            else
            {
                ioapics += t[pos] == 2 ? 1 : 0;
                pos += 8;
            }
        }
        Assert.Equal(length, pos);
        Assert.Equal((vcpus, 1, 1), (cpus, bsp, ioapics));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(255)]
    public void Mp_table_refuses_impossible_cpu_counts(int vcpus) =>
        Assert.Throws<BootException>(() => MpTable.Build(0xf0000, vcpus));

    private static int Sum(ReadOnlySpan<byte> b)
    {
        int s = 0;
        foreach (byte x in b)
        {
            s += x;
        }
        return s & 0xff;
    }
}
