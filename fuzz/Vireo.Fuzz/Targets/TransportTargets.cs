using System.Buffers.Binary;
using Vireo.Devices;
using Vireo.Devices.Pci;
using Vireo.Virtio;
using Vireo.Virtio.Console;
using Vireo.Virtio.Rng;
using Vireo.Virtio.Transport;

namespace Vireo.Fuzz.Targets;

/// <summary>
/// A guest driving a transport register by register. An input is a count N, then N operations of
/// 8 bytes (kind, width, offset 2 bytes, value 4 bytes), then guest memory from address 0. A
/// driver's sequence (status, features, queue setup, DRIVER_OK, a notify) is a seed; the fuzzer
/// reorders it, repeats it, and writes configuration mid-request.
/// </summary>
internal static class RegisterOps
{
    public readonly record struct Op(byte Kind, int Width, ushort Offset, uint Value);

    /// <summary>The operations; <paramref name="memory"/> is what follows them, guest memory's image.</summary>
    public static Op[] Split(ReadOnlySpan<byte> input, out ReadOnlySpan<byte> memory)
    {
        memory = default;
        if (input.Length == 0)
        {
            return [];
        }
        int count = Math.Min(input[0], (input.Length - 1) / 8);
        var ops = new Op[count];
        for (int i = 0; i < count; i++)
        {
            var o = input.Slice(1 + 8 * i, 8);
            ops[i] = new Op(o[0], (o[1] % 4) switch { 0 => 1, 1 => 2, 2 => 4, _ => 8 }, BinaryPrimitives.ReadUInt16LittleEndian(o[2..]), BinaryPrimitives.ReadUInt32LittleEndian(o[4..]));
        }
        memory = input[(1 + 8 * count)..];
        return ops;
    }

    public static void Apply(IBusDevice bus, Op op, ulong window)
    {
        Span<byte> data = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(data, op.Value);
        ulong offset = op.Offset % window;
        if ((op.Kind & 1) == 0)
        {
            bus.Write(offset, data[..op.Width]);
        }
        else
        {
            bus.Read(offset, data[..op.Width]);
        }
    }

    public static byte[] Encode(IEnumerable<(byte Kind, int Width, ushort Offset, uint Value)> ops, ReadOnlySpan<byte> memory)
    {
        var list = ops.ToList();
        var bytes = new List<byte> { (byte)list.Count };
        foreach (var (kind, width, offset, value) in list)
        {
            var o = new byte[8];
            o[0] = kind;
            o[1] = (byte)(width switch { 1 => 0, 2 => 1, 4 => 2, _ => 3 });
            BinaryPrimitives.WriteUInt16LittleEndian(o.AsSpan(2), offset);
            BinaryPrimitives.WriteUInt32LittleEndian(o.AsSpan(4), value);
            bytes.AddRange(o);
        }
        bytes.AddRange(memory.ToArray());
        return [.. bytes];
    }

    /// <summary>A chain of one writable 64-byte buffer on queue 0, as both transports' seeds lay it out.</summary>
    public static byte[] OneRequest() => new GuestImage.Builder().Desc(0, 0, 0x8000, 64, GuestImage.Write, 0).Publish(0, 0, 8).Image.AsSpan(0, 0x1010).ToArray();
}

internal sealed class Interrupts : IMsiTarget, ILevelInterrupt, IInterruptLine
{
    public void Route(int vector, ulong address, uint data) { }
    public void Signal(int vector) { }
    public void Set(bool asserted) { }
    public void Trigger() { }
}

/// <summary>
/// PCI: configuration space through the 0xcf8/0xcfc ports and ECAM, and the virtio-pci BAR
/// (common configuration, ISR, device configuration, notifications, the MSI-X table and PBA), with
/// virtio-rng and virtio-console behind it. Kinds: 0/1 BAR write/read, 2/3 ECAM, 4/5 the ports.
/// </summary>
internal sealed class PciTarget : FuzzTarget
{
    public override string Name => "pci";
    public override string Covers => "PCI configuration space (ports and ECAM), BAR sizing, virtio-pci common/ISR/device/notify registers, MSI-X";

    public override void Run(ReadOnlySpan<byte> input)
    {
        var ops = RegisterOps.Split(input, out var image);
        var memory = GuestImage.Load(image);
        var irq = new Interrupts();
        var root = new PciRoot();
        var transports = new[]
        {
            new PciTransport(new VirtioRng(), memory, irq, irq, 0xc000_0000, 5),
            new PciTransport(new VirtioConsole(_ => { }), memory, irq, irq, 0xc001_0000, 6),
        };
        foreach (var t in transports)
        {
            root.Add(t);
        }
        var ports = root.PortDevice;
        var ecam = root.EcamDevice;
        Span<byte> data = stackalloc byte[8];
        foreach (var op in ops)
        {
            switch (op.Kind % 6)
            {
                case 0 or 1:
                    RegisterOps.Apply(transports[(op.Kind >> 3) & 1], op, PciTransport.BarSize);
                    break;
                case 2 or 3:
                    // bus 0, device 0..3 (the host bridge, both transports, an empty slot), function from the kind's high bits
                    ulong at = ((ulong)((op.Kind >> 3) & 3) << 15) | ((ulong)((op.Kind >> 5) & 1) << 12) | (op.Offset & 0xfffUL);
                    BinaryPrimitives.WriteUInt64LittleEndian(data, op.Value);
                    if (op.Kind % 6 == 2)
                    {
                        ecam.Write(at, data[..op.Width]);
                    }
                    else
                    {
                        ecam.Read(at, data[..op.Width]);
                    }
                    break;
                default:
                    RegisterOps.Apply(ports, op with { Kind = (byte)(op.Kind % 6 - 4) }, 8);
                    break;
            }
        }
        foreach (var t in transports)
        {
            t.Device.Reset();
        }
    }

    public override IEnumerable<(string, byte[])> Seeds()
    {
        // The common configuration's offsets (virtio 1.2, 4.1.4.3).
        const ushort Status = 0x14, DriverFeatureSelect = 0x08, DriverFeature = 0x0c, QueueSelect = 0x16, QueueSize = 0x18,
            QueueEnable = 0x1c, QueueDesc = 0x20, QueueDriver = 0x28, QueueDevice = 0x30;
        var driver = new List<(byte, int, ushort, uint)>
        {
            (5, 4, 0, 0x8000_0800),     // CONFIG_ADDRESS: bus 0, device 1, offset 0 (kind 4 writes the ports)
            (4, 4, 0, 0x8000_0810),     // ... BAR 0
            (4, 4, 4, 0xffff_ffff),     // CONFIG_DATA: size the BAR
            (5, 4, 4, 0),
            (2, 2, 0x804, 0x0006),      // ECAM device 1: command = memory + bus master
            (0, 1, Status, 1), (0, 1, Status, 3),
            (0, 4, DriverFeatureSelect, 1), (0, 4, DriverFeature, 1),
            (0, 1, Status, 11),
            (0, 2, QueueSelect, 0), (0, 2, QueueSize, 8),
            (0, 4, QueueDesc, 0), (0, 4, QueueDriver, 0x1000), (0, 4, QueueDevice, 0x2000),
            (0, 2, QueueEnable, 1),
            (0, 1, Status, 15),
            (0, 2, (ushort)PciTransport.NotifyOffset, 0),
            (1, 1, (ushort)PciTransport.IsrOffset, 0),
        };
        yield return ("driver-bring-up", RegisterOps.Encode(driver, RegisterOps.OneRequest()));
        yield return ("msix", RegisterOps.Encode(
            [(0, 4, (ushort)PciTransport.MsixTableOffset, 0xfee0_0000), (0, 4, (ushort)(PciTransport.MsixTableOffset + 8), 0x41), (0, 4, (ushort)(PciTransport.MsixTableOffset + 12), 0),
             (0, 2, 0x10, 0), (0, 2, 0x1a, 0), (1, 8, (ushort)PciTransport.MsixPbaOffset, 0)], []));
    }
}

/// <summary>virtio-mmio (version 2) registers with virtio-rng behind them: kinds 0 write, 1 read.</summary>
internal sealed class MmioTarget : FuzzTarget
{
    public override string Name => "mmio";
    public override string Covers => "virtio-mmio registers: status, features, queue setup, notify, interrupt ack, config";

    public override void Run(ReadOnlySpan<byte> input)
    {
        var ops = RegisterOps.Split(input, out var image);
        var memory = GuestImage.Load(image);
        var device = new VirtioRng();
        var mmio = new MmioTransport(device, memory, new Interrupts());
        foreach (var op in ops)
        {
            RegisterOps.Apply(mmio, op with { Width = op.Kind >= 0x80 ? op.Width : 4 }, MmioTransport.WindowSize); // registers are 32-bit; sometimes not
        }
        device.Reset();
    }

    public override IEnumerable<(string, byte[])> Seeds()
    {
        // virtio-mmio's registers (virtio 1.2, 4.2.2).
        const ushort Status = 0x70, DriverFeatures = 0x20, DriverFeaturesSel = 0x24, QueueSel = 0x30, QueueNum = 0x38, QueueReady = 0x44,
            DescLow = 0x80, DriverLow = 0x90, DeviceLow = 0xa0, InterruptAck = 0x64;
        var driver = new List<(byte, int, ushort, uint)>
        {
            (1, 4, 0, 0), (1, 4, 4, 0), (1, 4, 8, 0),
            (0, 4, Status, 1), (0, 4, Status, 3),
            (0, 4, DriverFeaturesSel, 1), (0, 4, DriverFeatures, 1),
            (0, 4, Status, 11),
            (0, 4, QueueSel, 0), (0, 4, QueueNum, 8),
            (0, 4, DescLow, 0), (0, 4, DriverLow, 0x1000), (0, 4, DeviceLow, 0x2000),
            (0, 4, QueueReady, 1),
            (0, 4, Status, 15),
            (0, 4, (ushort)MmioTransport.QueueNotifyOffset, 0),
            (1, 4, 0x60, 0), (0, 4, InterruptAck, 1),
        };
        yield return ("driver-bring-up", RegisterOps.Encode(driver, RegisterOps.OneRequest()));
    }
}
