using System.Buffers.Binary;

namespace Vireo.Boot;

/// <summary>struct hvm_start_info (xen/include/public/arch-x86/hvm/start_info.h), version 1 with a memory map.</summary>
public static class PvhStartInfo
{
    public const uint Magic = 0x336ec578;
    public const int Size = 56;
    public const int MemmapEntrySize = 24;
    public const int ModlistEntrySize = 32;

    /// <summary>The start info itself; <paramref name="modlistAddr"/> is 0 when there is no initrd.</summary>
    public static byte[] Build(ulong cmdlineAddr, ulong modlistAddr, int moduleCount, ulong memmapAddr, int memmapEntries, ulong rsdpAddr = 0)
    {
        var b = new byte[Size];
        var s = b.AsSpan();
        BinaryPrimitives.WriteUInt32LittleEndian(s, Magic);
        BinaryPrimitives.WriteUInt32LittleEndian(s[4..], 1); // version
        BinaryPrimitives.WriteUInt32LittleEndian(s[8..], 0); // flags
        BinaryPrimitives.WriteUInt32LittleEndian(s[12..], (uint)moduleCount);
        BinaryPrimitives.WriteUInt64LittleEndian(s[16..], modlistAddr);
        BinaryPrimitives.WriteUInt64LittleEndian(s[24..], cmdlineAddr);
        BinaryPrimitives.WriteUInt64LittleEndian(s[32..], rsdpAddr);
        BinaryPrimitives.WriteUInt64LittleEndian(s[40..], memmapAddr);
        BinaryPrimitives.WriteUInt32LittleEndian(s[48..], (uint)memmapEntries);
        return b;
    }

    /// <summary>The hvm_memmap_table_entry array.</summary>
    public static byte[] BuildMemmap(E820Entry[] e820)
    {
        var b = new byte[e820.Length * MemmapEntrySize];
        for (int i = 0; i < e820.Length; i++)
        {
            var s = b.AsSpan(i * MemmapEntrySize);
            BinaryPrimitives.WriteUInt64LittleEndian(s, e820[i].Address);
            BinaryPrimitives.WriteUInt64LittleEndian(s[8..], e820[i].Size);
            BinaryPrimitives.WriteUInt32LittleEndian(s[16..], (uint)e820[i].Type);
        }
        return b;
    }

    /// <summary>One hvm_modlist_entry (the initrd).</summary>
    public static byte[] BuildModule(ulong paddr, ulong size)
    {
        var b = new byte[ModlistEntrySize];
        BinaryPrimitives.WriteUInt64LittleEndian(b, paddr);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8), size);
        return b;
    }
}
