using System.Buffers.Binary;

namespace Vireo.Devices;

/// <summary>
/// A test device at port 0xf4, in the manner of QEMU's isa-debug-exit: a guest write of N ends
/// the VM with guest status N. Only present when asked for (vireo run --debug-exit).
/// </summary>
public sealed class DebugExitPort(Action<int> exit) : IBusDevice
{
    public const ushort Port = 0xf4;
    public const int Length = 4;

    public void Read(ulong offset, Span<byte> data) => data.Fill(0xff);

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        int code = data.Length switch
        {
            1 => data[0],
            2 => BinaryPrimitives.ReadUInt16LittleEndian(data),
            4 => (int)BinaryPrimitives.ReadUInt32LittleEndian(data),
            _ => 0xff,
        };
        exit(code);
    }
}
