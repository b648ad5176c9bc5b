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
    LoadSegment[] Segments,
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

    public ulong LowestAddress
    {
        get
        {
            ulong low = ulong.MaxValue;
            foreach (var s in Segments)
            {
                low = Math.Min(low, s.GuestAddress);
            }
            return low;
        }
    }

    public ulong HighestEnd
    {
        get
        {
            ulong high = 0;
            foreach (var s in Segments)
            {
                high = Math.Max(high, s.GuestAddress + s.MemSize);
            }
            return high;
        }
    }

    /// <summary>True when <paramref name="address"/> lies inside a loaded segment.</summary>
    public bool Covers(ulong address)
    {
        foreach (var s in Segments)
        {
            if (address >= s.GuestAddress && address - s.GuestAddress < s.MemSize)
            {
                return true;
            }
        }
        return false;
    }
}
