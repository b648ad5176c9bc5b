using Vireo.Interop;

namespace Vireo.Kvm.Tests;

public class CpuFeaturesTests
{
    private static kvm_cpuid_entry2 Leaf(uint function, uint index = 0, uint eax = 0, uint ebx = 0, uint ecx = 0, uint edx = 0) =>
        new() { function = function, index = index, eax = eax, ebx = ebx, ecx = ecx, edx = edx };

    private static readonly kvm_cpuid_entry2[] Host =
    [
        Leaf(1, ecx: 0x8000_0001, edx: 0x0780_0001), // sse3, hypervisor; fpu, mmx, fxsr, sse, sse2
        Leaf(7, 0, ebx: 1 << 5),                       // avx2
        Leaf(0xd, 1, eax: 0x1),                        // xsaveopt
        Leaf(0x8000_0001, ecx: 1, edx: 1u << 29),      // lahf_lm; lm
    ];

    [Fact]
    public void A_guest_within_the_host_misses_nothing()
    {
        Assert.Null(CpuFeatures.Missing(Host, Host));
        Assert.Null(CpuFeatures.Missing([Leaf(1, ecx: 1), Leaf(7, 0, ebx: 1 << 5)], Host));
        Assert.Null(CpuFeatures.Missing([], Host));
    }

    [Fact]
    public void The_first_missing_bit_is_named()
    {
        Assert.Equal("avx512f (CPUID.7.0:EBX bit 16)", CpuFeatures.Missing([Leaf(7, 0, ebx: (1 << 5) | (1 << 16))], Host));
        Assert.Equal("CPUID.7.0:EBX bit 1", CpuFeatures.Missing([Leaf(7, 0, ebx: 1 << 1)], Host));
        Assert.Equal("avx (CPUID.1:ECX bit 28)", CpuFeatures.Missing([Leaf(1, ecx: 1u << 28)], Host));
        Assert.Equal("xsaves (CPUID.0xd.1:EAX bit 3)", CpuFeatures.Missing([Leaf(0xd, 1, eax: 0x9)], Host));
        Assert.Equal("rdtscp (CPUID.0x80000001:EDX bit 27)", CpuFeatures.Missing([Leaf(0x8000_0001, edx: 1u << 27)], Host));
        // Leaf 1 is checked before leaf 7, ECX before EDX.
        Assert.Equal("sse4_2 (CPUID.1:ECX bit 20)", CpuFeatures.Missing([Leaf(7, 0, ebx: 1 << 16), Leaf(1, ecx: 1 << 20, edx: 1 << 4)], Host));
    }

    [Fact]
    public void A_leaf_the_host_lacks_misses_every_bit_and_subleaves_are_told_apart()
    {
        Assert.Equal("pku (CPUID.7.0:ECX bit 3)", CpuFeatures.Missing([Leaf(7, 0, ecx: 1 << 3)], [Leaf(1)]));
        // 0xd.0 is not a feature word: only 0xd.1's EAX is compared.
        Assert.Null(CpuFeatures.Missing([Leaf(0xd, 0, eax: 0xff)], Host));
    }

    [Fact]
    public void Bits_kvm_sets_itself_are_not_host_features()
    {
        // OSXSAVE, the TSC-deadline timer, APIC and OSPKE: KVM's doing, absent from supported CPUID.
        Assert.Null(CpuFeatures.Missing([Leaf(1, ecx: (1u << 27) | (1u << 24), edx: 1u << 9), Leaf(7, 0, ecx: 1 << 4)], Host));
    }
}
