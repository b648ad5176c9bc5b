namespace Vireo.Devices;

/// <summary>The PM1 status, enable and control registers.</summary>
public sealed record AcpiPmState(ushort Status, ushort Enable, ushort Control);
