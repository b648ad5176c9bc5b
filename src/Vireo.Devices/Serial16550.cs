namespace Vireo.Devices;

/// <summary>
/// A 16550A UART as Linux's 8250 driver expects it: transmit to a host stream, receive from a
/// host FIFO, THRE and receive-data interrupts, loopback for the driver's probe, a scratch register.
/// </summary>
public sealed class Serial16550 : IBusDevice
{
    public const ushort Com1Base = 0x3f8;
    public const uint Com1Irq = 4;
    public const int RxCapacity = 4096;

    private const byte IER_RDA = 0x01, IER_THRE = 0x02;
    private const byte IIR_NONE = 0x01, IIR_THRE = 0x02, IIR_RDA = 0x04, IIR_FIFO = 0xc0;
    private const byte LCR_DLAB = 0x80;
    private const byte MCR_DTR = 0x01, MCR_RTS = 0x02, MCR_OUT1 = 0x04, MCR_OUT2 = 0x08, MCR_LOOP = 0x10;
    private const byte LSR_DR = 0x01, LSR_THRE = 0x20, LSR_TEMT = 0x40;
    private const byte MSR_CTS = 0x10, MSR_DSR = 0x20, MSR_RI = 0x40, MSR_DCD = 0x80;

    private readonly Lock _lock = new();
    private readonly Queue<byte> _rx = new(RxCapacity);
    private readonly Action<byte> _transmit;
    private readonly IInterruptLine? _irq;
    private byte _ier, _lcr, _mcr = MCR_OUT2, _scr, _dll = 0x0c, _dlm, _fcr;
    private bool _threPending;

    /// <param name="transmit">Receives each byte the guest sends.</param>
    public Serial16550(Action<byte> transmit, IInterruptLine? irq)
    {
        _transmit = transmit;
        _irq = irq;
    }

    /// <summary>Queues host input for the guest; returns how many bytes fit.</summary>
    public int Enqueue(ReadOnlySpan<byte> input)
    {
        int n;
        lock (_lock)
        {
            n = Math.Min(input.Length, RxCapacity - _rx.Count);
            foreach (byte b in input[..n])
            {
                _rx.Enqueue(b);
            }
        }
        if (n > 0 && (_ier & IER_RDA) != 0)
        {
            _irq?.Trigger();
        }
        return n;
    }

    public Serial16550State SaveState()
    {
        lock (_lock)
        {
            return new Serial16550State(_ier, _lcr, _mcr, _scr, _dll, _dlm, _fcr, _threPending, [.. _rx]);
        }
    }

    /// <summary>Takes the registers and pending input of <paramref name="state"/>, checked first; false (and nothing changed) when it is not valid.</summary>
    public bool TryRestore(Serial16550State state, out string? error)
    {
        error = state.Problem();
        if (error is not null)
        {
            return false;
        }
        lock (_lock)
        {
            (_ier, _lcr, _mcr, _scr, _dll, _dlm, _fcr, _threPending) =
                (state.Ier, state.Lcr, state.Mcr, state.Scr, state.Dll, state.Dlm, state.Fcr, state.ThrePending);
            _rx.Clear();
            foreach (byte b in state.Rx)
            {
                _rx.Enqueue(b);
            }
        }
        return true;
    }

    /// <summary>Bytes waiting for the guest to read.</summary>
    public int PendingInput
    {
        get
        {
            lock (_lock)
            {
                return _rx.Count;
            }
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
            data[0] = ReadRegister((int)offset);
        }
    }

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        if (data.Length != 1)
        {
            return;
        }
        bool trigger;
        lock (_lock)
        {
            trigger = WriteRegister((int)offset, data[0]);
        }
        if (trigger)
        {
            _irq?.Trigger();
        }
    }

    private byte ReadRegister(int reg)
    {
        bool dlab = (_lcr & LCR_DLAB) != 0;
        switch (reg)
        {
            case 0 when dlab:
                return _dll;
            case 0:
                return _rx.TryDequeue(out byte b) ? b : (byte)0;
            case 1 when dlab:
                return _dlm;
            case 1:
                return _ier;
            case 2:
                byte iir = IIR_NONE;
                if ((_ier & IER_RDA) != 0 && _rx.Count > 0)
                {
                    iir = IIR_RDA;
                }
                else if (_threPending && (_ier & IER_THRE) != 0)
                {
                    iir = IIR_THRE;
                    _threPending = false; // reading IIR clears a THRE interrupt
                }
                return (byte)(iir | ((_fcr & 1) != 0 ? IIR_FIFO : 0));
            case 3:
                return _lcr;
            case 4:
                return _mcr;
            case 5:
                return (byte)(LSR_THRE | LSR_TEMT | (_rx.Count > 0 ? LSR_DR : 0));
            case 6:
                if ((_mcr & MCR_LOOP) != 0)
                {
                    // Loopback: the modem outputs come back as the modem inputs.
                    return (byte)(((_mcr & MCR_RTS) != 0 ? MSR_CTS : 0) | ((_mcr & MCR_DTR) != 0 ? MSR_DSR : 0) |
                                  ((_mcr & MCR_OUT1) != 0 ? MSR_RI : 0) | ((_mcr & MCR_OUT2) != 0 ? MSR_DCD : 0));
                }
                return MSR_DCD | MSR_DSR | MSR_CTS;
            case 7:
                return _scr;
            default:
                return 0xff;
        }
    }

    /// <summary>Returns true when the write raised an interrupt.</summary>
    private bool WriteRegister(int reg, byte value)
    {
        bool dlab = (_lcr & LCR_DLAB) != 0;
        switch (reg)
        {
            case 0 when dlab:
                _dll = value;
                return false;
            case 0:
                if ((_mcr & MCR_LOOP) != 0)
                {
                    if (_rx.Count < RxCapacity)
                    {
                        _rx.Enqueue(value);
                    }
                }
                else
                {
                    _transmit(value);
                }
                // The byte left at once: the holding register is empty again.
                _threPending = true;
                return (_ier & IER_THRE) != 0 || ((_mcr & MCR_LOOP) != 0 && (_ier & IER_RDA) != 0);
            case 1 when dlab:
                _dlm = value;
                return false;
            case 1:
                bool threNewlyEnabled = (value & IER_THRE) != 0 && (_ier & IER_THRE) == 0;
                _ier = (byte)(value & 0x0f);
                if (threNewlyEnabled)
                {
                    _threPending = true;
                }
                return threNewlyEnabled || ((_ier & IER_RDA) != 0 && _rx.Count > 0);
            case 2:
                _fcr = value;
                if ((value & 0x02) != 0)
                {
                    _rx.Clear();
                }
                return false;
            case 3:
                _lcr = value;
                return false;
            case 4:
                _mcr = (byte)(value & 0x1f);
                return false;
            case 7:
                _scr = value;
                return false;
            default:
                return false; // LSR and MSR are read-only
        }
    }
}
