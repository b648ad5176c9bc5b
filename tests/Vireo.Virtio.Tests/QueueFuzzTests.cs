using Vireo.Memory;
using Vireo.Virtio.Queue;
using static Vireo.Virtio.Tests.DriverRing;

namespace Vireo.Virtio.Tests;

/// <summary>
/// Seeded random queues: descriptor tables, avail rings and indexes a malicious guest could write.
/// Whatever the guest writes, popping never throws and never yields a buffer outside guest RAM.
/// </summary>
public class QueueFuzzTests
{
    private const ulong RamSize = 1 << 20;

    internal static ulong RandomAddress(Random rng) => rng.Next(8) switch
    {
        0 => (ulong)rng.NextInt64(),                              // anywhere at all
        1 => RamSize - (ulong)rng.Next(0, 64),                    // straddling the end of RAM
        2 => ulong.MaxValue - (ulong)rng.Next(0, 4096),           // near the top: sums wrap
        _ => (ulong)rng.Next(0, (int)RamSize),                    // inside RAM
    };

    internal static uint RandomLength(Random rng) => rng.Next(6) switch
    {
        0 => (uint)rng.NextInt64(0, uint.MaxValue),
        1 => 0,
        _ => (uint)rng.Next(1, 8192),
    };

    /// <summary>Fills a descriptor table (and sometimes an indirect table) with random values.</summary>
    internal static void Scramble(GuestMemory memory, DriverRing ring, Random rng, ushort size)
    {
        for (int i = 0; i < size; i++)
        {
            ushort flags = (ushort)(rng.Next(8) == 0 ? rng.Next(65536) : rng.Next(8));
            ushort next = (ushort)(rng.Next(4) == 0 ? rng.Next(65536) : rng.Next(size));
            ring.SetDesc(i, RandomAddress(rng), RandomLength(rng), flags, next);
        }
        for (int i = 0; i < 64; i++)
        {
            ushort flags = (ushort)rng.Next(8);
            ring.SetDesc(i, RandomAddress(rng), RandomLength(rng), flags, (ushort)rng.Next(70), table: 0x50000);
        }
        if (rng.Next(2) == 0)
        {
            // A plausible indirect descriptor pointing at the scrambled table.
            ring.SetDesc(rng.Next(size), 0x50000, (uint)(16 * rng.Next(0, 70)), INDIRECT, 0);
        }
        for (int i = 0; i < size; i++)
        {
            ushort head = (ushort)(rng.Next(5) == 0 ? rng.Next(65536) : rng.Next(size));
            memory.WriteObj(new GuestAddress(AvailAddr + 4 + 2UL * (ulong)i), head);
        }
    }

    [Fact]
    public void Thirty_thousand_random_queues_never_throw_or_leave_guest_memory()
    {
        var rng = new Random(20261121);
        using var memory = NewMemory();
        int popped = 0, refused = 0;
        for (int iteration = 0; iteration < 30_000; iteration++)
        {
            ushort size = (ushort)(1 << rng.Next(0, 8));
            var ring = new DriverRing(memory, size);
            Scramble(memory, ring, rng, size);
            var state = ring.State(eventIdx: rng.Next(2) == 0, indirect: rng.Next(4) != 0);
            if (!SplitQueue.TryCreate(memory, state, out var queue, out _))
            {
                continue;
            }
            ring.SetAvailIdx((ushort)(rng.Next(4) == 0 ? rng.Next(65536) : rng.Next(size + 1)));
            for (int n = 0; n < size + 2; n++)
            {
                if (!queue!.TryPop(out var chain, out var error))
                {
                    refused += error == QueueError.None ? 0 : 1;
                    break;
                }
                popped++;
                Assert.True(chain.Buffers.Length <= size + SplitQueue.MaxSize);
                foreach (var b in chain.Buffers)
                {
                    Assert.True(memory.IsValidRange(new GuestAddress(b.Address), b.Length), $"buffer {b} outside guest RAM");
                }
                queue.AddUsed(chain.Head, 0);
            }
        }
        // Both paths were exercised.
        Assert.True(popped > 1000 && refused > 1000, $"popped {popped}, refused {refused}");
    }

    [Fact]
    public void Random_queue_configurations_are_validated_without_exceptions()
    {
        var rng = new Random(7);
        using var memory = NewMemory();
        int accepted = 0;
        for (int i = 0; i < 20_000; i++)
        {
            // Half plausible (a power-of-two size, aligned rings), half anything at all.
            bool plausible = rng.Next(2) == 0;
            ushort size = plausible ? (ushort)(1 << rng.Next(0, 16)) : (ushort)rng.Next(65536);
            ulong Align(ulong a) => plausible ? a & ~15UL : a;
            var state = new QueueState(size, true, Align(RandomAddress(rng)), Align(RandomAddress(rng)), Align(RandomAddress(rng)),
                (ushort)rng.Next(65536), (ushort)rng.Next(65536), rng.Next(2) == 0, rng.Next(2) == 0);
            if (SplitQueue.TryCreate(memory, state, out var q, out _))
            {
                accepted++;
                _ = q!.TryPop(out _, out _);
                _ = q.ShouldInterrupt();
            }
        }
        Assert.True(accepted > 0);
    }
}
