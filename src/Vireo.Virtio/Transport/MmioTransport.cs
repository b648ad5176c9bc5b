using System.Buffers.Binary;
using Vireo.Devices;
using Vireo.Memory;
using Vireo.Virtio.Queue;

namespace Vireo.Virtio.Transport;

/// <summary>
/// The virtio-mmio transport, version 2 (virtio 1.2 §4.2): a register window on the MMIO bus.
/// Guests find it from `virtio_mmio.device=4K@BASE:IRQ` on their command line. Queue
/// notifications normally arrive by ioeventfd (registered by the VMM at <see cref="QueueNotifyOffset"/>);
/// a write that reaches the bus is served the same way.
/// </summary>
public sealed class MmioTransport : IBusDevice
{
    public const ulong WindowSize = 0x1000;
    public const ulong QueueNotifyOffset = 0x50;
    private const uint Magic = 0x74726976; // "virt"
    private const uint VendorId = 0x4f524956; // "VIRO"
    private const uint InterruptUsedBuffer = 1, InterruptConfigChange = 2;

    private readonly Lock _lock = new();
    private readonly VirtioDevice _device;
    private readonly GuestMemory _memory;
    private readonly IInterruptLine _irq;
    private readonly QueueState[] _queues;
    private uint _status, _deviceFeaturesSel, _driverFeaturesSel, _queueSel, _interruptStatus;
    private ulong _driverFeatures;

    public VirtioDevice Device => _device;

    public MmioTransport(VirtioDevice device, GuestMemory memory, IInterruptLine irq)
    {
        _device = device;
        _memory = memory;
        _irq = irq;
        _queues = new QueueState[device.QueueCount];
    }

    public MmioTransportState SaveState()
    {
        lock (_lock)
        {
            return new MmioTransportState(_status, _deviceFeaturesSel, _driverFeaturesSel, _queueSel, Volatile.Read(ref _interruptStatus), _driverFeatures, [.. _queues]);
        }
    }

    /// <summary>
    /// Takes saved registers (untrusted: the queue count and sizes are checked), then the device's
    /// own state if the driver had it running, and raises the interrupt if one was pending. False,
    /// with the reason, when the state does not fit; nothing is changed then.
    /// </summary>
    public bool TryRestore(MmioTransportState state, VirtioDeviceState device, out string? error)
    {
        error = null;
        if (state.Queues is null || state.Queues.Length != _queues.Length)
        {
            error = $"it describes {state.Queues?.Length ?? 0} queues; this device has {_queues.Length}";
            return false;
        }
        for (int i = 0; i < _queues.Length; i++)
        {
            if (state.Queues[i].Size > _device.MaxQueueSize)
            {
                error = $"queue {i}: size {state.Queues[i].Size} is larger than this device's {_device.MaxQueueSize}";
                return false;
            }
        }
        if (((state.Status & VirtioConstants.StatusDriverOk) != 0) != device.Activated)
        {
            error = device.Activated ? "the device runs but the transport's status has no DRIVER_OK" : "the transport's status has DRIVER_OK but the device is stopped";
            return false;
        }
        lock (_lock)
        {
            if (!_device.TryRestore(_memory, device, SignalUsed, SignalNeedsReset, out error))
            {
                return false;
            }
            (_status, _deviceFeaturesSel, _driverFeaturesSel, _queueSel, _driverFeatures) =
                (state.Status, state.DeviceFeaturesSel, state.DriverFeaturesSel, state.QueueSel, state.DriverFeatures);
            Volatile.Write(ref _interruptStatus, state.InterruptStatus & (InterruptUsedBuffer | InterruptConfigChange));
            state.Queues.CopyTo(_queues, 0);
        }
        if (Volatile.Read(ref _interruptStatus) != 0)
        {
            _irq.Trigger();
        }
        return true;
    }

    public void Read(ulong offset, Span<byte> data)
    {
        if (offset >= 0x100)
        {
            _device.ReadConfig(offset - 0x100, data);
            return;
        }
        if (data.Length != 4)
        {
            data.Fill(0);
            return;
        }
        uint value;
        lock (_lock)
        {
            value = ReadRegister(offset);
        }
        BinaryPrimitives.WriteUInt32LittleEndian(data, value);
    }

    private uint ReadRegister(ulong offset)
    {
        ref QueueState q = ref SelectedQueue(out bool valid);
        return offset switch
        {
            0x000 => Magic,
            0x004 => 2,
            0x008 => _device.DeviceType,
            0x00c => VendorId,
            0x010 => _deviceFeaturesSel switch
            {
                0 => (uint)_device.OfferedFeatures,
                1 => (uint)(_device.OfferedFeatures >> 32),
                _ => 0,
            },
            0x034 => valid ? _device.MaxQueueSize : 0u,
            0x044 => valid && q.Ready ? 1u : 0u,
            0x060 => Volatile.Read(ref _interruptStatus),
            0x070 => _status | (_device.Failed ? VirtioConstants.StatusNeedsReset : 0),
            0x0fc => 0, // config generation: the config never changes under the driver
            _ => 0,
        };
    }

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        if (offset >= 0x100)
        {
            _device.WriteConfig(offset - 0x100, data);
            return;
        }
        if (data.Length != 4)
        {
            return;
        }
        uint v = BinaryPrimitives.ReadUInt32LittleEndian(data);
        if (offset == QueueNotifyOffset)
        {
            _device.NotifyQueue((int)v); // outside the register lock: device work takes its own
            return;
        }
        lock (_lock)
        {
            WriteRegister(offset, v);
        }
    }

    private void WriteRegister(ulong offset, uint v)
    {
        bool configurable = (_status & VirtioConstants.StatusDriverOk) == 0;
        ref QueueState q = ref SelectedQueue(out bool valid);
        switch (offset)
        {
            case 0x014:
                _deviceFeaturesSel = v;
                break;
            case 0x020 when (_status & VirtioConstants.StatusFeaturesOk) == 0:
                if (_driverFeaturesSel < 2)
                {
                    int shift = (int)_driverFeaturesSel * 32;
                    _driverFeatures = (_driverFeatures & ~(0xffff_ffffUL << shift)) | ((ulong)v << shift);
                }
                break;
            case 0x024:
                _driverFeaturesSel = v;
                break;
            case 0x030:
                _queueSel = v;
                break;
            case 0x038 when valid && configurable:
                q.Size = (ushort)Math.Min(v, _device.MaxQueueSize);
                break;
            case 0x044 when valid && configurable:
                q.Ready = v == 1;
                break;
            case 0x064:
                Interlocked.And(ref _interruptStatus, ~v);
                break;
            case 0x070:
                WriteStatus(v);
                break;
            case 0x080 when valid && configurable: q.DescTable = SetLow(q.DescTable, v); break;
            case 0x084 when valid && configurable: q.DescTable = SetHigh(q.DescTable, v); break;
            case 0x090 when valid && configurable: q.AvailRing = SetLow(q.AvailRing, v); break;
            case 0x094 when valid && configurable: q.AvailRing = SetHigh(q.AvailRing, v); break;
            case 0x0a0 when valid && configurable: q.UsedRing = SetLow(q.UsedRing, v); break;
            case 0x0a4 when valid && configurable: q.UsedRing = SetHigh(q.UsedRing, v); break;
        }
    }

    private void WriteStatus(uint v)
    {
        if (v == 0)
        {
            _status = 0;
            _driverFeatures = 0;
            Volatile.Write(ref _interruptStatus, 0);
            Array.Clear(_queues);
            _device.Reset();
            return;
        }
        uint added = v & ~_status;
        if ((added & VirtioConstants.StatusFeaturesOk) != 0)
        {
            // Accept only a subset of what was offered, with VERSION_1: otherwise FEATURES_OK stays clear.
            bool ok = (_driverFeatures & ~_device.OfferedFeatures) == 0
                && (_driverFeatures & VirtioConstants.Bit(VirtioConstants.FeatureVersion1)) != 0;
            if (!ok)
            {
                v &= ~VirtioConstants.StatusFeaturesOk;
            }
        }
        if ((added & VirtioConstants.StatusDriverOk) != 0 && (v & VirtioConstants.StatusFeaturesOk) != 0)
        {
            _status = v;
            _device.Activate(_memory, _driverFeatures, _queues, SignalUsed, SignalNeedsReset);
            return;
        }
        _status = v;
    }

    // Called by the device with its lock held: interrupt status is lock-free so that the lock
    // order stays transport -> device (Activate and Reset run under the transport lock).
    private void SignalUsed(int queue)
    {
        Interlocked.Or(ref _interruptStatus, InterruptUsedBuffer);
        _irq.Trigger();
    }

    private void SignalNeedsReset()
    {
        Interlocked.Or(ref _interruptStatus, InterruptConfigChange);
        _irq.Trigger();
    }

    private ref QueueState SelectedQueue(out bool valid)
    {
        valid = _queueSel < (uint)_queues.Length;
        return ref _queues[valid ? (int)_queueSel : 0];
    }

    private static ulong SetLow(ulong old, uint v) => (old & 0xffff_ffff_0000_0000UL) | v;
    private static ulong SetHigh(ulong old, uint v) => (old & 0xffff_ffffUL) | ((ulong)v << 32);
}
