namespace Vireo.Devices.Pci;

/// <summary>A PCI function's configuration space as its root sees it: offsets 0..4095.</summary>
public interface IPciFunction
{
    void ReadConfig(int offset, Span<byte> data);
    void WriteConfig(int offset, ReadOnlySpan<byte> data);
}

/// <summary>
/// A function's MSI-X vectors as the platform delivers them: the transport says where a vector
/// points (address, data) whenever the guest changes it, and signals it by number.
/// </summary>
public interface IMsiTarget
{
    void Route(int vector, ulong address, uint data);
    void Signal(int vector);
}

/// <summary>A level-triggered interrupt line (PCI INTx).</summary>
public interface ILevelInterrupt
{
    void Set(bool asserted);
}
