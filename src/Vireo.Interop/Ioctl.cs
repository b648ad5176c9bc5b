namespace Vireo.Interop;

/// <summary>The _IO/_IOR/_IOW/_IOWR encoding of asm-generic/ioctl.h.</summary>
public static class IoctlNumber
{
    private const int NrBits = 8, TypeBits = 8, SizeBits = 14;
    private const int NrShift = 0, TypeShift = NrShift + NrBits, SizeShift = TypeShift + TypeBits, DirShift = SizeShift + SizeBits;
    private const uint None = 0, WriteDir = 1, ReadDir = 2;

    public static nuint IO(uint type, uint nr) => Encode(None, type, nr, 0);
    public static nuint IOR(uint type, uint nr, int size) => Encode(ReadDir, type, nr, size);
    public static nuint IOW(uint type, uint nr, int size) => Encode(WriteDir, type, nr, size);
    public static nuint IOWR(uint type, uint nr, int size) => Encode(ReadDir | WriteDir, type, nr, size);

    private static nuint Encode(uint dir, uint type, uint nr, int size) =>
        (nuint)((dir << DirShift) | (type << TypeShift) | (nr << NrShift) | ((uint)size << SizeShift));
}
