using System.Buffers.Binary;
using Vireo.Interop;

namespace Vireo.Boot;

/// <summary>The boot GDT and the conversion of its descriptors into KVM segment registers.</summary>
public static class Gdt
{
    public const ushort Code64Selector = 0x08, DataSelector = 0x10, TssSelector = 0x18, Code32Selector = 0x20;

    public static readonly ulong[] Entries =
    [
        0,                      // null
        0x00af_9b00_0000_ffff,  // 0x08: 64-bit code, DPL0
        0x00cf_9300_0000_ffff,  // 0x10: flat data, 4 GiB
        0x008f_8b00_0000_ffff,  // 0x18: 32-bit busy TSS (placeholder KVM requires)
        0x00cf_9b00_0000_ffff,  // 0x20: 32-bit flat code, for PVH
    ];

    public static byte[] Bytes()
    {
        var b = new byte[Entries.Length * 8];
        for (int i = 0; i < Entries.Length; i++)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(i * 8), Entries[i]);
        }
        return b;
    }

    public static ulong EntryFor(ushort selector) => Entries[selector >> 3];

    /// <summary>Decodes a descriptor into the hidden part KVM keeps for a segment register.</summary>
    public static kvm_segment Segment(ushort selector)
    {
        ulong e = EntryFor(selector);
        uint limit = (uint)((e & 0xffff) | (((e >> 48) & 0xf) << 16));
        byte g = (byte)((e >> 55) & 1);
        return new kvm_segment
        {
            @base = ((e >> 16) & 0xffff) | (((e >> 32) & 0xff) << 16) | (((e >> 56) & 0xff) << 24),
            limit = g != 0 ? (limit << 12) | 0xfff : limit,
            selector = selector,
            type = (byte)((e >> 40) & 0xf),
            s = (byte)((e >> 44) & 1),
            dpl = (byte)((e >> 45) & 3),
            present = (byte)((e >> 47) & 1),
            avl = (byte)((e >> 52) & 1),
            l = (byte)((e >> 53) & 1),
            db = (byte)((e >> 54) & 1),
            g = g,
        };
    }
}
