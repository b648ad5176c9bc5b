namespace Vireo.Boot;

/// <summary>Where Vireo puts the boot structures in low guest memory (all below 1 MiB).</summary>
public static class BootLayout
{
    public const ulong GdtAddr = 0x500;
    public const ulong IdtAddr = 0x520;
    public const ulong PvhStartInfoAddr = 0x6000;
    public const ulong PvhMemmapAddr = 0x6040;
    public const ulong PvhModlistAddr = 0x6f00;
    public const ulong ZeroPageAddr = 0x7000;
    public const ulong BootStackTop = 0x8ff0;
    public const ulong Pml4Addr = 0x9000;
    public const ulong PdptAddr = 0xa000;
    public const ulong PdAddr = 0xb000; // four page directories: 0xb000..0xefff
    public const ulong CmdlineAddr = 0x20000;
    public const int CmdlineMax = 4096; // bytes, including the NUL
    public const ulong EbdaStart = 0x9fc00;
    public const ulong AcpiAddr = 0xe0000;    // RSDP first, then the tables; Linux scans 0xe0000..0xfffff for "RSD PTR "
    public const ulong AcpiMax = 0x10000;     // up to the MP table
    public const ulong MpTableAddr = 0xf0000; // in the BIOS area Linux scans for "_MP_"
    public const ulong HighMemStart = 0x100000; // kernels load at or above 1 MiB
    public const ulong BzImageLoadAddr = HighMemStart;
}
