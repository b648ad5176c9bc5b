using System.Numerics;
using Vireo.Interop;

namespace Vireo.Vmm;

/// <summary>
/// Per-vCPU CPUID from KVM_GET_SUPPORTED_CPUID, with the APIC ID and the topology fixed up so
/// that a guest counts the vCPUs it was given and knows it runs on a hypervisor. KVM reports the
/// TSC-deadline timer as a capability rather than in that list, so the caller says whether to
/// offer it (as QEMU and Firecracker do): without it Linux programs the local APIC timer by count.
/// </summary>
public static class CpuidTemplate
{
    private const uint EcxHypervisor = 1u << 31;
    private const uint EcxTscDeadline = 1u << 24;
    private const uint EdxHtt = 1u << 28;

    public static kvm_cpuid_entry2[] For(kvm_cpuid_entry2[] supported, int vcpuId, int vcpuCount, bool tscDeadline = false)
    {
        var entries = (kvm_cpuid_entry2[])supported.Clone();
        int shift = vcpuCount <= 1 ? 0 : BitOperations.Log2((uint)vcpuCount - 1) + 1;
        for (int i = 0; i < entries.Length; i++)
        {
            ref var e = ref entries[i];
            switch (e.function)
            {
                case 0x1:
                    e.ebx = (e.ebx & 0x0000_ffff) | ((uint)vcpuId << 24) | ((uint)Math.Min(vcpuCount, 255) << 16);
                    e.ecx |= EcxHypervisor | (tscDeadline ? EcxTscDeadline : 0);
                    e.edx = vcpuCount > 1 ? e.edx | EdxHtt : e.edx & ~EdxHtt;
                    break;
                case 0xb:
                case 0x1f:
                    // Level 0: one thread a core; level 1: vcpuCount cores a package.
                    e.edx = (uint)vcpuId;
                    e.eax = e.index == 1 ? (uint)shift : 0;
                    e.ebx = e.index switch { 0 => 1u, 1 => (uint)vcpuCount, _ => 0u };
                    e.ecx = e.index switch { 0 => 1u << 8, 1 => (2u << 8) | 1, _ => e.index };
                    break;
                case 0x8000_0008:
                    e.ecx = (e.ecx & ~0xf0ffu) | (uint)(vcpuCount - 1) | ((uint)shift << 12);
                    break;
                case 0x8000_001e:
                    e.eax = (uint)vcpuId;
                    e.ebx = (e.ebx & ~0xffu) | (uint)vcpuId;
                    break;
            }
        }
        return entries;
    }
}
