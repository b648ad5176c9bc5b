using System.Buffers.Binary;
using System.Text;
using Vireo.Boot.Acpi;
using Vireo.Tests;

namespace Vireo.Boot.Tests;

/// <summary>
/// Vireo's ACPI tables, followed from the RSDP as an OS does, and read back by ACPICA's own
/// disassembler (iasl), which knows every field of every table.
/// </summary>
public class AcpiTablesTests
{
    private const ulong At = 0xe0000;

    private static AcpiPlatform Platform(int vcpus = 2, bool pci = true) => new(
        vcpus,
        pci ? new AcpiPci(0xe000_0000, 1 << 20, 0xc000_0000, 0xcfff_ffff, slot => 16u + (uint)(slot % 8)) : null,
        PmBase: 0x600, ResetPort: 0x608, ResetValue: 6, SciIrq: 9, S5SleepType: 5,
        IoApicAddress: 0xfec0_0000, IoApicId: (byte)vcpus, LapicAddress: 0xfee0_0000);

    /// <summary>Every table reachable from the RSDP, by signature, each checked for length and checksum.</summary>
    private static Dictionary<string, byte[]> Walk(byte[] blob)
    {
        Span<byte> rsdp = blob.AsSpan(0, AcpiTables.RsdpSize);
        Assert.Equal("RSD PTR "u8.ToArray(), rsdp[..8].ToArray());
        Assert.Equal(0, Sum(rsdp[..20]));
        Assert.Equal(0, Sum(rsdp));
        Assert.Equal(2, rsdp[15]);
        var tables = new Dictionary<string, byte[]>();
        byte[] Table(ulong address)
        {
            int off = checked((int)(address - At));
            int length = BinaryPrimitives.ReadInt32LittleEndian(blob.AsSpan(off + 4));
            var t = blob.AsSpan(off, length).ToArray();
            string sig = Encoding.ASCII.GetString(t, 0, 4);
            if (sig != "FACS")
            {
                Assert.True(Sum(t) == 0, $"{sig} checksum");
            }
            tables[sig] = t;
            return t;
        }
        var xsdt = Table(BinaryPrimitives.ReadUInt64LittleEndian(rsdp[24..]));
        for (int off = 36; off < xsdt.Length; off += 8)
        {
            Table(BinaryPrimitives.ReadUInt64LittleEndian(xsdt.AsSpan(off)));
        }
        var fadt = tables["FACP"];
        Assert.Equal(0UL, BinaryPrimitives.ReadUInt64LittleEndian(fadt.AsSpan(132))); // X_FIRMWARE_CTRL: only one of the pair is set
        Assert.Equal(BinaryPrimitives.ReadUInt32LittleEndian(fadt.AsSpan(40)), BinaryPrimitives.ReadUInt64LittleEndian(fadt.AsSpan(140)));
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32LittleEndian(fadt.AsSpan(36)) % 64); // FACS is 64-byte aligned
        Table(BinaryPrimitives.ReadUInt32LittleEndian(fadt.AsSpan(36)));
        Table(BinaryPrimitives.ReadUInt64LittleEndian(fadt.AsSpan(140)));
        return tables;
    }

    private static int Sum(ReadOnlySpan<byte> data)
    {
        byte sum = 0;
        foreach (byte b in data)
        {
            sum += b;
        }
        return sum;
    }

    [Fact]
    public void Every_table_is_reachable_from_the_rsdp_with_a_valid_checksum()
    {
        var tables = Walk(AcpiTables.Build(Platform(), At));
        Assert.Equal(["APIC", "DSDT", "FACP", "FACS", "MCFG", "XSDT"], tables.Keys.Order());
    }

    [Fact]
    public void Without_pci_there_is_no_mcfg_and_no_host_bridge()
    {
        var tables = Walk(AcpiTables.Build(Platform(pci: false), At));
        Assert.DoesNotContain("MCFG", tables.Keys);
        Assert.DoesNotContain("PCI0"u8.ToArray(), Windows(tables["DSDT"], 4));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(254)]
    public void Madt_lists_each_vcpu_once_with_its_apic_id(int vcpus)
    {
        var madt = Walk(AcpiTables.Build(Platform(vcpus), At))["APIC"];
        var ids = new List<int>();
        for (int off = 44; off < madt.Length; off += madt[off + 1])
        {
            if (madt[off] == 0)
            {
                Assert.Equal(madt[off + 2], madt[off + 3]); // processor UID = APIC id
                Assert.Equal(1, madt[off + 4] & 1);         // enabled
                ids.Add(madt[off + 3]);
            }
        }
        Assert.Equal(Enumerable.Range(0, vcpus), ids);
    }

    [Fact]
    public void Too_many_vcpus_are_refused() =>
        Assert.Throws<BootException>(() => AcpiTables.Build(Platform(255), At));

    [Fact]
    public void Aml_encodings_match_the_spec_examples()
    {
        Assert.Equal([0x0c, 0x41, 0xd0, 0x0a, 0x08], Aml.EisaId("PNP0A08")); // 0x080ad041, as iasl emits it
        Assert.Equal([0x5c, .. "_SB_"u8], Aml.NameString("\\_SB"));
        Assert.Equal([0x2e, .. "_SB_PCI0"u8], Aml.NameString("_SB.PCI0"));
        Assert.Equal([0x2f, 3, .. "_SB_PCI0ECAM"u8], Aml.NameString("_SB.PCI0.ECAM"));
        Assert.Equal(0x3f, Aml.Wrapped(new byte[62])[0]);                     // one byte up to 63
        Assert.Equal([0x41, 0x04], Aml.Wrapped(new byte[63])[..2]);          // 65 = 0x41: two bytes, low nibble first
        Assert.Equal(65, Aml.Wrapped(new byte[63]).Length);
        var big = Aml.Wrapped(new byte[5000]);                               // 5003: three bytes
        Assert.Equal(2, big[0] >> 6);
        Assert.Equal(big.Length, big[0] & 0x0f | big[1] << 4 | big[2] << 12);
        Assert.Throws<ArgumentException>(() => Aml.NameString("TOOLONG"));
        Assert.Throws<ArgumentException>(() => Aml.EisaId("pnp0a08"));
    }

    [Fact]
    public void Acpica_disassembles_every_table_to_what_vireo_meant()
    {
        var tables = Walk(AcpiTables.Build(Platform(), At));
        string dir = TempDirectory.Create("vireo-acpi");
        var text = new Dictionary<string, string>();
        foreach (var (sig, bytes) in tables)
        {
            string file = Path.Combine(dir, sig.ToLowerInvariant() + ".dat");
            File.WriteAllBytes(file, bytes);
            var r = TestEnvironment.Run("iasl", $"-d {file}", workDir: dir);
            Assert.True(r.ExitCode == 0, $"iasl -d {sig}: {r.Output}\n{r.Error}");
            text[sig] = File.ReadAllText(Path.ChangeExtension(file, ".dsl"));
            Assert.DoesNotContain("Unknown", text[sig]);
            Assert.DoesNotContain("Invalid", text[sig]);
        }
        Assert.Contains("PM1A Control Block Address : 00000604", text["FACP"]);
        Assert.Contains("SCI Interrupt : 0009", text["FACP"]);
        Assert.Contains("Reset Register Supported (V2) : 1", text["FACP"]);
        Assert.Contains("Hardware Reduced (V5) : 0", text["FACP"]);
        Assert.Contains("8042 Present on ports 60/64 (V2) : 0", text["FACP"]);
        Assert.Contains("Value to cause reset : 06", text["FACP"]);
        Assert.Contains("Base Address : 00000000E0000000", text["MCFG"]);
        Assert.Contains("I/O Apic ID : 02", text["APIC"]);

        // The DSDT compiles back: the disassembly is valid ASL, so the AML was well formed.
        string dsl = text["DSDT"];
        Assert.Contains("Name (_S5, Package (0x04)", dsl);
        Assert.Contains("EisaId (\"PNP0A08\")", dsl);
        Assert.Contains("0x0001FFFF", dsl);
        Assert.Contains("0xCFFFFFFF,         // Range Maximum", dsl);
        Assert.Contains("Device (C001)", dsl);
        Assert.Contains("IRQNoFlags ()\n                    {4}", dsl);
        var compiled = TestEnvironment.Run("iasl", $"-p {Path.Combine(dir, "recompiled")} {Path.Combine(dir, "dsdt.dsl")}", workDir: dir);
        Assert.True(compiled.ExitCode == 0, $"iasl could not compile the disassembled DSDT:\n{compiled.Output}\n{compiled.Error}");
        Assert.Equal(tables["DSDT"][36..], File.ReadAllBytes(Path.Combine(dir, "recompiled.aml"))[36..]);
    }

    private static List<byte[]> Windows(byte[] data, int size) =>
        Enumerable.Range(0, data.Length - size + 1).Select(i => data[i..(i + size)]).ToList();
}
