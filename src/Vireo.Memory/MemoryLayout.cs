namespace Vireo.Memory;

/// <summary>The x86 guest-physical layout Vireo gives every VM.</summary>
public static class MemoryLayout
{
    public const ulong MiB = 1UL << 20;
    public const ulong GiB = 1UL << 30;

    /// <summary>RAM below 4 GiB stops here; [3 GiB, 4 GiB) is the 32-bit PCI/MMIO hole.</summary>
    public const ulong PciHoleStart = 3 * GiB;
    public const ulong PciHoleEnd = 4 * GiB;

    /// <summary>The IOAPIC, the LAPIC and KVM's TSS/identity-map pages live at the top of the hole.</summary>
    public const ulong IoApicBase = 0xFEC0_0000;
    public const ulong LapicBase = 0xFEE0_0000;
    public const ulong KvmIdentityMapAddr = 0xFFFB_C000;
    public const ulong KvmTssAddr = 0xFFFB_D000;

    /// <summary>Smallest and largest RAM a VM may have.</summary>
    public const ulong MinRam = 16 * MiB;
    public const ulong MaxRam = 1024 * GiB;

    /// <summary>The RAM regions for a VM of <paramref name="ramSize"/> bytes.</summary>
    public static RamRange[] RamRegions(ulong ramSize)
    {
        if (ramSize <= PciHoleStart)
        {
            return [new RamRange(new GuestAddress(0), ramSize)];
        }
        return [new RamRange(new GuestAddress(0), PciHoleStart), new RamRange(new GuestAddress(PciHoleEnd), ramSize - PciHoleStart)];
    }
}

/// <summary>One run of RAM in the layout.</summary>
public readonly record struct RamRange(GuestAddress Start, ulong Size);

