namespace Vireo.Devices;

/// <summary>The i8042's command byte, output port, status, data and the command awaiting its data byte.</summary>
public sealed record I8042State(byte CommandByte, byte OutputPort, byte Status, byte Data, byte PendingWrite);
