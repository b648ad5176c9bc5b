using System.Buffers.Binary;
using Vireo.Memory;
using Vireo.Virtio.Block;
using Vireo.Virtio.Console;
using Vireo.Virtio.Queue;
using Vireo.Virtio.Rng;
using static Vireo.Virtio.Tests.DriverRing;

namespace Vireo.Virtio.Tests;

/// <summary>
/// Random requests into each device's parser. No exception escapes; a refused request puts the
/// device in NEEDS_RESET, and a reset brings it back to serving valid requests.
/// </summary>
public class DeviceFuzzTests
{
    private const ulong HeaderAddr = 0x60000, DataAddr = 0x61000, StatusAddr = 0x70000;

    private static readonly ulong Features = VirtioConstants.Bit(VirtioConstants.FeatureVersion1) | VirtioConstants.Bit(VirtioConstants.FeatureIndirectDesc);

    private static void Activate(VirtioDevice device, GuestMemory memory, DriverRing ring, int queues = 1)
    {
        var states = new QueueState[queues];
        states[0] = ring.State(indirect: true);
        Assert.True(device.Activate(memory, Features, states, _ => { }, () => { }));
    }

    /// <summary>A valid 512-byte read of sector 0 through a fresh ring: proves the device serves again.</summary>
    private static void AssertServesAReadAfterReset(VirtioBlock blk, GuestMemory memory)
    {
        blk.Reset();
        var ring = new DriverRing(memory, 8);
        Activate(blk, memory, ring);
        memory.GetSpan(new GuestAddress(HeaderAddr), 16).Clear();
        ring.SetDesc(0, HeaderAddr, 16, NEXT, 1);
        ring.SetDesc(1, DataAddr, 512, NEXT | WRITE, 2);
        ring.SetDesc(2, StatusAddr, 1, WRITE, 0);
        memory.WriteObj(new GuestAddress(StatusAddr), (byte)0xff);
        ring.Publish(0);
        blk.NotifyQueue(0);
        Assert.False(blk.Failed, blk.FailureReason);
        Assert.Equal(0, memory.ReadObj<byte>(new GuestAddress(StatusAddr)));
        Assert.Equal(1, ring.UsedIdx);
    }

    [Fact]
    public void Ten_thousand_random_block_requests()
    {
        string path = Path.GetTempFileName();
        File.WriteAllBytes(path, new byte[1 << 20]);
        var rng = new Random(42);
        using var memory = NewMemory();
        using var blk = new VirtioBlock(new BlockConfig(path));
        int failures = 0, served = 0;
        try
        {
            for (int i = 0; i < 10_000; i++)
            {
                var ring = new DriverRing(memory, 16);
                blk.Reset();
                Activate(blk, memory, ring);
                var header = memory.GetSpan(new GuestAddress(HeaderAddr), 16);
                uint[] types = [0, 1, 4, 8, 11, 13, (uint)rng.Next()];
                BinaryPrimitives.WriteUInt32LittleEndian(header, types[rng.Next(types.Length)]);
                BinaryPrimitives.WriteUInt64LittleEndian(header[8..], rng.Next(3) switch
                {
                    0 => (ulong)rng.NextInt64(),
                    1 => blk.CapacitySectors - (ulong)rng.Next(0, 4),
                    _ => (ulong)rng.Next(0, 2048),
                });
                // Discard/write-zeroes segments with random ranges.
                var seg = memory.GetSpan(new GuestAddress(DataAddr), 16);
                BinaryPrimitives.WriteUInt64LittleEndian(seg, (ulong)rng.Next(0, 4096));
                BinaryPrimitives.WriteUInt32LittleEndian(seg[8..], (uint)rng.Next());
                int parts = rng.Next(1, 5);
                for (int p = 0; p < parts; p++)
                {
                    ulong addr = p == 0 ? HeaderAddr : rng.Next(3) == 0 ? QueueFuzzTests.RandomAddress(rng) : DataAddr + (ulong)rng.Next(0, 8) * 512;
                    uint len = rng.Next(3) == 0 ? QueueFuzzTests.RandomLength(rng) : (uint)(rng.Next(0, 9) * 512 + (rng.Next(4) == 0 ? rng.Next(0, 17) : 0));
                    ushort flags = (ushort)((p + 1 < parts ? NEXT : 0) | (p > 0 && rng.Next(3) != 0 ? WRITE : 0));
                    ring.SetDesc(p, addr, len, flags, (ushort)(p + 1));
                }
                ring.Publish(0);
                blk.NotifyQueue(0);
                if (blk.Failed)
                {
                    failures++;
                }
                else
                {
                    served += ring.UsedIdx;
                }
            }
            Assert.True(failures > 100 && served > 100, $"failures {failures}, served {served}");
            Assert.Equal(1 << 20, new FileInfo(path).Length); // nothing was written past the disk
            AssertServesAReadAfterReset(blk, memory);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Random_requests_to_the_direct_io_path_never_escape()
    {
        string path = Path.GetTempFileName();
        File.WriteAllBytes(path, new byte[1 << 20]);
        var rng = new Random(4242);
        using var memory = NewMemory();
        try
        {
            using (var blk = new VirtioBlock(new BlockConfig(path, Direct: true)))
            {
                for (int i = 0; i < 2_000; i++)
                {
                    var ring = new DriverRing(memory, 16);
                    QueueFuzzTests.Scramble(memory, ring, rng, 16);
                    blk.Reset();
                    Activate(blk, memory, ring);
                    ring.SetAvailIdx((ushort)rng.Next(0, 17));
                    blk.NotifyQueue(0);
                    blk.OnCompletions();
                }
            } // Dispose waits for the requests still at the kernel
            Assert.Equal(1 << 20, new FileInfo(path).Length);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Random_chains_into_rng_and_console()
    {
        var rng = new Random(99);
        using var memory = NewMemory();
        var devices = new VirtioDevice[] { new VirtioRng(), new VirtioConsole(_ => { }) };
        foreach (var device in devices)
        {
            for (int i = 0; i < 5_000; i++)
            {
                var ring = new DriverRing(memory, 8);
                QueueFuzzTests.Scramble(memory, ring, rng, 8);
                device.Reset();
                var states = new QueueState[device.QueueCount];
                int q = rng.Next(device.QueueCount);
                states[q] = ring.State(indirect: rng.Next(2) == 0);
                Assert.True(device.Activate(memory, Features, states, _ => { }, () => { }));
                ring.SetAvailIdx((ushort)rng.Next(0, 10));
                device.NotifyQueue(q);
                if (device is VirtioConsole console)
                {
                    console.Enqueue("input"u8);
                }
            }
        }
    }
}
