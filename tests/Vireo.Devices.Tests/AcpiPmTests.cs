using System.Buffers.Binary;
using Vireo.Devices.Pci;

namespace Vireo.Devices.Tests;

/// <summary>The ACPI fixed registers, written as Linux's ACPICA writes them (hwsleep.c, hwregs.c).</summary>
public class AcpiPmTests
{
    private sealed class Line : ILevelInterrupt
    {
        public bool Asserted { get; private set; }
        public void Set(bool asserted) => Asserted = asserted;
    }

    private readonly Line _sci = new();
    private int _powerOffs, _resets;
    private readonly AcpiPm _pm;

    public AcpiPmTests() => _pm = new AcpiPm(() => _powerOffs++, () => _resets++, _sci);

    private ushort Read16(int offset)
    {
        var b = new byte[2];
        _pm.Read((ulong)offset, b);
        return BinaryPrimitives.ReadUInt16LittleEndian(b);
    }

    private void Write16(int offset, ushort value)
    {
        var b = new byte[2];
        BinaryPrimitives.WriteUInt16LittleEndian(b, value);
        _pm.Write((ulong)offset, b);
    }

    [Fact]
    public void Sci_en_always_reads_set_so_the_os_sees_acpi_mode() =>
        Assert.Equal(AcpiPm.SciEnable, Read16(AcpiPm.ControlBlockOffset) & AcpiPm.SciEnable);

    [Fact]
    public void S5_with_slp_en_powers_off_after_the_type_is_written_first()
    {
        ushort typ = AcpiPm.S5SleepType << 10;
        Write16(AcpiPm.ControlBlockOffset, (ushort)(AcpiPm.SciEnable | typ)); // ACPICA: SLP_TYP first
        Assert.Equal(0, _powerOffs);
        Write16(AcpiPm.ControlBlockOffset, (ushort)(AcpiPm.SciEnable | typ | AcpiPm.SleepEnable));
        Assert.Equal(1, _powerOffs);
        Assert.Equal(0, Read16(AcpiPm.ControlBlockOffset) & AcpiPm.SleepEnable); // write-only
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(3)]
    public void Other_sleep_types_are_not_power_off(int type)
    {
        Write16(AcpiPm.ControlBlockOffset, (ushort)((type << 10) | AcpiPm.SleepEnable));
        Assert.Equal(0, _powerOffs);
    }

    [Fact]
    public void Only_the_reset_value_resets()
    {
        _pm.Write(AcpiPm.ResetOffset, [0x02]);
        Assert.Equal(0, _resets);
        _pm.Write(AcpiPm.ResetOffset, [AcpiPm.ResetValue]);
        Assert.Equal(1, _resets);
    }

    [Fact]
    public void Power_button_raises_the_sci_only_when_enabled_and_status_is_write_one_to_clear()
    {
        _pm.PressPowerButton();
        Assert.Equal(AcpiPm.PowerButtonStatus, Read16(0) & AcpiPm.PowerButtonStatus);
        Assert.False(_sci.Asserted);
        Write16(2, AcpiPm.PowerButtonStatus); // PWRBTN_EN
        Assert.True(_sci.Asserted);
        Write16(0, 0); // writing 0 clears nothing
        Assert.True(_sci.Asserted);
        Write16(0, AcpiPm.PowerButtonStatus);
        Assert.Equal(0, Read16(0));
        Assert.False(_sci.Asserted);
    }

    [Fact]
    public void Reads_outside_the_registers_are_all_ones_and_odd_writes_are_ignored()
    {
        var b = new byte[4];
        _pm.Read(AcpiPm.Length + 4, b);
        Assert.Equal([0xff, 0xff, 0xff, 0xff], b);
        _pm.Write(12, [1, 2, 3, 4]);
        _pm.Write(5, [0xff]); // high byte of PM1_CNT: SLP_TYP 7 with SLP_EN
        Assert.Equal(0, _powerOffs + _resets);
    }
}
