using Vireo.Interop;

namespace Vireo.Kvm;

/// <summary>
/// Compares the CPUID a saved vCPU ran with against what this host's KVM offers
/// (KVM_GET_SUPPORTED_CPUID), so a restore or an incoming migration can refuse with the name of
/// the first feature the guest would lose.
/// </summary>
public static class CpuFeatures
{
    private enum Reg { Eax, Ebx, Ecx, Edx }

    /// <summary>The feature words checked: (leaf, subleaf or null when the leaf has none, register).</summary>
    private static readonly (uint Leaf, uint? Subleaf, Reg Reg)[] Words =
    [
        (1, null, Reg.Ecx), (1, null, Reg.Edx),
        (7, 0, Reg.Ebx), (7, 0, Reg.Ecx), (7, 0, Reg.Edx),
        (0xd, 1, Reg.Eax),
        (0x8000_0001, null, Reg.Ecx), (0x8000_0001, null, Reg.Edx),
    ];

    /// <summary>
    /// Bits KVM sets in a vCPU's CPUID without offering them in KVM_GET_SUPPORTED_CPUID: OSXSAVE
    /// and OSPKE mirror the guest's CR4, the APIC bit its APIC_BASE, and the TSC-deadline timer is
    /// KVM's own LAPIC emulation (KVM_CAP_TSC_DEADLINE_TIMER), not a host feature. The VMM sets
    /// two more itself, describing the machine it builds rather than the host's CPU: the
    /// hypervisor bit and HTT (more than one logical CPU in the package).
    /// </summary>
    private static readonly (uint Leaf, Reg Reg, int Bit)[] NotHostFeatures =
    [
        (1, Reg.Ecx, 24), (1, Reg.Ecx, 27), (1, Reg.Edx, 9), (7, Reg.Ecx, 4), (1, Reg.Ecx, 31), (1, Reg.Edx, 28),
    ];

    private static readonly Dictionary<(uint Leaf, Reg Reg, int Bit), string> Names = new()
    {
        [(1, Reg.Ecx, 0)] = "sse3", [(1, Reg.Ecx, 1)] = "pclmulqdq", [(1, Reg.Ecx, 3)] = "monitor",
        [(1, Reg.Ecx, 5)] = "vmx", [(1, Reg.Ecx, 9)] = "ssse3", [(1, Reg.Ecx, 12)] = "fma",
        [(1, Reg.Ecx, 13)] = "cx16", [(1, Reg.Ecx, 17)] = "pcid", [(1, Reg.Ecx, 19)] = "sse4_1",
        [(1, Reg.Ecx, 20)] = "sse4_2", [(1, Reg.Ecx, 21)] = "x2apic", [(1, Reg.Ecx, 22)] = "movbe",
        [(1, Reg.Ecx, 23)] = "popcnt", [(1, Reg.Ecx, 24)] = "tsc_deadline_timer", [(1, Reg.Ecx, 25)] = "aes",
        [(1, Reg.Ecx, 26)] = "xsave", [(1, Reg.Ecx, 28)] = "avx", [(1, Reg.Ecx, 29)] = "f16c",
        [(1, Reg.Ecx, 30)] = "rdrand", [(1, Reg.Ecx, 31)] = "hypervisor",
        [(1, Reg.Edx, 0)] = "fpu", [(1, Reg.Edx, 4)] = "tsc", [(1, Reg.Edx, 5)] = "msr", [(1, Reg.Edx, 6)] = "pae",
        [(1, Reg.Edx, 8)] = "cx8", [(1, Reg.Edx, 9)] = "apic", [(1, Reg.Edx, 11)] = "sep", [(1, Reg.Edx, 12)] = "mtrr",
        [(1, Reg.Edx, 13)] = "pge", [(1, Reg.Edx, 15)] = "cmov", [(1, Reg.Edx, 16)] = "pat", [(1, Reg.Edx, 19)] = "clflush",
        [(1, Reg.Edx, 23)] = "mmx", [(1, Reg.Edx, 24)] = "fxsr", [(1, Reg.Edx, 25)] = "sse", [(1, Reg.Edx, 26)] = "sse2",
        [(1, Reg.Edx, 28)] = "ht",
        [(7, Reg.Ebx, 0)] = "fsgsbase", [(7, Reg.Ebx, 3)] = "bmi1", [(7, Reg.Ebx, 4)] = "hle", [(7, Reg.Ebx, 5)] = "avx2",
        [(7, Reg.Ebx, 7)] = "smep", [(7, Reg.Ebx, 8)] = "bmi2", [(7, Reg.Ebx, 9)] = "erms", [(7, Reg.Ebx, 10)] = "invpcid",
        [(7, Reg.Ebx, 11)] = "rtm", [(7, Reg.Ebx, 16)] = "avx512f", [(7, Reg.Ebx, 17)] = "avx512dq",
        [(7, Reg.Ebx, 18)] = "rdseed", [(7, Reg.Ebx, 19)] = "adx", [(7, Reg.Ebx, 20)] = "smap",
        [(7, Reg.Ebx, 21)] = "avx512ifma", [(7, Reg.Ebx, 23)] = "clflushopt", [(7, Reg.Ebx, 24)] = "clwb",
        [(7, Reg.Ebx, 28)] = "avx512cd", [(7, Reg.Ebx, 29)] = "sha_ni", [(7, Reg.Ebx, 30)] = "avx512bw",
        [(7, Reg.Ebx, 31)] = "avx512vl",
        [(7, Reg.Ecx, 1)] = "avx512vbmi", [(7, Reg.Ecx, 2)] = "umip", [(7, Reg.Ecx, 3)] = "pku", [(7, Reg.Ecx, 4)] = "ospke",
        [(7, Reg.Ecx, 6)] = "avx512_vbmi2", [(7, Reg.Ecx, 8)] = "gfni", [(7, Reg.Ecx, 9)] = "vaes",
        [(7, Reg.Ecx, 10)] = "vpclmulqdq", [(7, Reg.Ecx, 11)] = "avx512_vnni", [(7, Reg.Ecx, 12)] = "avx512_bitalg",
        [(7, Reg.Ecx, 14)] = "avx512_vpopcntdq", [(7, Reg.Ecx, 16)] = "la57", [(7, Reg.Ecx, 22)] = "rdpid",
        [(7, Reg.Ecx, 27)] = "movdiri", [(7, Reg.Ecx, 28)] = "movdir64b",
        [(7, Reg.Edx, 4)] = "fsrm", [(7, Reg.Edx, 8)] = "avx512_vp2intersect", [(7, Reg.Edx, 10)] = "md_clear",
        [(7, Reg.Edx, 14)] = "serialize", [(7, Reg.Edx, 23)] = "avx512_fp16", [(7, Reg.Edx, 24)] = "amx_tile",
        [(7, Reg.Edx, 26)] = "spec_ctrl", [(7, Reg.Edx, 27)] = "stibp", [(7, Reg.Edx, 29)] = "arch_capabilities",
        [(7, Reg.Edx, 31)] = "ssbd",
        [(0xd, Reg.Eax, 0)] = "xsaveopt", [(0xd, Reg.Eax, 1)] = "xsavec", [(0xd, Reg.Eax, 2)] = "xgetbv1",
        [(0xd, Reg.Eax, 3)] = "xsaves", [(0xd, Reg.Eax, 4)] = "xfd",
        [(0x8000_0001, Reg.Ecx, 0)] = "lahf_lm", [(0x8000_0001, Reg.Ecx, 2)] = "svm", [(0x8000_0001, Reg.Ecx, 5)] = "abm",
        [(0x8000_0001, Reg.Ecx, 6)] = "sse4a", [(0x8000_0001, Reg.Ecx, 7)] = "misalignsse",
        [(0x8000_0001, Reg.Ecx, 8)] = "3dnowprefetch", [(0x8000_0001, Reg.Ecx, 11)] = "xop",
        [(0x8000_0001, Reg.Ecx, 16)] = "fma4", [(0x8000_0001, Reg.Ecx, 21)] = "tbm", [(0x8000_0001, Reg.Ecx, 22)] = "topoext",
        [(0x8000_0001, Reg.Edx, 11)] = "syscall", [(0x8000_0001, Reg.Edx, 20)] = "nx", [(0x8000_0001, Reg.Edx, 22)] = "mmxext",
        [(0x8000_0001, Reg.Edx, 25)] = "fxsr_opt", [(0x8000_0001, Reg.Edx, 26)] = "pdpe1gb", [(0x8000_0001, Reg.Edx, 27)] = "rdtscp",
        [(0x8000_0001, Reg.Edx, 29)] = "lm",
    };

    /// <summary>
    /// The first feature bit set in <paramref name="saved"/>'s leaves 1 (ECX, EDX), 7.0 (EBX,
    /// ECX, EDX), 0xd.1 (EAX) and 0x80000001 (ECX, EDX) that <paramref name="hostSupported"/>
    /// lacks, as "avx512f (CPUID.7.0:EBX bit 16)"; null when the host offers them all.
    /// </summary>
    public static string? Missing(ReadOnlySpan<kvm_cpuid_entry2> saved, ReadOnlySpan<kvm_cpuid_entry2> hostSupported)
    {
        foreach (var (leaf, subleaf, reg) in Words)
        {
            if (Find(saved, leaf, subleaf) is not { } guest)
            {
                continue;
            }
            uint want = Value(guest, reg);
            uint have = Find(hostSupported, leaf, subleaf) is { } host ? Value(host, reg) : 0;
            foreach (var (l, r, bit) in NotHostFeatures)
            {
                if (l == leaf && r == reg)
                {
                    want &= ~(1u << bit);
                }
            }
            uint missing = want & ~have;
            if (missing != 0)
            {
                int bit = System.Numerics.BitOperations.TrailingZeroCount(missing);
                string where = $"CPUID.{Hex(leaf)}{(subleaf is { } s ? $".{s}" : "")}:{RegName(reg)} bit {bit}";
                return Names.TryGetValue((leaf, reg, bit), out var name) ? $"{name} ({where})" : where;
            }
        }
        return null;
    }

    private static string RegName(Reg reg) => reg switch { Reg.Eax => "EAX", Reg.Ebx => "EBX", Reg.Ecx => "ECX", _ => "EDX" };

    private static string Hex(uint leaf) => leaf < 10 ? leaf.ToString(System.Globalization.CultureInfo.InvariantCulture) : $"0x{leaf:x}";

    private static kvm_cpuid_entry2? Find(ReadOnlySpan<kvm_cpuid_entry2> entries, uint leaf, uint? subleaf)
    {
        foreach (var e in entries)
        {
            if (e.function == leaf && (subleaf is null || e.index == subleaf))
            {
                return e;
            }
        }
        return null;
    }

    private static uint Value(in kvm_cpuid_entry2 e, Reg reg) => reg switch
    {
        Reg.Eax => e.eax,
        Reg.Ebx => e.ebx,
        Reg.Ecx => e.ecx,
        _ => e.edx,
    };
}
