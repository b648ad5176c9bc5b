namespace Vireo.Devices;

/// <summary>
/// The MC146818 CMOS RTC at ports 0x70 (index) and 0x71 (data): the host's wall-clock time in
/// BCD or binary as status register B asks, and the RAM sizes a BIOS would leave in CMOS.
/// </summary>
public sealed class CmosRtc : IBusDevice
{
    public const ushort Base = 0x70;
    public const int Length = 2;

    private const byte RegSeconds = 0x00, RegMinutes = 0x02, RegHours = 0x04, RegWeekday = 0x06, RegDay = 0x07,
        RegMonth = 0x08, RegYear = 0x09, RegStatusA = 0x0a, RegStatusB = 0x0b, RegStatusC = 0x0c,
        RegStatusD = 0x0d, RegCentury = 0x32;
    private const byte StatusB24Hour = 0x02, StatusBBinary = 0x04;

    private readonly Lock _lock = new();
    public const int RamSize = 128;
    private readonly byte[] _ram = new byte[RamSize];
    private readonly Func<DateTime> _clock;
    private byte _index;

    /// <param name="lowMemBytes">RAM below the 32-bit hole; <paramref name="highMemBytes"/>: RAM above 4 GiB.</param>
    public CmosRtc(ulong lowMemBytes, ulong highMemBytes, Func<DateTime>? clock = null)
    {
        _clock = clock ?? (() => DateTime.UtcNow);
        _ram[RegStatusA] = 0x26;
        _ram[RegStatusB] = StatusB24Hour;
        _ram[RegStatusD] = 0x80; // RTC power good
        // 0x34/0x35: 64 KiB blocks above 16 MiB; 0x5b..0x5d: 64 KiB blocks above 4 GiB.
        ulong above16M = lowMemBytes > 16UL << 20 ? Math.Min((lowMemBytes - (16UL << 20)) >> 16, 0xffff) : 0;
        _ram[0x34] = (byte)above16M;
        _ram[0x35] = (byte)(above16M >> 8);
        ulong above4G = highMemBytes >> 16;
        _ram[0x5b] = (byte)above4G;
        _ram[0x5c] = (byte)(above4G >> 8);
        _ram[0x5d] = (byte)(above4G >> 16);
    }

    public CmosRtcState SaveState()
    {
        lock (_lock)
        {
            return new CmosRtcState(_index, [.. _ram]);
        }
    }

    /// <summary>Takes the index and CMOS bytes of <paramref name="state"/>, checked first; false (and nothing changed) when it is not valid.</summary>
    public bool TryRestore(CmosRtcState state, out string? error)
    {
        error = state.Problem();
        if (error is not null)
        {
            return false;
        }
        lock (_lock)
        {
            _index = state.Index;
            state.Ram.CopyTo(_ram, 0);
        }
        return true;
    }

    public void Read(ulong offset, Span<byte> data)
    {
        if (data.Length != 1)
        {
            data.Fill(0xff);
            return;
        }
        lock (_lock)
        {
            data[0] = offset == 0 ? _index : ReadRegister(_index);
        }
    }

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        if (data.Length != 1)
        {
            return;
        }
        lock (_lock)
        {
            if (offset == 0)
            {
                _index = (byte)(data[0] & 0x7f); // bit 7 is the NMI mask
            }
            else if (_index is not (RegSeconds or RegMinutes or RegHours or RegWeekday or RegDay or RegMonth
                     or RegYear or RegCentury or RegStatusC or RegStatusD))
            {
                // The clock follows the host; the guest may change the format and the spare RAM.
                _ram[_index] = data[0];
            }
        }
    }

    private byte ReadRegister(byte index)
    {
        var now = _clock();
        return index switch
        {
            RegSeconds => Encode(now.Second),
            RegMinutes => Encode(now.Minute),
            RegHours => Encode(now.Hour),
            RegWeekday => Encode((int)now.DayOfWeek + 1),
            RegDay => Encode(now.Day),
            RegMonth => Encode(now.Month),
            RegYear => Encode(now.Year % 100),
            RegCentury => Encode(now.Year / 100),
            RegStatusA => (byte)(_ram[RegStatusA] & 0x7f), // update-in-progress never reads set
            _ => _ram[index],
        };
    }

    private byte Encode(int value) =>
        (_ram[RegStatusB] & StatusBBinary) != 0 ? (byte)value : (byte)(((value / 10) << 4) | (value % 10));
}
