using System.Buffers.Binary;

namespace Vireo.Devices.Pci;

/// <summary>
/// PCI bus 0: a host bridge at 00:00.0 and up to 31 functions, reachable through configuration
/// mechanism #1 (ports 0xCF8 address, 0xCFC data; <see cref="PortDevice"/>) and through
/// MMCONFIG/ECAM (<see cref="EcamDevice"/>, 4 KiB a function). Absent functions read all ones.
/// </summary>
public sealed class PciRoot
{
    public const ushort ConfigAddressPort = 0xcf8;
    public const int MaxDevices = 32;
    public const ulong EcamSize = 1UL << 20; // bus 0 only: 32 devices x 8 functions x 4 KiB

    private readonly IPciFunction?[] _devices = new IPciFunction?[MaxDevices];
    private readonly Lock _lock = new();
    private uint _address;

    public PciRoot() => _devices[0] = new HostBridge();

    public IBusDevice PortDevice => new Ports(this);
    public IBusDevice EcamDevice => new Ecam(this);

    public PciRootState SaveState()
    {
        lock (_lock)
        {
            return new PciRootState(_address);
        }
    }

    public void Restore(PciRootState state)
    {
        lock (_lock)
        {
            _address = state.Address;
        }
    }

    /// <summary>Places a function at the next free slot and returns the slot number.</summary>
    public int Add(IPciFunction function)
    {
        for (int slot = 1; slot < MaxDevices; slot++)
        {
            if (_devices[slot] is null)
            {
                _devices[slot] = function;
                return slot;
            }
        }
        throw new InvalidOperationException("PCI bus 0 is full (31 devices)");
    }

    private void Access(int device, int function, int offset, Span<byte> read, ReadOnlySpan<byte> write, bool isWrite)
    {
        var target = function == 0 && (uint)device < MaxDevices ? _devices[device] : null;
        if (target is null || offset + Math.Max(read.Length, write.Length) > 4096)
        {
            read.Fill(0xff);
            return;
        }
        if (isWrite)
        {
            target.WriteConfig(offset, write);
        }
        else
        {
            target.ReadConfig(offset, read);
        }
    }

    private sealed class Ports(PciRoot root) : IBusDevice
    {
        // Offsets 0..3: CONFIG_ADDRESS; 4..7: CONFIG_DATA.
        public void Read(ulong offset, Span<byte> data)
        {
            if (offset < 4)
            {
                Span<byte> a = stackalloc byte[4];
                lock (root._lock)
                {
                    BinaryPrimitives.WriteUInt32LittleEndian(a, root._address);
                }
                Copy(a[(int)offset..], data);
                return;
            }
            uint address;
            lock (root._lock)
            {
                address = root._address;
            }
            if ((address & 0x8000_0000) == 0 || ((address >> 16) & 0xff) != 0)
            {
                data.Fill(0xff);
                return;
            }
            root.Access((int)((address >> 11) & 0x1f), (int)((address >> 8) & 7), (int)(address & 0xfc) + (int)(offset - 4), data, default, false);
        }

        public void Write(ulong offset, ReadOnlySpan<byte> data)
        {
            if (offset == 0 && data.Length == 4)
            {
                lock (root._lock)
                {
                    root._address = BinaryPrimitives.ReadUInt32LittleEndian(data);
                }
                return;
            }
            if (offset < 4)
            {
                return;
            }
            uint address;
            lock (root._lock)
            {
                address = root._address;
            }
            if ((address & 0x8000_0000) != 0 && ((address >> 16) & 0xff) == 0)
            {
                root.Access((int)((address >> 11) & 0x1f), (int)((address >> 8) & 7), (int)(address & 0xfc) + (int)(offset - 4), default, data, true);
            }
        }

        private static void Copy(ReadOnlySpan<byte> src, Span<byte> dest)
        {
            dest.Fill(0xff);
            src[..Math.Min(src.Length, dest.Length)].CopyTo(dest);
        }
    }

    private sealed class Ecam(PciRoot root) : IBusDevice
    {
        public void Read(ulong offset, Span<byte> data) =>
            root.Access((int)((offset >> 15) & 0x1f), (int)((offset >> 12) & 7), (int)(offset & 0xfff), data, default, false);

        public void Write(ulong offset, ReadOnlySpan<byte> data) =>
            root.Access((int)((offset >> 15) & 0x1f), (int)((offset >> 12) & 7), (int)(offset & 0xfff), default, data, true);
    }

    /// <summary>00:00.0, a host bridge with nothing to configure.</summary>
    private sealed class HostBridge : IPciFunction
    {
        private readonly byte[] _config = new byte[256];

        public HostBridge()
        {
            BinaryPrimitives.WriteUInt16LittleEndian(_config, 0x1b36);     // Red Hat, Inc. (QEMU's PCI IDs)
            BinaryPrimitives.WriteUInt16LittleEndian(_config.AsSpan(2), 0x0008); // PCIe host bridge
            _config[0x0b] = 0x06; // class: bridge
            _config[0x0a] = 0x00; // subclass: host bridge
        }

        public void ReadConfig(int offset, Span<byte> data)
        {
            data.Fill(0);
            if (offset < _config.Length)
            {
                var src = _config.AsSpan(offset);
                src[..Math.Min(src.Length, data.Length)].CopyTo(data);
            }
        }

        public void WriteConfig(int offset, ReadOnlySpan<byte> data)
        {
        }
    }
}
