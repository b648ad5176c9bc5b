using Vireo.Interop;

namespace Vireo.Vmm.Tests;

public class CpuidTemplateTests
{
    private static readonly kvm_cpuid_entry2[] Host =
    [
        new() { function = 1, eax = 0xa00f11, ebx = 0x11223344, ecx = 0, edx = 1u << 28 },
        new() { function = 0xb, index = 0 },
        new() { function = 0xb, index = 1 },
        new() { function = 0xb, index = 2 },
        new() { function = 0x8000_0008, ecx = 0x7007 },
    ];

    [Fact]
    public void Each_vcpu_gets_its_apic_id_and_the_package_size()
    {
        var e = CpuidTemplate.For(Host, vcpuId: 3, vcpuCount: 4);
        var leaf1 = e.Single(x => x.function == 1);
        Assert.Equal(3u, leaf1.ebx >> 24);
        Assert.Equal(4u, (leaf1.ebx >> 16) & 0xff);
        Assert.Equal(0x3344u, leaf1.ebx & 0xffff);          // brand index and CLFLUSH kept
        Assert.NotEqual(0u, leaf1.ecx & (1u << 31));        // hypervisor present
        Assert.NotEqual(0u, leaf1.edx & (1u << 28));        // HTT with more than one vCPU
        var b1 = e.Single(x => x.function == 0xb && x.index == 1);
        Assert.Equal((2u, 4u, 3u), (b1.eax, b1.ebx, b1.edx));
        Assert.Equal(3u, e.Single(x => x.function == 0x8000_0008).ecx & 0xff);
    }

    [Fact]
    public void One_vcpu_has_no_htt()
    {
        var leaf1 = CpuidTemplate.For(Host, 0, 1).Single(x => x.function == 1);
        Assert.Equal(0u, leaf1.edx & (1u << 28));
        Assert.Equal(0u, leaf1.ebx >> 24);
    }

    [Fact]
    public void The_tsc_deadline_timer_is_offered_only_when_kvm_has_it()
    {
        const uint tscDeadline = 1u << 24;
        Assert.Equal(0u, CpuidTemplate.For(Host, 0, 1).Single(x => x.function == 1).ecx & tscDeadline);
        Assert.Equal(tscDeadline, CpuidTemplate.For(Host, 0, 1, tscDeadline: true).Single(x => x.function == 1).ecx & tscDeadline);
    }
    /// <summary>
    /// Leaf 0xD as KVM gave it in the rig (rig/DESIGN.md): x87, SSE, AVX and PKRU. EBX of sub-leaf 0
    /// is the size for the XCR0 in force, which KVM itself rewrites on each guest XSETBV; the
    /// template must leave the leaf alone, so that the size Linux compares (ECX, and EBX once KVM has
    /// seen XCR0) stays the one KVM computed from the same sub-leaves.
    /// </summary>
    [Fact]
    public void Leaf_0xd_is_passed_through_from_kvm_and_its_sizes_agree_with_its_sub_leaves()
    {
        kvm_cpuid_entry2[] host =
        [
            .. Host,
            new() { function = 0xd, index = 0, eax = 0x207, ebx = 0x240, ecx = 0xa88 },
            new() { function = 0xd, index = 1, eax = 0x5 },
            new() { function = 0xd, index = 2, eax = 0x100, ebx = 0x240 },
            new() { function = 0xd, index = 9, eax = 0x8, ebx = 0xa80 },
        ];
        var e = CpuidTemplate.For(host, vcpuId: 1, vcpuCount: 2);
        foreach (var leaf in host.Where(x => x.function == 0xd))
        {
            var got = e.Single(x => x.function == 0xd && x.index == leaf.index);
            Assert.Equal((leaf.eax, leaf.ebx, leaf.ecx, leaf.edx), (got.eax, got.ebx, got.ecx, got.edx));
        }
        // What Linux's paranoid_xstate_size_valid computes: the end of the last feature in XCR0.
        var sub0 = e.Single(x => x.function == 0xd && x.index == 0);
        uint end = 576; // the legacy area and the XSAVE header
        for (uint bit = 2; bit < 32; bit++)
        {
            if ((sub0.eax & (1u << (int)bit)) != 0)
            {
                var f = e.Single(x => x.function == 0xd && x.index == bit);
                end = Math.Max(end, f.ebx + f.eax);
            }
        }
        Assert.Equal(2696u, end);
        Assert.Equal(end, sub0.ecx);
    }
}
