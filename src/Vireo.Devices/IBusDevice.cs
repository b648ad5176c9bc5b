namespace Vireo.Devices;

/// <summary>A device on a PIO or MMIO bus. It only ever sees the offset into its own range.</summary>
public interface IBusDevice
{
    void Read(ulong offset, Span<byte> data);
    void Write(ulong offset, ReadOnlySpan<byte> data);
}

/// <summary>An interrupt a device can raise (an irqfd on the in-kernel irqchip, for instance).</summary>
public interface IInterruptLine
{
    void Trigger();
}
