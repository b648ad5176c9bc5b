using System.Text;

namespace Vireo.Boot.Acpi;

/// <summary>
/// The few ACPI Machine Language terms a VMM's DSDT needs (ACPI 6.5 §20.2), each returned as its
/// encoded bytes: names, integers, strings, packages, buffers, scopes, devices, and the resource
/// descriptors of §6.4. Only data objects: Vireo's DSDT has no methods, so there is nothing to run.
/// </summary>
public static class Aml
{
    private const byte ZeroOp = 0x00, OneOp = 0x01, NameOp = 0x08, BytePrefix = 0x0a, WordPrefix = 0x0b,
        DWordPrefix = 0x0c, StringPrefix = 0x0d, QWordPrefix = 0x0e, ScopeOp = 0x10, BufferOp = 0x11,
        PackageOp = 0x12, ExtOpPrefix = 0x5b, DeviceOp = 0x82, DualNamePrefix = 0x2e, MultiNamePrefix = 0x2f,
        RootChar = 0x5c;

    /// <summary>Name(path, value).</summary>
    public static byte[] Name(string path, byte[] value) => [NameOp, .. NameString(path), .. value];

    /// <summary>Scope(path) { body }.</summary>
    public static byte[] Scope(string path, params byte[][] body) => [ScopeOp, .. Wrapped([.. NameString(path), .. Concat(body)])];

    /// <summary>Device(name) { body }.</summary>
    public static byte[] Device(string name, params byte[][] body) =>
        [ExtOpPrefix, DeviceOp, .. Wrapped([.. NameString(name), .. Concat(body)])];

    /// <summary>The smallest encoding of an integer constant.</summary>
    public static byte[] Integer(ulong value) => value switch
    {
        0 => [ZeroOp],
        1 => [OneOp],
        <= 0xff => [BytePrefix, (byte)value],
        <= 0xffff => [WordPrefix, .. LittleEndian(value, 2)],
        <= 0xffff_ffff => [DWordPrefix, .. LittleEndian(value, 4)],
        _ => [QWordPrefix, .. LittleEndian(value, 8)],
    };

    /// <summary>A string constant (ASCII, no NUL inside).</summary>
    public static byte[] String(string value)
    {
        if (value.AsSpan().IndexOfAnyExceptInRange('\x01', '\x7f') >= 0)
        {
            throw new ArgumentException($"AML strings are ASCII without NUL: '{value}'");
        }
        return [StringPrefix, .. Encoding.ASCII.GetBytes(value), 0];
    }

    /// <summary>EISAID("PNP0A08"): three letters and four hex digits packed into a 32-bit integer.</summary>
    public static byte[] EisaId(string id)
    {
        if (id.Length != 7 || id.AsSpan(0, 3).IndexOfAnyExceptInRange('A', 'Z') >= 0 || !uint.TryParse(id.AsSpan(3), System.Globalization.NumberStyles.AllowHexSpecifier, null, out _))
        {
            throw new ArgumentException($"not an EISA id: '{id}'");
        }
        uint v = (uint)(((id[0] - '@') << 26) | ((id[1] - '@') << 21) | ((id[2] - '@') << 16)) | Convert.ToUInt32(id[3..], 16);
        // Stored big-endian: the compressed letters come first in memory.
        return Integer((v >> 24) | ((v >> 8) & 0xff00) | ((v << 8) & 0xff_0000) | (v << 24));
    }

    /// <summary>Package() { elements }.</summary>
    public static byte[] Package(params byte[][] elements)
    {
        if (elements.Length > 255)
        {
            throw new ArgumentException("a Package holds at most 255 elements");
        }
        return [PackageOp, .. Wrapped([(byte)elements.Length, .. Concat(elements)])];
    }

    /// <summary>Buffer() { bytes }.</summary>
    public static byte[] Buffer(ReadOnlySpan<byte> bytes) => [BufferOp, .. Wrapped([.. Integer((ulong)bytes.Length), .. bytes])];

    /// <summary>ResourceTemplate() { descriptors }: a buffer of resource descriptors closed by an End Tag.</summary>
    public static byte[] ResourceTemplate(params byte[][] descriptors)
    {
        byte[] body = [.. Concat(descriptors), 0x79, 0x00]; // End Tag; checksum 0 means "treat as correct"
        return Buffer(body);
    }

    /// <summary>IO(Decode16, min, max, alignment, length): an I/O range the device decodes (§6.4.2.5).</summary>
    public static byte[] Io(ushort min, ushort max, byte alignment, byte length) =>
        [0x47, 0x01, .. LittleEndian(min, 2), .. LittleEndian(max, 2), alignment, length];

    /// <summary>IRQNoFlags() { irq }: an edge-triggered, active-high ISA interrupt (§6.4.2.1).</summary>
    public static byte[] IrqNoFlags(int irq) => [0x22, .. LittleEndian(1UL << irq, 2)];

    /// <summary>WordBusNumber(ResourceProducer, MinFixed, MaxFixed, PosDecode, ...) for a bridge's bus range.</summary>
    public static byte[] WordBusNumber(ushort min, ushort max) => WordAddress(2, 0, min, max);

    /// <summary>WordIO(ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, ...): an I/O window a bridge forwards.</summary>
    public static byte[] WordIo(ushort min, ushort max) => WordAddress(1, 3, min, max);

    /// <summary>DWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite, ...): a memory window a bridge forwards.</summary>
    public static byte[] DWordMemory(uint min, uint max)
    {
        const byte producerMinMaxFixed = 0x0c, readWrite = 0x01;
        return [0x87, 0x17, 0x00, 0x00, producerMinMaxFixed, readWrite,
            .. LittleEndian(0, 4), .. LittleEndian(min, 4), .. LittleEndian(max, 4), .. LittleEndian(0, 4), .. LittleEndian((ulong)max - min + 1, 4)];
    }

    private static byte[] WordAddress(byte resourceType, byte typeFlags, ushort min, ushort max)
    {
        const byte producerMinMaxFixed = 0x0c;
        return [0x88, 0x0d, 0x00, resourceType, producerMinMaxFixed, typeFlags,
            .. LittleEndian(0, 2), .. LittleEndian(min, 2), .. LittleEndian(max, 2), .. LittleEndian(0, 2), .. LittleEndian((ulong)max - min + 1, 2)];
    }

    /// <summary>A NameString: "\_SB_.PCI0", "_S5", "C001"; segments shorter than four characters are padded with '_'.</summary>
    public static byte[] NameString(string path)
    {
        var bytes = new List<byte>();
        string rest = path;
        if (rest.StartsWith('\\'))
        {
            bytes.Add(RootChar);
            rest = rest[1..];
        }
        string[] segments = rest.Length == 0 ? [] : rest.Split('.');
        foreach (string seg in segments)
        {
            if (seg.Length is 0 or > 4 || !(char.IsAsciiLetterUpper(seg[0]) || seg[0] == '_')
                || !IsNameSegment(seg))
            {
                throw new ArgumentException($"not an ACPI name segment: '{seg}' in '{path}'");
            }
        }
        switch (segments.Length)
        {
            case 0:
                bytes.Add(0x00); // NullName
                break;
            case 1:
                break;
            case 2:
                bytes.Add(DualNamePrefix);
                break;
            default:
                bytes.Add(MultiNamePrefix);
                bytes.Add((byte)segments.Length);
                break;
        }
        foreach (string seg in segments)
        {
            for (int i = 0; i < 4; i++)
            {
                bytes.Add(i < seg.Length ? (byte)seg[i] : (byte)'_');
            }
        }
        return [.. bytes];
    }

    /// <summary>Prefixes <paramref name="body"/> with its PkgLength (§20.2.4), which counts its own bytes too.</summary>
    public static byte[] Wrapped(byte[] body)
    {
        int length = body.Length;
        if (length + 1 < 0x40)
        {
            return [(byte)(length + 1), .. body];
        }
        for (int extra = 1; extra <= 3; extra++)
        {
            int total = length + 1 + extra;
            if (total < 1 << (4 + 8 * extra))
            {
                var prefix = new byte[1 + extra];
                prefix[0] = (byte)((extra << 6) | (total & 0x0f));
                for (int i = 1; i <= extra; i++)
                {
                    prefix[i] = (byte)(total >> (4 + 8 * (i - 1)));
                }
                return [.. prefix, .. body];
            }
        }
        throw new ArgumentException($"AML package of {length} bytes is too long");
    }

    private static bool IsNameSegment(string seg)
    {
        foreach (char c in seg)
        {
            if (!(c is (>= 'A' and <= 'Z') or (>= '0' and <= '9') or '_'))
            {
                return false;
            }
        }
        return true;
    }

    // Loops, not LINQ: this runs at every boot, where generic LINQ costs JIT time (see DESIGN.md).
    private static byte[] Concat(byte[][] parts)
    {
        int length = 0;
        foreach (var p in parts)
        {
            length += p.Length;
        }
        var all = new byte[length];
        int at = 0;
        foreach (var p in parts)
        {
            p.CopyTo(all, at);
            at += p.Length;
        }
        return all;
    }

    private static byte[] LittleEndian(ulong value, int size)
    {
        var b = new byte[size];
        for (int i = 0; i < size; i++)
        {
            b[i] = (byte)(value >> (8 * i));
        }
        return b;
    }
}
