namespace Vireo.Devices;

/// <summary>
/// The i8042 keyboard controller, only as far as guests use it on a VM: the command byte,
/// self-test, and the CPU reset command (0xFE), which stops the VM as in Firecracker.
/// Spans ports 0x60 (data, offset 0) to 0x64 (status/command, offset 4).
/// </summary>
public sealed class I8042 : IBusDevice
{
    public const ushort Base = 0x60;
    public const int Length = 5;

    private const byte CmdReadCommandByte = 0x20, CmdWriteCommandByte = 0x60, CmdSelfTest = 0xaa,
        CmdReadOutputPort = 0xd0, CmdWriteOutputPort = 0xd1, CmdResetCpu = 0xfe;
    private const byte StatusOutputFull = 0x01, StatusSystemFlag = 0x04, StatusCommandLast = 0x08;

    private readonly Lock _lock = new();
    private readonly Action _reset;
    private byte _commandByte = 0x45, _outputPort = 0x01, _status = StatusSystemFlag, _data;
    private byte _pendingWrite;

    /// <param name="reset">Called when the guest asks for a CPU reset.</param>
    public I8042(Action reset) => _reset = reset;

    public I8042State SaveState()
    {
        lock (_lock)
        {
            return new I8042State(_commandByte, _outputPort, _status, _data, _pendingWrite);
        }
    }

    public void Restore(I8042State state)
    {
        lock (_lock)
        {
            (_commandByte, _outputPort, _status, _data, _pendingWrite) = (state.CommandByte, state.OutputPort, state.Status, state.Data, state.PendingWrite);
        }
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
            switch (offset)
            {
                case 0:
                    data[0] = _data;
                    _status &= unchecked((byte)~StatusOutputFull);
                    break;
                case 4:
                    data[0] = _status;
                    break;
                default:
                    data[0] = 0xff;
                    break;
            }
        }
    }

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        if (data.Length != 1)
        {
            return;
        }
        bool reset = false;
        lock (_lock)
        {
            byte v = data[0];
            if (offset == 4)
            {
                _status |= StatusCommandLast;
                switch (v)
                {
                    case CmdResetCpu:
                        reset = true;
                        break;
                    case CmdReadCommandByte:
                        Output(_commandByte);
                        break;
                    case CmdReadOutputPort:
                        Output(_outputPort);
                        break;
                    case CmdSelfTest:
                        Output(0x55);
                        break;
                    case CmdWriteCommandByte:
                    case CmdWriteOutputPort:
                        _pendingWrite = v;
                        break;
                }
            }
            else if (offset == 0)
            {
                _status &= unchecked((byte)~StatusCommandLast);
                switch (_pendingWrite)
                {
                    case CmdWriteCommandByte:
                        _commandByte = v;
                        break;
                    case CmdWriteOutputPort:
                        _outputPort = v;
                        reset = (v & 1) == 0; // clearing the reset line resets the CPU
                        break;
                }
                _pendingWrite = 0;
            }
        }
        if (reset)
        {
            _reset();
        }
    }

    private void Output(byte value)
    {
        _data = value;
        _status |= StatusOutputFull;
    }
}
