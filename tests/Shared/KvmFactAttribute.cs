namespace Vireo.Tests;

/// <summary>
/// A test that needs /dev/kvm. Where the host truly has none it is skipped, loudly; where
/// VIREO_REQUIRE_KVM=1 (CI on a KVM host) a missing /dev/kvm fails the test instead.
/// </summary>
public sealed class KvmFactAttribute : FactAttribute
{
    public KvmFactAttribute()
    {
        if (!Kvm.Kvm.IsAvailable(out string reason) && Environment.GetEnvironmentVariable("VIREO_REQUIRE_KVM") != "1")
        {
            Skip = $"SKIPPED: NO USABLE /dev/kvm ON THIS HOST ({reason})";
        }
    }
}

/// <summary>The theory form of <see cref="KvmFactAttribute"/>.</summary>
public sealed class KvmTheoryAttribute : TheoryAttribute
{
    public KvmTheoryAttribute()
    {
        if (!Kvm.Kvm.IsAvailable(out string reason) && Environment.GetEnvironmentVariable("VIREO_REQUIRE_KVM") != "1")
        {
            Skip = $"SKIPPED: NO USABLE /dev/kvm ON THIS HOST ({reason})";
        }
    }
}
