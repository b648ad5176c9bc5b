using System.Buffers.Binary;
using Vireo.Memory;
using Vireo.Virtio;
using Vireo.Virtio.Block;
using Vireo.Virtio.Console;
using Vireo.Virtio.Net;
using Vireo.Virtio.Queue;
using Vireo.Virtio.Rng;
using Vireo.Virtio.Vsock;

namespace Vireo.Fuzz.Targets;

/// <summary>
/// The guest's side of a virtio device, from the fuzzer's bytes. An input is four control bytes
/// and then guest memory from address 0 (64 KiB; the rest zeros):
/// <list type="bullet">
/// <item>byte 0: the queue's size, 1 &lt;&lt; (b % 8);</item>
/// <item>byte 1: bit 0 EVENT_IDX, bit 1 INDIRECT_DESC, bit 2 every queue notified (else one),
/// bit 3 a reset and a second activation before a second round, bit 4 the round twice, bit 5 the
/// device's own extra (an RX frame, console input), bit 6 the device's features left unacked;</item>
/// <item>byte 2: the queue notified;</item>
/// <item>byte 3: kept for the device (net: the frame's length / 16).</item>
/// </list>
/// Each queue's rings are where a driver of this layout puts them: queue q's descriptors at
/// 0x4000 * q, its avail ring 0x1000 later, its used ring 0x2000 later; buffers anywhere.
/// </summary>
internal static class GuestImage
{
    public const int ControlBytes = 4;
    public const ulong RamSize = 64 * 1024;

    [ThreadStatic]
    private static GuestMemory? _memory;

    public static GuestMemory Memory => _memory ??= new GuestMemory([GuestRegion.Allocate(new GuestAddress(0), RamSize)]);

    /// <summary>Guest memory holding the input's image, zeros past it.</summary>
    public static GuestMemory Load(ReadOnlySpan<byte> image)
    {
        var span = Memory.GetSpan(new GuestAddress(0), (int)RamSize);
        int n = Math.Min(image.Length, span.Length);
        image[..n].CopyTo(span);
        span[n..].Clear();
        return Memory;
    }

    public static ulong DescOf(int queue) => 0x4000UL * (ulong)(queue % 4);

    public static QueueState Queue(int queue, ushort size, bool eventIdx, bool indirect) =>
        new(size, true, DescOf(queue), DescOf(queue) + 0x1000, DescOf(queue) + 0x2000, 0, 0, eventIdx, indirect);

    /// <summary>Drives a device through one input: activation, notifications, a reset and a second activation.</summary>
    public static void Drive(VirtioDevice device, ReadOnlySpan<byte> input, Action<byte, byte>? extra = null)
    {
        if (input.Length < ControlBytes)
        {
            return;
        }
        byte sizeCode = input[0], flags = input[1], which = input[2], own = input[3];
        var memory = Load(input[ControlBytes..]);
        ushort size = (ushort)(1 << (sizeCode % 8));
        bool eventIdx = (flags & 1) != 0, indirect = (flags & 2) != 0;
        ulong features = VirtioConstants.Bit(VirtioConstants.FeatureVersion1)
            | (eventIdx ? VirtioConstants.Bit(VirtioConstants.FeatureEventIdx) : 0)
            | (indirect ? VirtioConstants.Bit(VirtioConstants.FeatureIndirectDesc) : 0)
            | ((flags & 0x40) != 0 ? 0 : device.OfferedFeatures & 0xffff_ffffUL);
        int rounds = (flags & 8) != 0 ? 2 : 1;
        device.Reset();
        for (int round = 0; round < rounds; round++)
        {
            var queues = new QueueState[device.QueueCount];
            for (int q = 0; q < queues.Length; q++)
            {
                queues[q] = Queue(q, size, eventIdx, indirect);
            }
            if (!device.Activate(memory, features & device.OfferedFeatures, queues, _ => { }, () => { }))
            {
                return;
            }
            for (int pass = 0; pass < ((flags & 0x10) != 0 ? 2 : 1); pass++)
            {
                if ((flags & 4) != 0)
                {
                    for (int q = 0; q < device.QueueCount; q++)
                    {
                        device.NotifyQueue(q);
                    }
                }
                else
                {
                    device.NotifyQueue(which % device.QueueCount);
                }
                if ((flags & 0x20) != 0)
                {
                    extra?.Invoke(own, which);
                }
            }
            if (round + 1 < rounds)
            {
                device.Reset();
            }
        }
    }

    // ---- seeds: what a driver would put in memory ----

    public sealed class Builder
    {
        public byte[] Image { get; } = new byte[0x10000];
        private readonly ushort[] _availIdx = new ushort[4];

        public Builder Desc(int queue, int index, ulong addr, uint len, ushort flags, ushort next)
        {
            var d = Image.AsSpan((int)(DescOf(queue) + (ulong)index * 16), 16);
            BinaryPrimitives.WriteUInt64LittleEndian(d, addr);
            BinaryPrimitives.WriteUInt32LittleEndian(d[8..], len);
            BinaryPrimitives.WriteUInt16LittleEndian(d[12..], flags);
            BinaryPrimitives.WriteUInt16LittleEndian(d[14..], next);
            return this;
        }

        public Builder Publish(int queue, ushort head, ushort size)
        {
            int avail = (int)(DescOf(queue) + 0x1000);
            BinaryPrimitives.WriteUInt16LittleEndian(Image.AsSpan(avail + 4 + 2 * (_availIdx[queue] % size)), head);
            _availIdx[queue]++;
            BinaryPrimitives.WriteUInt16LittleEndian(Image.AsSpan(avail + 2), _availIdx[queue]);
            return this;
        }

        public Builder Bytes(ulong addr, ReadOnlySpan<byte> bytes)
        {
            bytes.CopyTo(Image.AsSpan((int)addr));
            return this;
        }

        /// <summary>The input: control bytes, then the image up to its last non-zero byte.</summary>
        public byte[] Input(byte sizeCode, byte flags, byte queue = 0, byte own = 0)
        {
            int end = Array.FindLastIndex(Image, b => b != 0) + 1;
            return [sizeCode, flags, queue, own, .. Image.AsSpan(0, end)];
        }
    }

    public const ushort Next = 1, Write = 2, Indirect = 4;
}

/// <summary>The split virtqueue alone: chains popped and returned until the ring is empty or refused.</summary>
internal sealed class QueueTarget : FuzzTarget
{
    public override string Name => "virtqueue";
    public override string Covers => "split virtqueue: descriptor chains, indirect tables, event index, used ring";

    public override void Run(ReadOnlySpan<byte> input)
    {
        if (input.Length < GuestImage.ControlBytes)
        {
            return;
        }
        var memory = GuestImage.Load(input[GuestImage.ControlBytes..]);
        ushort size = (ushort)(1 << (input[0] % 16));
        var state = GuestImage.Queue(0, size, (input[1] & 1) != 0, (input[1] & 2) != 0) with
        {
            NextAvail = (input[1] & 4) != 0 ? input[2] : (ushort)0,
            NextUsed = (input[1] & 8) != 0 ? input[3] : (ushort)0,
        };
        if (!SplitQueue.TryCreate(memory, state, out var queue, out _))
        {
            return;
        }
        for (int n = 0; n < size + 2; n++)
        {
            if (!queue!.TryPop(out var chain, out _))
            {
                break;
            }
            uint written = 0;
            foreach (var b in chain.Buffers)
            {
                // Every buffer a chain hands out lies inside guest memory.
                if (!memory.IsValidRange(new GuestAddress(b.Address), b.Length))
                {
                    throw new InvalidOperationException($"a chain's buffer {b} lies outside guest memory");
                }
                written += b.DeviceWritable ? b.Length : 0;
            }
            queue.AddUsed(chain.Head, written);
        }
    }

    public override IEnumerable<(string, byte[])> Seeds()
    {
        var b = new GuestImage.Builder()
            .Desc(0, 0, 0x8000, 16, GuestImage.Next, 1).Desc(0, 1, 0x9000, 512, GuestImage.Next | GuestImage.Write, 2).Desc(0, 2, 0xa000, 1, GuestImage.Write, 0)
            .Publish(0, 0, 8);
        yield return ("chain-of-three", b.Input(3, 0));
        var i = new GuestImage.Builder()
            .Desc(0, 0, 0xc000, 48, GuestImage.Indirect, 0)
            .Desc(3, 0, 0x8000, 16, GuestImage.Next, 1).Desc(3, 1, 0x9000, 512, GuestImage.Next | GuestImage.Write, 2).Desc(3, 2, 0xa000, 1, GuestImage.Write, 0)
            .Publish(0, 0, 8);
        yield return ("indirect", i.Input(3, 3));
    }
}

/// <summary>The block device's request parser over a 64 KiB disk in /dev/shm.</summary>
internal sealed class BlockTarget : FuzzTarget
{
    private VirtioBlock? _blk;

    public override string Name => "virtio-blk";
    public override string Covers => "virtio-blk requests: in, out, flush, get id, discard, write zeroes; segments; sector bounds";

    private VirtioBlock Device()
    {
        if (_blk is null)
        {
            string path = Path.Combine(Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath(), $"vireo-fuzz-blk-{Environment.ProcessId}");
            File.WriteAllBytes(path, new byte[64 * 1024]);
            _blk = new VirtioBlock(new BlockConfig(path, Id: "fuzz"));
            File.Delete(path); // the device holds it open
        }
        return _blk;
    }

    public override void Run(ReadOnlySpan<byte> input) => GuestImage.Drive(Device(), input);

    public override IEnumerable<(string, byte[])> Seeds()
    {
        foreach (var (name, type, sector) in new[] { ("read", 0u, 3UL), ("write", 1u, 5UL), ("flush", 4u, 0UL), ("get-id", 8u, 0UL), ("discard", 11u, 0UL), ("write-zeroes", 13u, 0UL) })
        {
            var header = new byte[16];
            BinaryPrimitives.WriteUInt32LittleEndian(header, type);
            BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(8), sector);
            var segment = new byte[16];
            BinaryPrimitives.WriteUInt64LittleEndian(segment, 2);
            BinaryPrimitives.WriteUInt32LittleEndian(segment.AsSpan(8), 4);
            bool dataIn = type is 0 or 8;
            var b = new GuestImage.Builder().Bytes(0x8000, header).Bytes(0x9000, type is 11 or 13 ? segment : "some data"u8)
                .Desc(0, 0, 0x8000, 16, GuestImage.Next, 1)
                .Desc(0, 1, 0x9000, type is 11 or 13 ? 16u : 512u, (ushort)(GuestImage.Next | (dataIn ? GuestImage.Write : 0)), 2)
                .Desc(0, 2, 0xa000, 1, GuestImage.Write, 0)
                .Publish(0, 0, 8);
            yield return (name, b.Input(3, 0));
        }
    }
}

/// <summary>A backend with no wire: what the guest sends is dropped, and one frame from the input waits to be received.</summary>
internal sealed class LoopBackend : INetBackend
{
    private byte[] _waiting = [];
    private readonly Vireo.Interop.EventFd _ready = new();

    public int Fd => _ready.Fd;
    public bool HasVnetHeader => true;
    public ulong OffloadFeatures => ~0UL;
    public void SetOffloads(ulong ackedFeatures) { }
    public void Offer(byte[] frame) => _waiting = frame;

    public int Receive(Span<byte> packet)
    {
        int n = Math.Min(_waiting.Length, packet.Length);
        _waiting.AsSpan(0, n).CopyTo(packet);
        _waiting = [];
        return n;
    }

    public bool Send(ReadOnlySpan<byte> packet) => true;
    public void Dispose() => _ready.Dispose();
}

/// <summary>virtio-net: TX chains parsed into frames, RX chains filled from a frame, with and without mergeable buffers.</summary>
internal sealed class NetTarget : FuzzTarget
{
    private readonly LoopBackend _backend = new();
    private VirtioNet? _net;

    public override string Name => "virtio-net";
    public override string Covers => "virtio-net: TX frames and their headers, RX buffers, mergeable buffers, offloads";

    public override void Run(ReadOnlySpan<byte> input)
    {
        _net ??= new VirtioNet(new NetConfig(null, "/nonexistent", null, [2, 0, 0, 0, 0, 1]), _backend);
        byte[] frame = input.Length > 4 ? input[4..Math.Min(input.Length, 4 + 16 * input[3])].ToArray() : [];
        GuestImage.Drive(_net, input, (_, _) =>
        {
            _backend.Offer(frame);
            _net.OnBackendReady();
        });
    }

    public override IEnumerable<(string, byte[])> Seeds()
    {
        var tx = new byte[12 + 60];
        tx[12] = 0xff;
        var b = new GuestImage.Builder().Bytes(0x8000, tx)
            .Desc(1, 0, 0x8000, (uint)tx.Length, 0, 0).Publish(1, 0, 8)
            .Desc(0, 0, 0x9000, 1526, GuestImage.Write, 0).Publish(0, 0, 8);
        yield return ("tx", b.Input(3, 0, 1));
        yield return ("rx", b.Input(3, 0x20, 0, 8));
        yield return ("both", b.Input(3, 0x24, 0, 8));
    }
}

internal sealed class ConsoleTarget : FuzzTarget
{
    private readonly VirtioConsole _console = new(_ => { });

    public override string Name => "virtio-console";
    public override string Covers => "virtio-console: output chains, input queued to receive buffers";

    public override void Run(ReadOnlySpan<byte> input)
    {
        var text = input.Length > 4 ? input[4..Math.Min(input.Length, 4 + input[3])].ToArray() : [];
        GuestImage.Drive(_console, input, (_, _) => _console.Enqueue(text));
    }

    public override IEnumerable<(string, byte[])> Seeds()
    {
        var b = new GuestImage.Builder().Bytes(0x8000, "hello\n"u8)
            .Desc(1, 0, 0x8000, 6, 0, 0).Publish(1, 0, 8)
            .Desc(0, 0, 0x9000, 64, GuestImage.Write, 0).Publish(0, 0, 8);
        yield return ("output", b.Input(3, 0, 1));
        yield return ("input", b.Input(3, 0x20, 0, 12));
    }
}

internal sealed class RngTarget : FuzzTarget
{
    private readonly VirtioRng _rng = new();

    public override string Name => "virtio-rng";
    public override string Covers => "virtio-rng: entropy requests into writable buffers";

    public override void Run(ReadOnlySpan<byte> input) => GuestImage.Drive(_rng, input);

    public override IEnumerable<(string, byte[])> Seeds()
    {
        var b = new GuestImage.Builder().Desc(0, 0, 0x8000, 64, GuestImage.Next | GuestImage.Write, 1).Desc(0, 1, 0x9000, 64, GuestImage.Write, 0).Publish(0, 0, 8);
        yield return ("two-buffers", b.Input(3, 0));
    }
}

/// <summary>virtio-vsock: packets from the guest (requests to host ports with no listener, data, credit, shutdown, reset).</summary>
internal sealed class VsockTarget : FuzzTarget
{
    private VirtioVsock? _vsock;

    public override string Name => "virtio-vsock";
    public override string Covers => "virtio-vsock: packet headers, connection state, credit, the host's connect line";

    public override void Run(ReadOnlySpan<byte> input)
    {
        _vsock ??= new VirtioVsock(new VsockConfig(3, Path.Combine(Path.GetTempPath(), $"vireo-fuzz-vsock-{Environment.ProcessId}.sock")));
        GuestImage.Drive(_vsock, input);
    }

    public override IEnumerable<(string, byte[])> Seeds()
    {
        foreach (var (name, op) in new[] { ("request", (ushort)1), ("rw", (ushort)5), ("credit-request", (ushort)7), ("shutdown", (ushort)4), ("rst", (ushort)3) })
        {
            var header = new byte[44];
            BinaryPrimitives.WriteUInt64LittleEndian(header, 3);             // src_cid
            BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(8), 2);   // dst_cid: the host
            BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(16), 1234);
            BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(20), 5000);
            BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(24), op == 5 ? 4u : 0);
            BinaryPrimitives.WriteUInt16LittleEndian(header.AsSpan(28), 1);  // stream
            BinaryPrimitives.WriteUInt16LittleEndian(header.AsSpan(30), op);
            BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(36), 65536);
            var b = new GuestImage.Builder().Bytes(0x8000, header).Bytes(0x8100, "ping"u8)
                .Desc(1, 0, 0x8000, 44, op == 5 ? GuestImage.Next : (ushort)0, 1).Desc(1, 1, 0x8100, 4, 0, 0).Publish(1, 0, 8)
                .Desc(0, 0, 0x9000, 4096, GuestImage.Write, 0).Publish(0, 0, 8);
            yield return (name, b.Input(3, 4, 1));
        }
    }
}
