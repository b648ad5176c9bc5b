using System.Buffers.Binary;
using Vireo.Devices.Pci;

namespace Vireo.Devices;

/// <summary>
/// The ACPI fixed-hardware registers the FADT points at (ACPI 6.5 §4.8): the PM1a event block
/// (status, enable), the PM1a control block and the reset register, in one I/O range from
/// <see cref="Base"/>. Writing SLP_EN with the \_S5 sleep type powers the VM off; writing the reset
/// value resets it; <see cref="PressPowerButton"/> raises the SCI as a power button does.
/// </summary>
public sealed class AcpiPm : IBusDevice
{
    public const ushort Base = 0x600;
    public const int Length = 16;
    public const int EventBlockOffset = 0, ControlBlockOffset = 4, ResetOffset = 8;
    public const ushort ResetPort = Base + ResetOffset;
    public const byte ResetValue = 0x06; // what real chipsets' 0xcf9 takes for a hard reset
    public const byte SciIrq = 9;
    public const byte S5SleepType = 5;

    public const ushort PowerButtonStatus = 1 << 8, WakeStatus = 1 << 15; // PM1 status / enable bits
    public const ushort SciEnable = 1 << 0, SleepEnable = 1 << 13;         // PM1 control bits

    private readonly Action _powerOff;
    private readonly Action _reset;
    private readonly ILevelInterrupt? _sci;
    private readonly Lock _lock = new();
    private ushort _status, _enable, _control = SciEnable;

    public AcpiPm(Action powerOff, Action reset, ILevelInterrupt? sci)
    {
        _powerOff = powerOff;
        _reset = reset;
        _sci = sci;
    }

    public AcpiPmState SaveState()
    {
        lock (_lock)
        {
            return new AcpiPmState(_status, _enable, _control);
        }
    }

    /// <summary>Takes the registers of <paramref name="state"/> and sets the SCI line to match them.</summary>
    public void Restore(AcpiPmState state)
    {
        lock (_lock)
        {
            (_status, _enable, _control) = (state.Status, state.Enable, state.Control);
            UpdateSci();
        }
    }

    /// <summary>The power button: sets PWRBTN_STS, and raises the SCI if the guest enabled it.</summary>
    public void PressPowerButton()
    {
        lock (_lock)
        {
            _status |= PowerButtonStatus;
            UpdateSci();
        }
    }

    public void Read(ulong offset, Span<byte> data)
    {
        Span<byte> regs = stackalloc byte[Length];
        lock (_lock)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(regs, _status);
            BinaryPrimitives.WriteUInt16LittleEndian(regs[2..], _enable);
            BinaryPrimitives.WriteUInt16LittleEndian(regs[ControlBlockOffset..], _control);
        }
        data.Fill(0xff);
        if (offset < Length)
        {
            var src = regs[(int)offset..];
            src[..Math.Min(src.Length, data.Length)].CopyTo(data);
        }
    }

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        bool powerOff = false, reset = false;
        lock (_lock)
        {
            for (int i = 0; i < data.Length; i++)
            {
                ulong at = offset + (ulong)i;
                byte b = data[i];
                switch (at)
                {
                    case 0 or 1: // PM1 status: write 1 to clear
                        _status &= (ushort)~(b << (8 * (int)at));
                        break;
                    case 2 or 3:
                        _enable = (ushort)((_enable & ~(0xff << (8 * (int)(at - 2)))) | (b << (8 * (int)(at - 2))));
                        break;
                    case 4 or 5:
                        _control = (ushort)((_control & ~(0xff << (8 * (int)(at - 4)))) | (b << (8 * (int)(at - 4))));
                        break;
                    case ResetOffset:
                        reset |= b == ResetValue;
                        break;
                }
            }
            if ((_control & SleepEnable) != 0)
            {
                // SLP_EN is write-only: it never reads back. Only S5 is offered (\_S5 is the one sleep object).
                powerOff = ((_control >> 10) & 7) == S5SleepType;
                _control &= unchecked((ushort)~SleepEnable);
            }
            _control |= SciEnable; // the platform is always in ACPI mode
            UpdateSci();
        }
        if (powerOff)
        {
            _powerOff();
        }
        if (reset)
        {
            _reset();
        }
    }

    private void UpdateSci() => _sci?.Set((_status & _enable & PowerButtonStatus) != 0);
}
