using System.Buffers.Binary;

namespace Vireo.Boot;

/// <summary>The setup header of a Linux bzImage (Documentation/arch/x86/boot.rst).</summary>
public sealed record BzImageHeader(
    ushort Version,
    int SetupSects,
    uint InitrdAddrMax,
    uint CmdlineSize,
    uint InitSize,
    byte[] SetupHeader)
{
    public const int SetupHeaderOffset = 0x1f1;
    private const ushort MinVersion = 0x020c; // 2.12: xloadflags, and with it the 64-bit entry
    private const byte LoadedHigh = 0x01;
    private const ushort XlfKernel64 = 0x01;

    public static bool HasMagic(ReadOnlySpan<byte> image) =>
        image.Length >= 0x206 && image.Slice(0x202, 4).SequenceEqual("HdrS"u8);

    public static KernelImage Parse(ReadOnlySpan<byte> f)
    {
        if (f.Length < 0x268)
        {
            throw new BootException($"bzImage is truncated: {f.Length} bytes is less than its setup header");
        }
        if (BinaryPrimitives.ReadUInt16LittleEndian(f[0x1fe..]) != 0xaa55)
        {
            throw new BootException("bzImage has no 0xAA55 boot flag at offset 0x1fe");
        }
        ushort version = BinaryPrimitives.ReadUInt16LittleEndian(f[0x206..]);
        if (version < MinVersion)
        {
            throw new BootException($"bzImage uses boot protocol {version >> 8}.{version & 0xff:d2}; Vireo needs 2.12 or later (64-bit entry)");
        }
        if ((f[0x211] & LoadedHigh) == 0)
        {
            throw new BootException("image is a zImage (not loaded high); only bzImage is supported");
        }
        if ((BinaryPrimitives.ReadUInt16LittleEndian(f[0x236..]) & XlfKernel64) == 0)
        {
            throw new BootException("bzImage has no 64-bit entry point (XLF_KERNEL_64 is not set)");
        }
        int setupSects = f[0x1f1] == 0 ? 4 : f[0x1f1];
        int kernelOffset = (setupSects + 1) * 512;
        if (kernelOffset >= f.Length)
        {
            throw new BootException($"bzImage is truncated: the protected-mode kernel should start at 0x{kernelOffset:x} but the file is {f.Length} bytes");
        }
        int headerEnd = 0x202 + f[0x201];
        if (headerEnd > f.Length || headerEnd > 0x280)
        {
            throw new BootException("bzImage setup header length is out of range");
        }
        uint initSize = BinaryPrimitives.ReadUInt32LittleEndian(f[0x260..]);
        var header = new BzImageHeader(
            version,
            setupSects,
            BinaryPrimitives.ReadUInt32LittleEndian(f[0x22c..]),
            BinaryPrimitives.ReadUInt32LittleEndian(f[0x238..]),
            initSize,
            f[SetupHeaderOffset..headerEnd].ToArray());
        int payload = f.Length - kernelOffset;
        ulong memSize = Math.Max((ulong)payload, initSize);
        var segment = new LoadSegment(BootLayout.BzImageLoadAddr, kernelOffset, payload, memSize);
        // The 64-bit entry point is 0x200 bytes into the protected-mode kernel.
        return new KernelImage("bzImage", EntryMode.Linux64, BootLayout.BzImageLoadAddr + 0x200, [segment], header);
    }
}
