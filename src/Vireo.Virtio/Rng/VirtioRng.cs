using Vireo.Interop;
using Vireo.Memory;
using Vireo.Virtio.Queue;

namespace Vireo.Virtio.Rng;

/// <summary>virtio-rng (§5.4): fills every writable buffer the guest offers from the host's getrandom(2).</summary>
public sealed class VirtioRng : VirtioDevice
{
    public override uint DeviceType => VirtioConstants.DeviceRng;
    protected override ulong DeviceFeatures => 0;
    public override int QueueCount => 1;

    public override void ReadConfig(ulong offset, Span<byte> data) => data.Clear();

    protected override void ProcessQueue(int index, SplitQueue queue)
    {
        QueueError error;
        while (queue.TryPop(out var chain, out error))
        {
            uint written = 0;
            foreach (var b in chain.Buffers)
            {
                if (b.DeviceWritable)
                {
                    Libc.FillRandom(Memory!.GetSpan(new GuestAddress(b.Address), b.Length));
                    Memory.MarkDirty(new GuestAddress(b.Address), b.Length);
                    written += b.Length;
                }
            }
            queue.AddUsed(chain.Head, written);
        }
        if (error != QueueError.None)
        {
            Fail(error.ToString());
        }
    }
}
