using System.Buffers.Binary;
using Vireo.Memory;
using static Vireo.Boot.Tests.ImageBuilder;

namespace Vireo.Boot.Tests;

public class BootLoaderTests
{
    private const ulong MiB = 1UL << 20;

    [Fact]
    public void Pvh_image_is_loaded_and_entered_in_32_bit_mode_with_start_info()
    {
        using var m = GuestMemory.Create(64 * MiB);
        var image = Elf(false, 0x100000, [new Segment(0x100000, [1, 2, 3, 4], 0x2000)], pvhEntry: 0x100000);
        var state = BootLoader.Load(m, new BootSource(image, new byte[] { 9, 9, 9 }, "console=ttyS0", 2));
        Assert.Equal(0x100000UL, state.Regs.rip);
        Assert.Equal(BootLayout.PvhStartInfoAddr, state.Regs.rbx);
        Assert.Equal(Gdt.Code32Selector, state.CodeSelector);
        Assert.Equal(0UL, state.Efer);
        Assert.Equal(0UL, state.Cr0 & CpuSetup.CR0_PG);
        Assert.Equal(new byte[] { 1, 2, 3, 4, 0, 0 }, m.GetSpan(new GuestAddress(0x100000), 6).ToArray());
        Assert.Equal(0x336ec578u, m.ReadObj<uint>(new GuestAddress(BootLayout.PvhStartInfoAddr)));
        Assert.Equal("console=ttyS0\0"u8.ToArray(), m.GetSpan(new GuestAddress(BootLayout.CmdlineAddr), 14).ToArray());
        // The initrd module sits page-aligned at the top of RAM.
        ulong modAddr = m.ReadObj<ulong>(new GuestAddress(BootLayout.PvhModlistAddr));
        Assert.Equal(0UL, modAddr % 4096);
        Assert.Equal(3UL, m.ReadObj<ulong>(new GuestAddress(BootLayout.PvhModlistAddr + 8)));
        Assert.Equal(new byte[] { 9, 9, 9 }, m.GetSpan(new GuestAddress(modAddr), 3).ToArray());
        Assert.Equal((byte)'_', m.ReadObj<byte>(new GuestAddress(BootLayout.MpTableAddr)));
    }

    [Fact]
    public void Pvh_note_with_an_8_byte_value_is_read_like_linux_writes_it()
    {
        var image = Elf(true, 0xffffffff81000000, [new Segment(0x1000000, [0xf4], 0x1000)], pvhEntry: 0x1000000, pvhDescSize: 8);
        var k = KernelImage.Parse(image);
        Assert.Equal((EntryMode.Pvh, 0x1000000UL), (k.Mode, k.Entry));
    }

    [Fact]
    public void Bzimage_is_loaded_at_1mib_and_entered_in_long_mode_with_a_zero_page()
    {
        using var m = GuestMemory.Create(64 * MiB);
        var image = BzImage();
        var state = BootLoader.Load(m, new BootSource(image, new byte[5000], "root=/dev/vda", 1));
        Assert.Equal(0x100200UL, state.Regs.rip);
        Assert.Equal(BootLayout.ZeroPageAddr, state.Regs.rsi);
        Assert.Equal(Gdt.Code64Selector, state.CodeSelector);
        Assert.Equal(CpuSetup.EFER_LME | CpuSetup.EFER_LMA, state.Efer);
        Assert.Equal(BootLayout.Pml4Addr, state.Cr3);
        Assert.Equal(0xcc, m.ReadObj<byte>(new GuestAddress(0x100000)));
        var zp = m.GetSpan(new GuestAddress(BootLayout.ZeroPageAddr), 4096);
        Assert.Equal("HdrS"u8.ToArray(), zp.Slice(0x202, 4).ToArray());
        uint initrd = BinaryPrimitives.ReadUInt32LittleEndian(zp[0x218..]);
        Assert.Equal(5000u, BinaryPrimitives.ReadUInt32LittleEndian(zp[0x21c..]));
        Assert.True(initrd >= 0x100000 + 0x10000 && initrd % 4096 == 0 && initrd + 5000 <= 64 * MiB);
        Assert.Equal(3, zp[0x1e8]);
    }

    [Fact]
    public void Elf64_without_a_pvh_note_is_entered_through_the_64_bit_protocol()
    {
        using var m = GuestMemory.Create(64 * MiB);
        var image = Elf(true, 0x1000000, [new Segment(0x1000000, [0xf4], 0x1000)]);
        var state = BootLoader.Load(m, new BootSource(image, null, "", 1));
        Assert.Equal((0x1000000UL, BootLayout.ZeroPageAddr, Gdt.Code64Selector), (state.Regs.rip, state.Regs.rsi, state.CodeSelector));
    }

    [Fact]
    public void The_project_hello_guest_parses_as_a_pvh_image()
    {
        string path = Path.Combine(Vireo.Tests.TestEnvironment.GuestDir, "hello.elf");
        var k = KernelImage.Parse(File.ReadAllBytes(path));
        Assert.Equal(EntryMode.Pvh, k.Mode);
        Assert.Equal(0x100000UL, k.LowestAddress);
    }
}
