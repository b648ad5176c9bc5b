using Vireo.Memory;
using Vireo.Virtio.Block;
using Vireo.Virtio.Queue;
using static Vireo.Virtio.Tests.DriverRing;
namespace Vireo.Virtio.Tests;
/// <summary>
/// O_DIRECT requests finish through Linux AIO in any order: with 32 in flight and heads recycled
/// from a free list (as a driver must), every completion carries its own request's status. The
/// test plays the event loop, calling OnCompletions until the next completion arrives.
/// </summary>
public class DirectIoOrderTests
{
    [Fact]
    public void Out_of_order_completions_each_carry_their_own_status()
    {
        string path = Path.Combine(Vireo.Tests.TempDirectory.Create("vireo-order"), "disk.img");
        File.WriteAllBytes(path, new byte[4 << 20]);
        using var memory = NewMemory();
        using var blk = new VirtioBlock(new BlockConfig(path, Direct: true));
        var ring = new DriverRing(memory, 128);
        var st = new QueueState[1]; st[0] = ring.State(indirect: true);
        Assert.True(blk.Activate(memory, VirtioConstants.Bit(32) | VirtioConstants.Bit(28), st, _ => { }, () => { }));
        const ulong tables = 0x80000, hdrs = 0x90000, stat = 0x91000, data = 0xA0000;
        var free = new Stack<int>(Enumerable.Range(0, 32));
        var slotOfHead = new int[128];
        var inflight = new HashSet<int>();
        var freeHeads = new Stack<int>(Enumerable.Range(0, 128));
        int lastUsed = 0, done = 0, issued = 0;
        var rng = new Random(1);
        while (done < 5000)
        {
            int batch = 0;
            while (issued < 5000 && free.Count > 0)
            {
                int i = free.Pop();
                ulong t = tables + (ulong)i * 64;
                memory.WriteObj(new GuestAddress(hdrs + (ulong)i * 16), 0u);
                memory.WriteObj(new GuestAddress(hdrs + (ulong)i * 16 + 8), (ulong)rng.Next(0, 8000) & ~7UL);
                memory.WriteObj(new GuestAddress(stat + (ulong)i), (byte)0xff);
                ring.SetDesc(0, hdrs + (ulong)i * 16, 16, NEXT, 1, t);
                ring.SetDesc(1, data + (ulong)i * 4096, 4096, NEXT | WRITE, 2, t);
                ring.SetDesc(2, stat + (ulong)i, 1, WRITE, 0, t);
                int head = freeHeads.Pop();
                ring.SetDesc(head, t, 48, INDIRECT, 0);
                Assert.True(inflight.Add(head), $"head {head} reused while in flight"); slotOfHead[head] = i;
                ring.Publish((ushort)head);
                issued++; batch++;
            }
            if (batch > 0) blk.NotifyQueue(0);
            var sw = System.Diagnostics.Stopwatch.StartNew();
            while (ring.UsedIdx == (ushort)lastUsed) { Assert.True(sw.ElapsedMilliseconds < 5000, "timeout"); blk.OnCompletions(); }
            var (id, len) = ring.Used(lastUsed % 128);
            lastUsed++;
            Assert.True(inflight.Remove((int)id), $"completion {done}: head {id} was not in flight (used idx {ring.UsedIdx}, lastUsed {lastUsed})");
            int slot = slotOfHead[id];
            byte s = memory.ReadObj<byte>(new GuestAddress(stat + (ulong)slot));
            Assert.True(s == 0, $"completion {done}: head {id} slot {slot} len {len} status {s}");
            free.Push(slot);
            freeHeads.Push((int)id);
            done++;
        }
    }
}
