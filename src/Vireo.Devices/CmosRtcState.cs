namespace Vireo.Devices;

/// <summary>The CMOS index register and its 128 bytes (the time itself is read from the host's clock).</summary>
public sealed record CmosRtcState(byte Index, byte[] Ram)
{
    public string? Problem() =>
        Ram is null ? "ram is missing"
        : Ram.Length != CmosRtc.RamSize ? $"ram is {Ram.Length} bytes; the CMOS has {CmosRtc.RamSize}"
        : Index >= CmosRtc.RamSize ? $"index {Index} is past the CMOS's {CmosRtc.RamSize} bytes"
        : null;
}
