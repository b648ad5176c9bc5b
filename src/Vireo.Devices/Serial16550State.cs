namespace Vireo.Devices;

/// <summary>A 16550's registers and the input the guest has not read yet, as plain data (a snapshot's part of it).</summary>
public sealed record Serial16550State(byte Ier, byte Lcr, byte Mcr, byte Scr, byte Dll, byte Dlm, byte Fcr, bool ThrePending, byte[] Rx)
{
    /// <summary>What is wrong with this state as untrusted input, or null.</summary>
    public string? Problem() =>
        Rx is null ? "rx is missing"
        : Rx.Length > Serial16550.RxCapacity ? $"rx holds {Rx.Length} bytes; the UART's buffer takes at most {Serial16550.RxCapacity}"
        : null;
}
