namespace Vireo.Boot;

/// <summary>How the first vCPU enters the kernel.</summary>
public enum EntryMode
{
    /// <summary>PVH: 32-bit protected mode, paging off, EBX = hvm_start_info.</summary>
    Pvh,
    /// <summary>Linux 64-bit boot protocol: long mode, identity paging, RSI = boot_params.</summary>
    Linux64,
}

/// <summary>A piece of the image to copy into guest RAM: FileSize bytes from the file, then zeros to MemSize.</summary>
public readonly record struct LoadSegment(ulong GuestAddress, int FileOffset, int FileSize, ulong MemSize);

/// <summary>A parsed, validated kernel image: what to copy where, and how to enter it.</summary>
public sealed record KernelImage(
    string Format,
    EntryMode Mode,
    ulong Entry,
    IReadOnlyList<LoadSegment> Segments,
    BzImageHeader? BzImage = null)
{
    /// <summary>Recognises an ELF or a bzImage by its magic; anything else is refused.</summary>
    public static KernelImage Parse(ReadOnlySpan<byte> image)
    {
        if (image.Length >= 4 && image[0] == 0x7f && image[1] == (byte)'E' && image[2] == (byte)'L' && image[3] == (byte)'F')
        {
            return ElfKernel.Parse(image);
        }
        if (BzImageHeader.HasMagic(image))
        {
            return BzImageHeader.Parse(image);
        }
        if (image.Length == 0)
        {
            throw new BootException("kernel image is empty");
        }
        throw new BootException("kernel image is neither an ELF file nor a Linux bzImage (no ELF magic, no \"HdrS\" at offset 0x202)");
    }

    public ulong LowestAddress => Segments.Min(s => s.GuestAddress);
    public ulong HighestEnd => Segments.Max(s => s.GuestAddress + s.MemSize);
}
