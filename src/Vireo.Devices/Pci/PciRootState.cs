namespace Vireo.Devices.Pci;

/// <summary>The 0xCF8 configuration address the guest last wrote (the functions keep their own state).</summary>
public sealed record PciRootState(uint Address);
