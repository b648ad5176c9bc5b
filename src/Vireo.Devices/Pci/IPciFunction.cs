namespace Vireo.Devices.Pci;

/// <summary>A PCI function's configuration space as its root sees it: offsets 0..4095.</summary>
public interface IPciFunction
{
    void ReadConfig(int offset, Span<byte> data);
    void WriteConfig(int offset, ReadOnlySpan<byte> data);
}

/// <summary>Delivers a message-signalled interrupt (an MSI-X vector's address and data).</summary>
public interface IMsiTarget
{
    void Signal(ulong address, uint data);
}

/// <summary>A level-triggered interrupt line (PCI INTx).</summary>
public interface ILevelInterrupt
{
    void Set(bool asserted);
}
