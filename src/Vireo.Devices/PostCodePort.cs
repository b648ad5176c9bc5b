namespace Vireo.Devices;

/// <summary>Port 0x80: the POST-code port firmware and kernels write progress to (and use as an I/O delay).</summary>
public sealed class PostCodePort : IBusDevice
{
    public const ushort Port = 0x80;
    private int _last = -1;
    private long _writes;

    /// <summary>The last code written, or -1.</summary>
    public int LastCode => Volatile.Read(ref _last);

    public long Writes => Interlocked.Read(ref _writes);

    public void Read(ulong offset, Span<byte> data) => data.Fill(0xff);

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        if (data.Length >= 1)
        {
            Volatile.Write(ref _last, data[0]);
            Interlocked.Increment(ref _writes);
        }
    }
}
