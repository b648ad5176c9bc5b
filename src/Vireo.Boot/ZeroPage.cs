using System.Buffers.Binary;

namespace Vireo.Boot;

/// <summary>struct boot_params (the "zero page") for the Linux 64-bit boot protocol.</summary>
public static class ZeroPage
{
    public const int Size = 4096;
    public const int E820EntriesOffset = 0x1e8;
    public const int E820TableOffset = 0x2d0;
    public const int E820MaxEntries = 128;
    public const int TypeOfLoaderOffset = 0x210;
    public const int LoadFlagsOffset = 0x211;
    public const int RamdiskImageOffset = 0x218;
    public const int RamdiskSizeOffset = 0x21c;
    public const int HeapEndPtrOffset = 0x224;
    public const int CmdLinePtrOffset = 0x228;
    public const int CmdlineSizeOffset = 0x238;
    public const int KernelAlignmentOffset = 0x230;
    public const int ExtRamdiskImageOffset = 0xc0;
    public const int ExtRamdiskSizeOffset = 0xc4;
    public const int ExtCmdLinePtrOffset = 0xc8;
    public const int AcpiRsdpAddrOffset = 0x70;
    private const byte CanUseHeap = 0x80;

    /// <summary>Builds the zero page; <paramref name="header"/> is the bzImage's own setup header, or null for a vmlinux.</summary>
    public static byte[] Build(BzImageHeader? header, ulong cmdlineAddr,
        ulong initrdAddr, ulong initrdSize, E820Entry[] e820, ulong rsdpAddr = 0)
    {
        if (e820.Length > E820MaxEntries)
        {
            throw new BootException($"e820 map has {e820.Length} entries; the zero page holds {E820MaxEntries}");
        }
        var zp = new byte[Size];
        var s = zp.AsSpan();
        if (header is not null)
        {
            header.SetupHeader.CopyTo(s[BzImageHeader.SetupHeaderOffset..]);
        }
        else
        {
            // A vmlinux brings no setup header: write the fields the kernel reads.
            BinaryPrimitives.WriteUInt16LittleEndian(s[0x1fe..], 0xaa55);
            "HdrS"u8.CopyTo(s[0x202..]);
            BinaryPrimitives.WriteUInt16LittleEndian(s[0x206..], 0x020c);
            BinaryPrimitives.WriteUInt32LittleEndian(s[KernelAlignmentOffset..], 0x0100_0000);
            BinaryPrimitives.WriteUInt32LittleEndian(s[CmdlineSizeOffset..], BootLayout.CmdlineMax - 1);
        }
        s[TypeOfLoaderOffset] = 0xff; // "undefined" boot loader
        s[LoadFlagsOffset] |= CanUseHeap;
        BinaryPrimitives.WriteUInt16LittleEndian(s[HeapEndPtrOffset..], 0xfe00);
        BinaryPrimitives.WriteUInt32LittleEndian(s[CmdLinePtrOffset..], (uint)cmdlineAddr);
        BinaryPrimitives.WriteUInt32LittleEndian(s[ExtCmdLinePtrOffset..], (uint)(cmdlineAddr >> 32));
        BinaryPrimitives.WriteUInt32LittleEndian(s[RamdiskImageOffset..], (uint)initrdAddr);
        BinaryPrimitives.WriteUInt32LittleEndian(s[RamdiskSizeOffset..], (uint)initrdSize);
        BinaryPrimitives.WriteUInt32LittleEndian(s[ExtRamdiskImageOffset..], (uint)(initrdAddr >> 32));
        BinaryPrimitives.WriteUInt32LittleEndian(s[ExtRamdiskSizeOffset..], (uint)(initrdSize >> 32));
        BinaryPrimitives.WriteUInt64LittleEndian(s[AcpiRsdpAddrOffset..], rsdpAddr); // read by kernels of boot protocol 2.14+; older ones scan for it
        s[E820EntriesOffset] = (byte)e820.Length;
        for (int i = 0; i < e820.Length; i++)
        {
            var entry = s.Slice(E820TableOffset + i * 20, 20);
            BinaryPrimitives.WriteUInt64LittleEndian(entry, e820[i].Address);
            BinaryPrimitives.WriteUInt64LittleEndian(entry[8..], e820[i].Size);
            BinaryPrimitives.WriteUInt32LittleEndian(entry[16..], (uint)e820[i].Type);
        }
        return zp;
    }
}
