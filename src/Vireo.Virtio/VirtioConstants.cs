namespace Vireo.Virtio;

/// <summary>Device IDs, status bits and transport-independent feature bits (virtio 1.2 §2, §5, §6).</summary>
public static class VirtioConstants
{
    public const uint DeviceNet = 1, DeviceBlock = 2, DeviceConsole = 3, DeviceRng = 4, DeviceVsock = 19;

    public const uint StatusAcknowledge = 1, StatusDriver = 2, StatusDriverOk = 4, StatusFeaturesOk = 8,
        StatusNeedsReset = 64, StatusFailed = 128;

    public const int FeatureIndirectDesc = 28, FeatureEventIdx = 29, FeatureVersion1 = 32;

    public static ulong Bit(int feature) => 1UL << feature;
}
