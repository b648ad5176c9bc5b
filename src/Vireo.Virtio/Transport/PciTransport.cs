using System.Buffers.Binary;
using Vireo.Devices;
using Vireo.Devices.Pci;
using Vireo.Memory;
using Vireo.Virtio.Queue;

namespace Vireo.Virtio.Transport;

/// <summary>
/// The virtio-pci modern transport (virtio 1.2 §4.1), what Linux's stock virtio_pci binds to:
/// vendor 0x1af4, device 0x1040 + type, one 64-bit memory BAR holding the common, ISR, device and
/// notify regions and the MSI-X table and PBA, found through vendor capabilities. Interrupts go
/// by MSI-X when the driver enables it, else by INTx (level, held until the ISR is read).
/// </summary>
public sealed class PciTransport : IPciFunction, IBusDevice
{
    public const ulong BarSize = 0x10000;
    public const ulong CommonOffset = 0x0000, IsrOffset = 0x1000, DeviceOffset = 0x2000, NotifyOffset = 0x3000,
        MsixTableOffset = 0x8000, MsixPbaOffset = 0xc000;
    public const uint NotifyMultiplier = 4;
    private const ushort NoVector = 0xffff;
    private const ushort CommandMemory = 0x2, CommandIntxDisable = 0x400;

    // _lock guards configuration and common registers, and is held while calling into the device
    // (activate, reset). _irqLock guards the MSI-X table and is never held while calling the device,
    // which signals interrupts with its own lock held: the two orders never meet.
    private readonly Lock _lock = new();
    private readonly Lock _irqLock = new();
    private readonly VirtioDevice _device;
    private readonly GuestMemory _memory;
    private readonly IMsiTarget _msi;
    private readonly ILevelInterrupt _intx;
    private readonly byte[] _config = new byte[256];
    private readonly QueueState[] _queues;
    private readonly ushort[] _queueVectors;
    private readonly ulong[] _msixAddress;
    private readonly uint[] _msixData;
    private readonly bool[] _msixMasked;
    private readonly bool[] _msixPending;
    private uint _deviceFeatureSelect, _driverFeatureSelect;
    private ulong _driverFeatures;
    private byte _status;
    private ushort _queueSelect, _configVector = NoVector;
    private int _isr;
    private ulong _bar;

    /// <summary>Called when the guest moves the BAR or turns memory decoding on or off: (old address or null, new address or null).</summary>
    public Action<ulong?, ulong?>? BarChanged { get; set; }

    public VirtioDevice Device => _device;
    public int VectorCount => _queueVectors.Length + 1;

    public PciTransport(VirtioDevice device, GuestMemory memory, IMsiTarget msi, ILevelInterrupt intx, ulong barAddress, byte interruptLine)
    {
        _device = device;
        _memory = memory;
        _msi = msi;
        _intx = intx;
        _bar = barAddress;
        _queues = new QueueState[device.QueueCount];
        _queueVectors = new ushort[device.QueueCount];
        Array.Fill(_queueVectors, NoVector);
        int vectors = VectorCount;
        _msixAddress = new ulong[vectors];
        _msixData = new uint[vectors];
        _msixMasked = new bool[vectors];
        Array.Fill(_msixMasked, true);
        _msixPending = new bool[vectors];
        for (int i = 0; i < _queues.Length; i++)
        {
            _queues[i].Size = device.MaxQueueSize;
        }
        BuildConfigSpace(interruptLine);
    }

    private void BuildConfigSpace(byte interruptLine)
    {
        var c = _config.AsSpan();
        BinaryPrimitives.WriteUInt16LittleEndian(c, 0x1af4);
        BinaryPrimitives.WriteUInt16LittleEndian(c[2..], (ushort)(0x1040 + _device.DeviceType));
        BinaryPrimitives.WriteUInt16LittleEndian(c[6..], 0x0010); // status: capabilities list
        c[8] = 1;                                                  // revision: modern
        (c[0x0b], c[0x0a]) = _device.DeviceType switch
        {
            VirtioConstants.DeviceBlock => ((byte)0x01, (byte)0x80),   // mass storage
            VirtioConstants.DeviceNet => ((byte)0x02, (byte)0x00),     // ethernet
            VirtioConstants.DeviceConsole => ((byte)0x07, (byte)0x80), // communication
            _ => ((byte)0xff, (byte)0x00),
        };
        BinaryPrimitives.WriteUInt32LittleEndian(c[0x10..], (uint)_bar | 0x4); // 64-bit memory BAR
        BinaryPrimitives.WriteUInt32LittleEndian(c[0x14..], (uint)(_bar >> 32));
        BinaryPrimitives.WriteUInt16LittleEndian(c[0x2c..], 0x1af4);
        BinaryPrimitives.WriteUInt16LittleEndian(c[0x2e..], 0x1100);
        c[0x34] = 0x40;
        c[0x3c] = interruptLine;
        c[0x3d] = 1; // INTA
        WriteVirtioCap(c, 0x40, 0x50, 16, 1, CommonOffset, 0x1000);
        WriteVirtioCap(c, 0x50, 0x64, 20, 2, NotifyOffset, 0x1000);
        BinaryPrimitives.WriteUInt32LittleEndian(c[0x60..], NotifyMultiplier);
        WriteVirtioCap(c, 0x64, 0x74, 16, 3, IsrOffset, 0x1000);
        WriteVirtioCap(c, 0x74, 0x84, 16, 4, DeviceOffset, 0x1000);
        c[0x84] = 0x11; // MSI-X
        c[0x85] = 0x00;
        BinaryPrimitives.WriteUInt16LittleEndian(c[0x86..], (ushort)(VectorCount - 1));
        BinaryPrimitives.WriteUInt32LittleEndian(c[0x88..], (uint)MsixTableOffset); // BIR 0
        BinaryPrimitives.WriteUInt32LittleEndian(c[0x8c..], (uint)MsixPbaOffset);
    }

    private static void WriteVirtioCap(Span<byte> c, int at, int next, byte len, byte type, ulong offset, uint length)
    {
        c[at] = 0x09; // vendor-specific
        c[at + 1] = (byte)next;
        c[at + 2] = len;
        c[at + 3] = type;
        c[at + 4] = 0; // BAR 0
        BinaryPrimitives.WriteUInt32LittleEndian(c[(at + 8)..], (uint)offset);
        BinaryPrimitives.WriteUInt32LittleEndian(c[(at + 12)..], length);
    }

    // ---- state ----

    public PciTransportState SaveState()
    {
        lock (_lock)
        {
            lock (_irqLock)
            {
                return new PciTransportState([.. _config], _deviceFeatureSelect, _driverFeatureSelect, _driverFeatures, _status,
                    _queueSelect, _configVector, Volatile.Read(ref _isr), [.. _queues], [.. _queueVectors],
                    [.. _msixAddress], [.. _msixData], [.. _msixMasked], [.. _msixPending]);
            }
        }
    }

    /// <summary>
    /// Takes saved registers (untrusted: every array's length, every vector and queue size is
    /// checked, and of the configuration space only the bytes the guest may write are taken), then
    /// the device's own state if the driver had it running, then puts the BAR, the MSI routes and
    /// the INTx line where the state says. False, with the reason, when the state does not fit;
    /// nothing is changed then.
    /// </summary>
    public bool TryRestore(PciTransportState state, VirtioDeviceState device, out string? error)
    {
        error = Check(state);
        if (error is not null)
        {
            return false;
        }
        ulong? oldMapping, newMapping;
        lock (_lock)
        {
            if ((state.Status & VirtioConstants.StatusDriverOk) != 0 != device.Activated)
            {
                error = device.Activated ? "the device runs but the transport's status has no DRIVER_OK" : "the transport's status has DRIVER_OK but the device is stopped";
                return false;
            }
            if (!_device.TryRestore(_memory, device, SignalQueue, SignalConfigChange, out error))
            {
                return false;
            }
            oldMapping = Mapping;
            foreach (int at in WritableBytes)
            {
                _config[at] = state.Config[at];
            }
            uint low = BinaryPrimitives.ReadUInt32LittleEndian(_config.AsSpan(0x10)) & ~(uint)(BarSize - 1);
            BinaryPrimitives.WriteUInt32LittleEndian(_config.AsSpan(0x10), low | 0x4);
            _bar = ((ulong)BinaryPrimitives.ReadUInt32LittleEndian(_config.AsSpan(0x14)) << 32) | low;
            newMapping = Mapping;
            (_deviceFeatureSelect, _driverFeatureSelect, _driverFeatures, _status, _queueSelect, _configVector) =
                (state.DeviceFeatureSelect, state.DriverFeatureSelect, state.DriverFeatures, state.Status, state.QueueSelect, state.ConfigVector);
            Volatile.Write(ref _isr, state.Isr & 3);
            state.Queues.CopyTo(_queues, 0);
            state.QueueVectors.CopyTo(_queueVectors, 0);
            lock (_irqLock)
            {
                for (int v = 0; v < VectorCount; v++)
                {
                    (_msixAddress[v], _msixData[v], _msixMasked[v], _msixPending[v]) = (state.MsixAddress[v], state.MsixData[v], state.MsixMasked[v], state.MsixPending[v]);
                    if (_msixAddress[v] != 0 || _msixData[v] != 0)
                    {
                        _msi.Route(v, _msixAddress[v], _msixData[v]);
                    }
                }
            }
        }
        if (oldMapping != newMapping)
        {
            BarChanged?.Invoke(oldMapping, newMapping);
        }
        if (Volatile.Read(ref _isr) != 0 && !MsixEnabled && (Volatile.Read(ref _config[5]) & (CommandIntxDisable >> 8)) == 0)
        {
            _intx.Set(true); // the level the guest had not yet acknowledged
        }
        return true;
    }

    private string? Check(PciTransportState s)
    {
        int queues = _queues.Length, vectors = VectorCount;
        if (s.Config is not { Length: 256 })
        {
            return $"the configuration space is {s.Config?.Length ?? 0} bytes; it has 256";
        }
        if (s.Queues is null || s.Queues.Length != queues || s.QueueVectors is null || s.QueueVectors.Length != queues)
        {
            return $"it describes {s.Queues?.Length ?? 0} queues; this device has {queues}";
        }
        if (s.MsixAddress?.Length != vectors || s.MsixData?.Length != vectors || s.MsixMasked?.Length != vectors || s.MsixPending?.Length != vectors)
        {
            return $"its MSI-X table is not {vectors} entries long";
        }
        for (int i = 0; i < queues; i++)
        {
            if (s.Queues[i].Size > _device.MaxQueueSize)
            {
                return $"queue {i}: size {s.Queues[i].Size} is larger than this device's {_device.MaxQueueSize}";
            }
            if (s.QueueVectors[i] != NoVector && s.QueueVectors[i] >= vectors)
            {
                return $"queue {i}: MSI-X vector {s.QueueVectors[i]} is past the table's {vectors}";
            }
        }
        if (s.ConfigVector != NoVector && s.ConfigVector >= vectors)
        {
            return $"the configuration vector {s.ConfigVector} is past the MSI-X table's {vectors}";
        }
        ulong bar = ((ulong)BinaryPrimitives.ReadUInt32LittleEndian(s.Config.AsSpan(0x14)) << 32)
            | (BinaryPrimitives.ReadUInt32LittleEndian(s.Config.AsSpan(0x10)) & ~(uint)(BarSize - 1));
        if (bar > ulong.MaxValue - BarSize)
        {
            return $"its BAR at 0x{bar:x} would run past the top of the address space";
        }
        return null;
    }

    private static readonly int[] WritableBytes = [0x04, 0x05, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x3c, 0x87];

    // ---- configuration space ----

    public void ReadConfig(int offset, Span<byte> data)
    {
        lock (_lock)
        {
            data.Clear();
            if (offset < _config.Length)
            {
                var src = _config.AsSpan(offset);
                src[..Math.Min(src.Length, data.Length)].CopyTo(data);
            }
        }
    }

    public void WriteConfig(int offset, ReadOnlySpan<byte> data)
    {
        ulong? oldMapping, newMapping;
        lock (_lock)
        {
            oldMapping = Mapping;
            for (int i = 0; i < data.Length; i++)
            {
                int at = offset + i;
                if (Writable(at))
                {
                    _config[at] = data[i];
                }
            }
            // BARs keep their size bits: an all-ones write reads back the size mask.
            uint low = BinaryPrimitives.ReadUInt32LittleEndian(_config.AsSpan(0x10)) & ~(uint)(BarSize - 1);
            uint high = BinaryPrimitives.ReadUInt32LittleEndian(_config.AsSpan(0x14));
            BinaryPrimitives.WriteUInt32LittleEndian(_config.AsSpan(0x10), low | 0x4);
            _bar = ((ulong)high << 32) | low;
            newMapping = Mapping;
        }
        if (oldMapping != newMapping)
        {
            BarChanged?.Invoke(oldMapping, newMapping);
        }
    }

    /// <summary>Where the BAR is decoded now, or null while memory decoding is off.</summary>
    private ulong? Mapping =>
        (BinaryPrimitives.ReadUInt16LittleEndian(_config.AsSpan(4)) & CommandMemory) != 0 ? _bar : null;

    private static bool Writable(int at) =>
        at is 0x04 or 0x05          // command
            or (>= 0x10 and < 0x18) // BAR 0 (64-bit)
            or 0x3c                 // interrupt line
            or 0x87;                // MSI-X message control, high byte: enable and function mask

    // Single bytes, read without _lock by the interrupt path.
    private bool MsixEnabled => (Volatile.Read(ref _config[0x87]) & 0x80) != 0;
    private bool MsixFunctionMasked => (Volatile.Read(ref _config[0x87]) & 0x40) != 0;

    // ---- the BAR ----

    public void Read(ulong offset, Span<byte> data)
    {
        if (offset is >= DeviceOffset and < NotifyOffset)
        {
            _device.ReadConfig(offset - DeviceOffset, data);
            return;
        }
        lock (_lock)
        {
            data.Clear();
            if (offset < IsrOffset)
            {
                Span<byte> common = stackalloc byte[0x40];
                RenderCommon(common);
                if (offset < (ulong)common.Length)
                {
                    var src = common[(int)offset..];
                    src[..Math.Min(src.Length, data.Length)].CopyTo(data);
                }
            }
            else if (offset == IsrOffset && data.Length >= 1)
            {
                // Reading the ISR acknowledges it and lowers INTx.
                data[0] = (byte)(Interlocked.Exchange(ref _isr, 0) | (_device.Failed ? 2 : 0));
                _intx.Set(false);
            }
            else if (offset is >= MsixTableOffset and < MsixPbaOffset)
            {
                lock (_irqLock)
                {
                    ReadMsixTable(offset - MsixTableOffset, data);
                }
            }
            else if (offset >= MsixPbaOffset)
            {
                ulong bits = 0;
                lock (_irqLock)
                {
                    for (int v = 0; v < _msixPending.Length; v++)
                    {
                        bits |= _msixPending[v] ? 1UL << v : 0;
                    }
                }
                Span<byte> pba = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(pba, bits);
                if (offset - MsixPbaOffset < 8)
                {
                    var src = pba[(int)(offset - MsixPbaOffset)..];
                    src[..Math.Min(src.Length, data.Length)].CopyTo(data);
                }
            }
        }
    }

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        if (offset is >= NotifyOffset and < NotifyOffset + 0x1000)
        {
            // Notify region: the queue is given by the address (notify_off = queue index).
            _device.NotifyQueue((int)((offset - NotifyOffset) / NotifyMultiplier));
            return;
        }
        if (offset is >= DeviceOffset and < NotifyOffset)
        {
            _device.WriteConfig(offset - DeviceOffset, data);
            return;
        }
        List<int>? deliver = null;
        if (offset < 0x40)
        {
            lock (_lock)
            {
                WriteCommon((int)offset, data);
            }
        }
        else if (offset is >= MsixTableOffset and < MsixPbaOffset)
        {
            lock (_irqLock)
            {
                deliver = WriteMsixTable(offset - MsixTableOffset, data);
            }
        }
        if (deliver is not null)
        {
            foreach (int v in deliver)
            {
                _msi.Signal(v);
            }
        }
    }

    private void RenderCommon(Span<byte> c)
    {
        bool valid = _queueSelect < _queues.Length;
        ref var q = ref _queues[valid ? _queueSelect : 0];
        BinaryPrimitives.WriteUInt32LittleEndian(c, _deviceFeatureSelect);
        BinaryPrimitives.WriteUInt32LittleEndian(c[0x04..], _deviceFeatureSelect < 2 ? (uint)(_device.OfferedFeatures >> (32 * (int)_deviceFeatureSelect)) : 0);
        BinaryPrimitives.WriteUInt32LittleEndian(c[0x08..], _driverFeatureSelect);
        BinaryPrimitives.WriteUInt32LittleEndian(c[0x0c..], _driverFeatureSelect < 2 ? (uint)(_driverFeatures >> (32 * (int)_driverFeatureSelect)) : 0);
        BinaryPrimitives.WriteUInt16LittleEndian(c[0x10..], _configVector);
        BinaryPrimitives.WriteUInt16LittleEndian(c[0x12..], (ushort)_queues.Length);
        c[0x14] = (byte)(_status | (_device.Failed ? VirtioConstants.StatusNeedsReset : 0));
        c[0x15] = 0; // config generation
        BinaryPrimitives.WriteUInt16LittleEndian(c[0x16..], _queueSelect);
        BinaryPrimitives.WriteUInt16LittleEndian(c[0x18..], valid ? q.Size : (ushort)0);
        BinaryPrimitives.WriteUInt16LittleEndian(c[0x1a..], valid ? _queueVectors[_queueSelect] : NoVector);
        BinaryPrimitives.WriteUInt16LittleEndian(c[0x1c..], valid && q.Ready ? (ushort)1 : (ushort)0);
        BinaryPrimitives.WriteUInt16LittleEndian(c[0x1e..], valid ? _queueSelect : (ushort)0);
        BinaryPrimitives.WriteUInt64LittleEndian(c[0x20..], valid ? q.DescTable : 0);
        BinaryPrimitives.WriteUInt64LittleEndian(c[0x28..], valid ? q.AvailRing : 0);
        BinaryPrimitives.WriteUInt64LittleEndian(c[0x30..], valid ? q.UsedRing : 0);
    }

    private void WriteCommon(int offset, ReadOnlySpan<byte> data)
    {
        // Apply the write to the rendered registers, then take back each field it touched.
        Span<byte> c = stackalloc byte[0x40];
        RenderCommon(c);
        data[..Math.Min(data.Length, 0x40 - offset)].CopyTo(c[offset..]);
        int end = offset + data.Length;
        bool Touches(int field, int size) => offset < field + size && end > field;
        if (Touches(0x00, 4)) { _deviceFeatureSelect = BinaryPrimitives.ReadUInt32LittleEndian(c); }
        if (Touches(0x08, 4)) { _driverFeatureSelect = BinaryPrimitives.ReadUInt32LittleEndian(c[0x08..]); }
        if (Touches(0x0c, 4) && (_status & VirtioConstants.StatusFeaturesOk) == 0 && _driverFeatureSelect < 2)
        {
            int shift = 32 * (int)_driverFeatureSelect;
            _driverFeatures = (_driverFeatures & ~(0xffff_ffffUL << shift)) | ((ulong)BinaryPrimitives.ReadUInt32LittleEndian(c[0x0c..]) << shift);
        }
        if (Touches(0x10, 2)) { _configVector = ValidVector(BinaryPrimitives.ReadUInt16LittleEndian(c[0x10..])); }
        if (Touches(0x14, 1)) { WriteStatus(c[0x14]); }
        if (Touches(0x16, 2)) { _queueSelect = BinaryPrimitives.ReadUInt16LittleEndian(c[0x16..]); }
        // The queue's fields are the queue this write selects, when one write spans queue_select
        // and them (the fuzzer's 8-byte write at 0x14 indexed the vectors with a select it had just
        // made out of range).
        bool configurable = (_status & VirtioConstants.StatusDriverOk) == 0;
        bool valid = _queueSelect < _queues.Length;
        ref var q = ref _queues[valid ? _queueSelect : 0];
        if (!valid || !configurable)
        {
            return;
        }
        if (Touches(0x18, 2)) { q.Size = (ushort)Math.Min(BinaryPrimitives.ReadUInt16LittleEndian(c[0x18..]), _device.MaxQueueSize); }
        if (Touches(0x1a, 2)) { _queueVectors[_queueSelect] = ValidVector(BinaryPrimitives.ReadUInt16LittleEndian(c[0x1a..])); }
        if (Touches(0x1c, 2)) { q.Ready = BinaryPrimitives.ReadUInt16LittleEndian(c[0x1c..]) == 1; }
        if (Touches(0x20, 8)) { q.DescTable = BinaryPrimitives.ReadUInt64LittleEndian(c[0x20..]); }
        if (Touches(0x28, 8)) { q.AvailRing = BinaryPrimitives.ReadUInt64LittleEndian(c[0x28..]); }
        if (Touches(0x30, 8)) { q.UsedRing = BinaryPrimitives.ReadUInt64LittleEndian(c[0x30..]); }
    }

    /// <summary>A vector the table has, or NO_VECTOR (which the driver reads back to learn it was refused).</summary>
    private ushort ValidVector(ushort v) => v < VectorCount ? v : NoVector;

    private void WriteStatus(byte v)
    {
        if (v == 0)
        {
            _status = 0;
            _driverFeatures = 0;
            Interlocked.Exchange(ref _isr, 0);
            for (int i = 0; i < _queues.Length; i++)
            {
                _queues[i] = new QueueState { Size = _device.MaxQueueSize };
                _queueVectors[i] = NoVector;
            }
            _configVector = NoVector;
            _device.Reset();
            return;
        }
        uint added = (uint)(v & ~_status);
        if ((added & VirtioConstants.StatusFeaturesOk) != 0)
        {
            bool ok = (_driverFeatures & ~_device.OfferedFeatures) == 0
                && (_driverFeatures & VirtioConstants.Bit(VirtioConstants.FeatureVersion1)) != 0;
            if (!ok)
            {
                v &= unchecked((byte)~VirtioConstants.StatusFeaturesOk);
            }
        }
        _status = v;
        if ((added & VirtioConstants.StatusDriverOk) != 0 && (v & VirtioConstants.StatusFeaturesOk) != 0)
        {
            _device.Activate(_memory, _driverFeatures, _queues, SignalQueue, SignalConfigChange);
        }
    }

    private void ReadMsixTable(ulong offset, Span<byte> data)
    {
        int v = (int)(offset / 16);
        if (v >= VectorCount)
        {
            return;
        }
        Span<byte> entry = stackalloc byte[16];
        BinaryPrimitives.WriteUInt64LittleEndian(entry, _msixAddress[v]);
        BinaryPrimitives.WriteUInt32LittleEndian(entry[8..], _msixData[v]);
        BinaryPrimitives.WriteUInt32LittleEndian(entry[12..], _msixMasked[v] ? 1u : 0u);
        var src = entry[(int)(offset % 16)..];
        src[..Math.Min(src.Length, data.Length)].CopyTo(data);
    }

    /// <summary>Returns the vectors to deliver now (unmasked with an interrupt pending).</summary>
    private List<int>? WriteMsixTable(ulong offset, ReadOnlySpan<byte> data)
    {
        int v = (int)(offset / 16);
        if (v >= VectorCount)
        {
            return null;
        }
        Span<byte> entry = stackalloc byte[16];
        ReadMsixTable((ulong)v * 16, entry);
        int at = (int)(offset % 16);
        data[..Math.Min(data.Length, 16 - at)].CopyTo(entry[at..]);
        ulong address = BinaryPrimitives.ReadUInt64LittleEndian(entry);
        uint messageData = BinaryPrimitives.ReadUInt32LittleEndian(entry[8..]);
        if (address != _msixAddress[v] || messageData != _msixData[v])
        {
            _msixAddress[v] = address;
            _msixData[v] = messageData;
            _msi.Route(v, address, messageData);
        }
        _msixMasked[v] = (BinaryPrimitives.ReadUInt32LittleEndian(entry[12..]) & 1) != 0;
        if (!_msixMasked[v] && _msixPending[v] && MsixEnabled && !MsixFunctionMasked)
        {
            _msixPending[v] = false;
            return [v];
        }
        return null;
    }

    // ---- interrupts (called by the device with its lock held; the transport lock is taken only briefly) ----

    private void SignalQueue(int queue) => Interrupt(queue < _queueVectors.Length ? _queueVectors[queue] : NoVector, 1);

    private void SignalConfigChange() => Interrupt(_configVector, 2);

    private void Interrupt(ushort vector, int isrBit)
    {
        bool msi = false;
        lock (_irqLock)
        {
            if (MsixEnabled)
            {
                if (vector == NoVector)
                {
                    return;
                }
                if (_msixMasked[vector] || MsixFunctionMasked)
                {
                    _msixPending[vector] = true;
                    return;
                }
                msi = true;
            }
            else
            {
                Interlocked.Or(ref _isr, isrBit);
                if ((Volatile.Read(ref _config[5]) & (CommandIntxDisable >> 8)) != 0)
                {
                    return;
                }
            }
        }
        if (msi)
        {
            _msi.Signal(vector);
        }
        else
        {
            _intx.Set(true);
        }
    }
}
