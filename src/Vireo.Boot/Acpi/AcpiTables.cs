using System.Buffers.Binary;
using System.Text;

namespace Vireo.Boot.Acpi;

/// <summary>The PCI host bridge the tables describe: ECAM for bus 0, the BAR window, and INTx GSIs.</summary>
/// <param name="GsiForSlot">The GSI a slot's INTA is wired to (level-triggered).</param>
public sealed record AcpiPci(ulong EcamBase, ulong EcamSize, uint MmioWindowBase, uint MmioWindowEnd, Func<int, uint> GsiForSlot);

/// <summary>What the guest platform offers that the ACPI tables must describe.</summary>
/// <param name="PmBase">I/O port of the PM1a event block (4 bytes); the PM1a control block (2 bytes) follows it.</param>
/// <param name="ResetPort">I/O port of the FADT reset register; writing <paramref name="ResetValue"/> resets the machine.</param>
/// <param name="SciIrq">The ISA IRQ (and GSI) of the ACPI system control interrupt, level-triggered.</param>
/// <param name="S5SleepType">The SLP_TYP value \_S5 names: writing it with SLP_EN to PM1a_CNT powers off.</param>
public sealed record AcpiPlatform(
    int Vcpus,
    AcpiPci? Pci,
    ushort PmBase,
    ushort ResetPort,
    byte ResetValue,
    byte SciIrq,
    byte S5SleepType,
    ulong IoApicAddress,
    byte IoApicId,
    ulong LapicAddress);

/// <summary>
/// The ACPI tables Vireo gives a guest (ACPI 6.5 ch. 5): RSDP → XSDT → FADT (→ FACS, DSDT), MADT and,
/// with PCI, MCFG. They are laid out as one blob for one guest-physical address, the RSDP first.
/// Everything here is data: the DSDT has no methods, so power-off and reset go through the fixed
/// hardware registers (PM1a_CNT's SLP_EN, the FADT reset register).
/// </summary>
public static class AcpiTables
{
    public const int RsdpSize = 36;
    private const int HeaderSize = 36;
    private const int FadtSize = 276, FacsSize = 64;
    private static readonly byte[] OemId = "VIREO "u8.ToArray();
    private static readonly byte[] OemTableId = "VIREOVMM"u8.ToArray();

    /// <summary>Builds every table for a blob placed at <paramref name="address"/>; the RSDP is at its start.</summary>
    public static byte[] Build(AcpiPlatform p, ulong address)
    {
        if (p.Vcpus < 1 || p.Vcpus > MpTable.MaxVcpus)
        {
            throw new BootException($"the MADT describes 1 to {MpTable.MaxVcpus} vCPUs, not {p.Vcpus}");
        }
        var blob = new List<byte>();
        ulong Place(byte[] table, int align = 16)
        {
            while (blob.Count % align != 0)
            {
                blob.Add(0);
            }
            ulong at = address + (ulong)blob.Count;
            blob.AddRange(table);
            return at;
        }

        blob.AddRange(new byte[RsdpSize]); // filled in last, once the XSDT's address is known
        ulong facs = Place(Facs(), align: 64);
        ulong dsdt = Place(Dsdt(p));
        var entries = new List<ulong> { Place(Fadt(p, facs, dsdt)), Place(Madt(p)) };
        if (p.Pci is { } pci)
        {
            entries.Add(Place(Mcfg(pci)));
        }
        ulong xsdt = Place(Xsdt(entries));
        var bytes = blob.ToArray();
        Rsdp(xsdt).CopyTo(bytes, 0);
        return bytes;
    }

    /// <summary>The Root System Description Pointer, revision 2 (XSDT only).</summary>
    public static byte[] Rsdp(ulong xsdt)
    {
        var b = new byte[RsdpSize];
        var s = b.AsSpan();
        "RSD PTR "u8.CopyTo(s);
        OemId.CopyTo(s[9..]);
        s[15] = 2; // revision: ACPI 2.0+
        BinaryPrimitives.WriteUInt32LittleEndian(s[20..], RsdpSize);
        BinaryPrimitives.WriteUInt64LittleEndian(s[24..], xsdt);
        s[8] = MpTable.Checksum(s[..20]);
        s[32] = MpTable.Checksum(s);
        return b;
    }

    private static byte[] Xsdt(List<ulong> entries)
    {
        var t = Table("XSDT", 1, HeaderSize + 8 * entries.Count);
        for (int i = 0; i < entries.Count; i++)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(t.AsSpan(HeaderSize + 8 * i), entries[i]);
        }
        return Sealed(t);
    }

    private static byte[] Facs()
    {
        var b = new byte[FacsSize]; // no checksum: the OS writes to it
        "FACS"u8.CopyTo(b);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), FacsSize);
        b[32] = 2; // version
        return b;
    }

    private static byte[] Fadt(AcpiPlatform p, ulong facs, ulong dsdt)
    {
        const uint WbInvd = 1 << 0, ProcC1 = 1 << 2, SleepButtonIsControlMethod = 1 << 5, ResetRegSupported = 1 << 10;
        const ushort NoVga = 1 << 2; // IA-PC boot architecture: no 8042 bit either, Vireo has no PS/2 controller
        var t = Table("FACP", 6, FadtSize);
        var s = t.AsSpan();
        // FACS and DSDT sit below 4 GiB: the 32-bit fields carry them; X_FIRMWARE_CTRL stays 0
        // (the spec wants only one of the pair), X_DSDT repeats the DSDT for 64-bit readers.
        BinaryPrimitives.WriteUInt32LittleEndian(s[36..], (uint)facs);
        BinaryPrimitives.WriteUInt32LittleEndian(s[40..], (uint)dsdt);
        BinaryPrimitives.WriteUInt16LittleEndian(s[46..], p.SciIrq);
        // SMI_CMD stays 0: the platform is always in ACPI mode (SCI_EN reads as 1).
        BinaryPrimitives.WriteUInt32LittleEndian(s[56..], p.PmBase);
        BinaryPrimitives.WriteUInt32LittleEndian(s[64..], (uint)(p.PmBase + 4));
        s[88] = 4; // PM1_EVT_LEN
        s[89] = 2; // PM1_CNT_LEN
        BinaryPrimitives.WriteUInt16LittleEndian(s[96..], 101);  // P_LVL2_LAT > 100: no C2
        BinaryPrimitives.WriteUInt16LittleEndian(s[98..], 1001); // P_LVL3_LAT > 1000: no C3
        s[108] = 0x32; // CENTURY: the CMOS RTC's century byte
        BinaryPrimitives.WriteUInt16LittleEndian(s[109..], NoVga);
        BinaryPrimitives.WriteUInt32LittleEndian(s[112..], WbInvd | ProcC1 | SleepButtonIsControlMethod | ResetRegSupported);
        Gas(s[116..], p.ResetPort, 8);
        s[128] = p.ResetValue;
        s[131] = 5; // FADT minor version: 6.5
        BinaryPrimitives.WriteUInt64LittleEndian(s[140..], dsdt);
        Gas(s[148..], p.PmBase, 32);
        Gas(s[172..], (ushort)(p.PmBase + 4), 16);
        "VIREOVMM"u8.CopyTo(s[268..]); // hypervisor vendor identity
        return Sealed(t);
    }

    /// <summary>A Generic Address Structure for a system I/O register of <paramref name="bits"/> bits.</summary>
    private static void Gas(Span<byte> s, ushort port, byte bits)
    {
        s[0] = 1; // system I/O space
        s[1] = bits;
        s[2] = 0;
        s[3] = (bits / 8) switch { 1 => 1, 2 => 2, _ => 3 }; // access size: byte, word, dword
        BinaryPrimitives.WriteUInt64LittleEndian(s[4..], port);
    }

    private static byte[] Madt(AcpiPlatform p)
    {
        const uint PcAtCompatible = 1; // dual 8259s present (KVM's in-kernel PIC)
        var body = new List<byte>();
        for (int cpu = 0; cpu < p.Vcpus; cpu++)
        {
            body.AddRange([0, 8, (byte)cpu, (byte)cpu, 1, 0, 0, 0]); // processor local APIC: UID, APIC id, enabled
        }
        body.AddRange([1, 12, p.IoApicId, 0, .. U32((uint)p.IoApicAddress), .. U32(0)]); // I/O APIC, GSI base 0
        // The SCI is level-triggered, active high (KVM's IOAPIC treats a raised line as asserted).
        body.AddRange([2, 10, 0, p.SciIrq, .. U32(p.SciIrq), 0x0d, 0x00]);
        body.AddRange([4, 6, 0xff, 0x00, 0x00, 1]); // local APIC NMI on LINT1 of every processor
        var t = Table("APIC", 6, HeaderSize + 8 + body.Count);
        BinaryPrimitives.WriteUInt32LittleEndian(t.AsSpan(36), (uint)p.LapicAddress);
        BinaryPrimitives.WriteUInt32LittleEndian(t.AsSpan(40), PcAtCompatible);
        body.CopyTo(t, HeaderSize + 8);
        return Sealed(t);
    }

    private static byte[] Mcfg(AcpiPci pci)
    {
        var t = Table("MCFG", 1, HeaderSize + 8 + 16);
        var e = t.AsSpan(HeaderSize + 8);
        BinaryPrimitives.WriteUInt64LittleEndian(e, pci.EcamBase);
        // segment 0, buses 0..0
        return Sealed(t);
    }

    /// <summary>The DSDT's AML: \_S5, the PCI host bridge with its windows and INTx routing, COM1, the processors.</summary>
    public static byte[] DsdtAml(AcpiPlatform p)
    {
        var sb = new List<byte[]>();
        if (p.Pci is { } pci)
        {
            var prt = new List<byte[]>();
            for (int slot = 1; slot < 32; slot++)
            {
                prt.Add(Aml.Package(Aml.Integer(((ulong)slot << 16) | 0xffff), Aml.Integer(0), Aml.Integer(0), Aml.Integer(pci.GsiForSlot(slot))));
            }
            sb.Add(Aml.Device("PCI0",
                Aml.Name("_HID", Aml.EisaId("PNP0A08")),
                Aml.Name("_CID", Aml.EisaId("PNP0A03")),
                Aml.Name("_ADR", Aml.Integer(0)),
                Aml.Name("_SEG", Aml.Integer(0)),
                Aml.Name("_BBN", Aml.Integer(0)),
                Aml.Name("_UID", Aml.Integer(0)),
                Aml.Name("_CRS", Aml.ResourceTemplate(
                    Aml.WordBusNumber(0, 0),
                    Aml.Io(0xcf8, 0xcf8, 1, 8),
                    Aml.WordIo(0x0000, 0x0cf7),
                    Aml.WordIo(0x0d00, 0xffff),
                    Aml.DWordMemory(pci.MmioWindowBase, pci.MmioWindowEnd))),
                Aml.Name("_PRT", Aml.Package([.. prt]))));
            // ECAM is claimed by a motherboard device, so Linux trusts the MCFG region.
            sb.Add(Aml.Device("ECAM",
                Aml.Name("_HID", Aml.EisaId("PNP0C02")),
                Aml.Name("_UID", Aml.Integer(1)),
                Aml.Name("_CRS", Aml.ResourceTemplate(Aml.DWordMemory((uint)pci.EcamBase, (uint)(pci.EcamBase + pci.EcamSize - 1))))));
        }
        sb.Add(Aml.Device("COM1",
            Aml.Name("_HID", Aml.EisaId("PNP0501")),
            Aml.Name("_UID", Aml.Integer(1)),
            Aml.Name("_CRS", Aml.ResourceTemplate(Aml.Io(0x3f8, 0x3f8, 1, 8), Aml.IrqNoFlags(4)))));
        for (int cpu = 0; cpu < p.Vcpus; cpu++)
        {
            sb.Add(Aml.Device($"C{cpu:X3}",
                Aml.Name("_HID", Aml.String("ACPI0007")),
                Aml.Name("_UID", Aml.Integer((ulong)cpu))));
        }
        return
        [
            .. Aml.Name("_S5", Aml.Package(Aml.Integer(p.S5SleepType), Aml.Integer(p.S5SleepType), Aml.Integer(0), Aml.Integer(0))),
            .. Aml.Scope("_SB", [.. sb]),
        ];
    }

    private static byte[] Dsdt(AcpiPlatform p)
    {
        var aml = DsdtAml(p);
        var t = Table("DSDT", 2, HeaderSize + aml.Length);
        aml.CopyTo(t, HeaderSize);
        return Sealed(t);
    }

    /// <summary>A table with its standard header filled in except the checksum.</summary>
    private static byte[] Table(string signature, byte revision, int length)
    {
        var t = new byte[length];
        var s = t.AsSpan();
        Encoding.ASCII.GetBytes(signature).CopyTo(s);
        BinaryPrimitives.WriteUInt32LittleEndian(s[4..], (uint)length);
        s[8] = revision;
        OemId.CopyTo(s[10..]);
        OemTableId.CopyTo(s[16..]);
        BinaryPrimitives.WriteUInt32LittleEndian(s[24..], 1); // OEM revision
        "VIRE"u8.CopyTo(s[28..]);                              // creator id
        BinaryPrimitives.WriteUInt32LittleEndian(s[32..], 1); // creator revision
        return t;
    }

    private static byte[] Sealed(byte[] table)
    {
        table[9] = MpTable.Checksum(table);
        return table;
    }

    private static byte[] U32(uint v)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, v);
        return b;
    }
}
