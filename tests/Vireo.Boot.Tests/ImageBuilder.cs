using System.Buffers.Binary;

namespace Vireo.Boot.Tests;

/// <summary>Builds small ELF and bzImage files for tests, valid unless a test breaks them on purpose.</summary>
internal static class ImageBuilder
{
    public sealed record Segment(ulong PAddr, byte[] Data, ulong MemSize, uint Type = 1);

    /// <summary>An ELF64 (or ELF32) with the given segments; a PVH note when <paramref name="pvhEntry"/> is set.</summary>
    public static byte[] Elf(bool is64, ulong entry, IReadOnlyList<Segment> segments, ulong? pvhEntry = null, int pvhDescSize = 4)
    {
        int ehsize = is64 ? 64 : 52, phentsize = is64 ? 56 : 32;
        var segs = segments.ToList();
        if (pvhEntry is { } pvh)
        {
            var note = new byte[12 + 4 + ((pvhDescSize + 3) & ~3)];
            BinaryPrimitives.WriteUInt32LittleEndian(note, 4);
            BinaryPrimitives.WriteUInt32LittleEndian(note.AsSpan(4), (uint)pvhDescSize);
            BinaryPrimitives.WriteUInt32LittleEndian(note.AsSpan(8), 18);
            "Xen\0"u8.CopyTo(note.AsSpan(12));
            if (pvhDescSize == 8)
            {
                BinaryPrimitives.WriteUInt64LittleEndian(note.AsSpan(16), pvh);
            }
            else if (pvhDescSize >= 4)
            {
                BinaryPrimitives.WriteUInt32LittleEndian(note.AsSpan(16), (uint)pvh);
            }
            segs.Add(new Segment(0, note, 0, 4));
        }
        int phoff = ehsize;
        int dataOff = phoff + segs.Count * phentsize;
        var file = new List<byte>(new byte[dataOff]);
        var offsets = new List<int>();
        foreach (var s in segs)
        {
            offsets.Add(file.Count);
            file.AddRange(s.Data);
        }
        var f = file.ToArray();
        f[0] = 0x7f; f[1] = (byte)'E'; f[2] = (byte)'L'; f[3] = (byte)'F';
        f[4] = (byte)(is64 ? 2 : 1);
        f[5] = 1;
        f[6] = 1;
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(16), 2); // ET_EXEC
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(18), (ushort)(is64 ? 62 : 3));
        if (is64)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(f.AsSpan(24), entry);
            BinaryPrimitives.WriteUInt64LittleEndian(f.AsSpan(32), (ulong)phoff);
            BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(54), (ushort)phentsize);
            BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(56), (ushort)segs.Count);
        }
        else
        {
            BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(24), (uint)entry);
            BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(28), (uint)phoff);
            BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(42), (ushort)phentsize);
            BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(44), (ushort)segs.Count);
        }
        for (int i = 0; i < segs.Count; i++)
        {
            var ph = f.AsSpan(phoff + i * phentsize);
            var s = segs[i];
            BinaryPrimitives.WriteUInt32LittleEndian(ph, s.Type);
            if (is64)
            {
                BinaryPrimitives.WriteUInt64LittleEndian(ph[8..], (ulong)offsets[i]);
                BinaryPrimitives.WriteUInt64LittleEndian(ph[16..], s.PAddr);
                BinaryPrimitives.WriteUInt64LittleEndian(ph[24..], s.PAddr);
                BinaryPrimitives.WriteUInt64LittleEndian(ph[32..], (ulong)s.Data.Length);
                BinaryPrimitives.WriteUInt64LittleEndian(ph[40..], s.MemSize);
            }
            else
            {
                BinaryPrimitives.WriteUInt32LittleEndian(ph[4..], (uint)offsets[i]);
                BinaryPrimitives.WriteUInt32LittleEndian(ph[8..], (uint)s.PAddr);
                BinaryPrimitives.WriteUInt32LittleEndian(ph[12..], (uint)s.PAddr);
                BinaryPrimitives.WriteUInt32LittleEndian(ph[16..], (uint)s.Data.Length);
                BinaryPrimitives.WriteUInt32LittleEndian(ph[20..], (uint)s.MemSize);
            }
        }
        return f;
    }

    public static byte[] SimplePvh(ulong at = 0x100000, int size = 0x2000) =>
        Elf(false, at, [new Segment(at, Fill(size, 0x90), (ulong)size)], pvhEntry: at);

    /// <summary>A bzImage of protocol 2.15 with a 64-bit entry and <paramref name="payload"/> bytes of kernel.</summary>
    public static byte[] BzImage(int payload = 0x4000, ushort version = 0x020f, bool kernel64 = true, byte setupSects = 4, uint initSize = 0x10000)
    {
        int setup = (setupSects == 0 ? 4 : setupSects) + 1;
        var f = new byte[setup * 512 + payload];
        f[0x1f1] = setupSects;
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(0x1fe), 0xaa55);
        f[0x200] = 0xeb;
        f[0x201] = 0x66; // setup header runs to 0x268
        "HdrS"u8.CopyTo(f.AsSpan(0x202));
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(0x206), version);
        f[0x211] = 0x01; // LOADED_HIGH
        BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(0x22c), 0x7fffffff); // initrd_addr_max
        BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(0x230), 0x200000);   // kernel_alignment
        f[0x234] = 1; // relocatable
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(0x236), (ushort)(kernel64 ? 0x3 : 0x0));
        BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(0x238), 2047); // cmdline_size
        BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(0x260), initSize);
        f.AsSpan(setup * 512).Fill(0xcc);
        return f;
    }

    public static byte[] Fill(int n, byte value)
    {
        var b = new byte[n];
        Array.Fill(b, value);
        return b;
    }
}
