using System.Buffers.Binary;
using System.Text;

namespace Vireo.Boot;

/// <summary>
/// The Intel MultiProcessor Specification 1.4 table: how a guest without ACPI finds every
/// vCPU, the IOAPIC and the ISA interrupt routing. Floating pointer first, then the table.
/// </summary>
public static class MpTable
{
    public const int MaxVcpus = 254; // xAPIC ids are 8 bits and the IOAPIC takes the next id
    public const ulong IoApicAddr = Memory.MemoryLayout.IoApicBase;
    public const ulong LapicAddr = Memory.MemoryLayout.LapicBase;
    public const int IoApicPins = 24;
    private const int FloatingPointerSize = 16, HeaderSize = 44, ProcessorSize = 20, SmallEntrySize = 8;
    private const byte ApicVersion = 0x14, IoApicVersion = 0x11;

    public static int SizeFor(int vcpus) =>
        FloatingPointerSize + HeaderSize + vcpus * ProcessorSize + SmallEntrySize * (2 + IoApicPins + 2);

    public static byte[] Build(ulong address, int vcpus)
    {
        if (vcpus < 1 || vcpus > MaxVcpus)
        {
            throw new BootException($"the MP table describes 1 to {MaxVcpus} vCPUs, not {vcpus}");
        }
        var b = new byte[SizeFor(vcpus)];
        var s = b.AsSpan();
        ulong table = address + FloatingPointerSize;
        byte ioapicId = (byte)vcpus;

        // Floating pointer structure.
        "_MP_"u8.CopyTo(s);
        BinaryPrimitives.WriteUInt32LittleEndian(s[4..], (uint)table);
        s[8] = 1; // length in 16-byte units
        s[9] = 4; // spec revision 1.4
        s[10] = Checksum(s[..FloatingPointerSize]);

        var t = s[FloatingPointerSize..];
        int pos = HeaderSize;
        int count = 0;
        for (int cpu = 0; cpu < vcpus; cpu++)
        {
            var e = t.Slice(pos, ProcessorSize);
            e[0] = 0; // processor
            e[1] = (byte)cpu;
            e[2] = ApicVersion;
            e[3] = (byte)(1 | (cpu == 0 ? 2 : 0)); // enabled, bootstrap processor
            BinaryPrimitives.WriteUInt32LittleEndian(e[4..], 0x600); // family 6 signature
            BinaryPrimitives.WriteUInt32LittleEndian(e[8..], 0x201); // FPU and APIC present
            pos += ProcessorSize;
            count++;
        }
        var bus = t.Slice(pos, SmallEntrySize);
        bus[0] = 1; // bus
        bus[1] = 0;
        Encoding.ASCII.GetBytes("ISA   ").CopyTo(bus[2..]);
        pos += SmallEntrySize;
        count++;

        var ioapic = t.Slice(pos, SmallEntrySize);
        ioapic[0] = 2; // I/O APIC
        ioapic[1] = ioapicId;
        ioapic[2] = IoApicVersion;
        ioapic[3] = 1; // enabled
        BinaryPrimitives.WriteUInt32LittleEndian(ioapic[4..], (uint)IoApicAddr);
        pos += SmallEntrySize;
        count++;

        for (int pin = 0; pin < IoApicPins; pin++)
        {
            var e = t.Slice(pos, SmallEntrySize);
            e[0] = 3; // I/O interrupt assignment
            e[1] = 0; // INT (vectored)
            e[4] = 0; // ISA bus
            e[5] = (byte)pin;
            e[6] = ioapicId;
            e[7] = (byte)pin;
            pos += SmallEntrySize;
            count++;
        }
        // LINT0 is ExtINT from the PIC, LINT1 is NMI, on every local APIC.
        for (byte lint = 0; lint < 2; lint++)
        {
            var e = t.Slice(pos, SmallEntrySize);
            e[0] = 4; // local interrupt assignment
            e[1] = lint == 0 ? (byte)3 : (byte)1;
            e[6] = 0xff; // all local APICs
            e[7] = lint;
            pos += SmallEntrySize;
            count++;
        }

        "PCMP"u8.CopyTo(t);
        BinaryPrimitives.WriteUInt16LittleEndian(t[4..], (ushort)pos);
        t[6] = 4;
        Encoding.ASCII.GetBytes("VIREO   ").CopyTo(t[8..]);
        Encoding.ASCII.GetBytes("VIREO VMM   ").CopyTo(t[16..]);
        BinaryPrimitives.WriteUInt16LittleEndian(t[34..], (ushort)count);
        BinaryPrimitives.WriteUInt32LittleEndian(t[36..], (uint)LapicAddr);
        t[7] = Checksum(t[..pos]);
        return b;
    }

    /// <summary>The byte that makes the sum of <paramref name="data"/> zero modulo 256.</summary>
    public static byte Checksum(ReadOnlySpan<byte> data)
    {
        byte sum = 0;
        foreach (byte x in data)
        {
            sum += x;
        }
        return (byte)(0 - sum);
    }
}
