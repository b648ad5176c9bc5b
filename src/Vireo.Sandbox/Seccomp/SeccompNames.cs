using Vireo.Interop;

namespace Vireo.Sandbox.Seccomp;

/// <summary>
/// The named values a policy file may compare an argument with: the ioctl requests the VMM makes
/// (from the same constants its calls use, so a list cannot drift from the code) and a few flags.
/// A name not here is refused when the policy is read, with its file and line.
/// </summary>
public static class SeccompNames
{
    private static readonly Dictionary<string, ulong> Values = Build();

    public static bool TryGet(string name, out ulong value) => Values.TryGetValue(name, out value);

    /// <summary>Every request a list may name, for the test that maps strace's names back.</summary>
    public static IReadOnlyDictionary<string, ulong> All => Values;

    /// <summary>The ioctl requests among them, for the SIGSYS handler's line.</summary>
    public static IEnumerable<KeyValuePair<string, ulong>> Ioctls => Values.Where(v => !Flags.Contains(v.Key));

    private static readonly HashSet<string> Flags = ["PROT_EXEC", "PR_SET_NAME", "PR_GET_NAME", "SECCOMP_SET_MODE_FILTER", "AF_UNIX"];

    private static Dictionary<string, ulong> Build()
    {
        var v = new Dictionary<string, ulong>(StringComparer.Ordinal)
        {
            ["PROT_EXEC"] = 4,
            ["PR_SET_NAME"] = 15,
            ["PR_GET_NAME"] = 16,
            ["SECCOMP_SET_MODE_FILTER"] = 1,
            ["AF_UNIX"] = 1,
            ["FIONBIO"] = 0x5421,
            ["FIONREAD"] = 0x541B,
            ["TCGETS"] = 0x5401,
            ["TIOCGWINSZ"] = 0x5413,
            ["TUNSETIFF"] = Tun.TUNSETIFF,
            ["TUNSETVNETHDRSZ"] = Tun.TUNSETVNETHDRSZ,
            ["TUNSETOFFLOAD"] = Tun.TUNSETOFFLOAD,
        };
        (string, nuint)[] kvm =
        [
            (nameof(KvmAbi.KVM_GET_API_VERSION), KvmAbi.KVM_GET_API_VERSION),
            (nameof(KvmAbi.KVM_CREATE_VM), KvmAbi.KVM_CREATE_VM),
            (nameof(KvmAbi.KVM_CHECK_EXTENSION), KvmAbi.KVM_CHECK_EXTENSION),
            (nameof(KvmAbi.KVM_GET_VCPU_MMAP_SIZE), KvmAbi.KVM_GET_VCPU_MMAP_SIZE),
            (nameof(KvmAbi.KVM_GET_SUPPORTED_CPUID), KvmAbi.KVM_GET_SUPPORTED_CPUID),
            (nameof(KvmAbi.KVM_GET_MSR_INDEX_LIST), KvmAbi.KVM_GET_MSR_INDEX_LIST),
            (nameof(KvmAbi.KVM_CREATE_VCPU), KvmAbi.KVM_CREATE_VCPU),
            (nameof(KvmAbi.KVM_SET_USER_MEMORY_REGION), KvmAbi.KVM_SET_USER_MEMORY_REGION),
            (nameof(KvmAbi.KVM_SET_TSS_ADDR), KvmAbi.KVM_SET_TSS_ADDR),
            (nameof(KvmAbi.KVM_SET_IDENTITY_MAP_ADDR), KvmAbi.KVM_SET_IDENTITY_MAP_ADDR),
            (nameof(KvmAbi.KVM_CREATE_IRQCHIP), KvmAbi.KVM_CREATE_IRQCHIP),
            (nameof(KvmAbi.KVM_CREATE_PIT2), KvmAbi.KVM_CREATE_PIT2),
            (nameof(KvmAbi.KVM_SET_GSI_ROUTING), KvmAbi.KVM_SET_GSI_ROUTING),
            (nameof(KvmAbi.KVM_IRQFD), KvmAbi.KVM_IRQFD),
            (nameof(KvmAbi.KVM_IOEVENTFD), KvmAbi.KVM_IOEVENTFD),
            (nameof(KvmAbi.KVM_IRQ_LINE), KvmAbi.KVM_IRQ_LINE),
            (nameof(KvmAbi.KVM_SIGNAL_MSI), KvmAbi.KVM_SIGNAL_MSI),
            (nameof(KvmAbi.KVM_GET_DIRTY_LOG), KvmAbi.KVM_GET_DIRTY_LOG),
            (nameof(KvmAbi.KVM_GET_CLOCK), KvmAbi.KVM_GET_CLOCK),
            (nameof(KvmAbi.KVM_SET_CLOCK), KvmAbi.KVM_SET_CLOCK),
            (nameof(KvmAbi.KVM_GET_IRQCHIP), KvmAbi.KVM_GET_IRQCHIP),
            (nameof(KvmAbi.KVM_SET_IRQCHIP), KvmAbi.KVM_SET_IRQCHIP),
            (nameof(KvmAbi.KVM_GET_PIT2), KvmAbi.KVM_GET_PIT2),
            (nameof(KvmAbi.KVM_SET_PIT2), KvmAbi.KVM_SET_PIT2),
            (nameof(KvmAbi.KVM_RUN), KvmAbi.KVM_RUN),
            (nameof(KvmAbi.KVM_GET_REGS), KvmAbi.KVM_GET_REGS),
            (nameof(KvmAbi.KVM_SET_REGS), KvmAbi.KVM_SET_REGS),
            (nameof(KvmAbi.KVM_GET_SREGS), KvmAbi.KVM_GET_SREGS),
            (nameof(KvmAbi.KVM_SET_SREGS), KvmAbi.KVM_SET_SREGS),
            (nameof(KvmAbi.KVM_GET_FPU), KvmAbi.KVM_GET_FPU),
            (nameof(KvmAbi.KVM_SET_FPU), KvmAbi.KVM_SET_FPU),
            (nameof(KvmAbi.KVM_GET_XSAVE), KvmAbi.KVM_GET_XSAVE),
            (nameof(KvmAbi.KVM_GET_XSAVE2), KvmAbi.KVM_GET_XSAVE2),
            (nameof(KvmAbi.KVM_SET_XSAVE), KvmAbi.KVM_SET_XSAVE),
            (nameof(KvmAbi.KVM_GET_XCRS), KvmAbi.KVM_GET_XCRS),
            (nameof(KvmAbi.KVM_SET_XCRS), KvmAbi.KVM_SET_XCRS),
            (nameof(KvmAbi.KVM_GET_LAPIC), KvmAbi.KVM_GET_LAPIC),
            (nameof(KvmAbi.KVM_SET_LAPIC), KvmAbi.KVM_SET_LAPIC),
            (nameof(KvmAbi.KVM_GET_MSRS), KvmAbi.KVM_GET_MSRS),
            (nameof(KvmAbi.KVM_SET_MSRS), KvmAbi.KVM_SET_MSRS),
            (nameof(KvmAbi.KVM_GET_VCPU_EVENTS), KvmAbi.KVM_GET_VCPU_EVENTS),
            (nameof(KvmAbi.KVM_SET_VCPU_EVENTS), KvmAbi.KVM_SET_VCPU_EVENTS),
            (nameof(KvmAbi.KVM_GET_DEBUGREGS), KvmAbi.KVM_GET_DEBUGREGS),
            (nameof(KvmAbi.KVM_SET_DEBUGREGS), KvmAbi.KVM_SET_DEBUGREGS),
            (nameof(KvmAbi.KVM_GET_MP_STATE), KvmAbi.KVM_GET_MP_STATE),
            (nameof(KvmAbi.KVM_SET_MP_STATE), KvmAbi.KVM_SET_MP_STATE),
            (nameof(KvmAbi.KVM_GET_CPUID2), KvmAbi.KVM_GET_CPUID2),
            (nameof(KvmAbi.KVM_SET_CPUID2), KvmAbi.KVM_SET_CPUID2),
            (nameof(KvmAbi.KVM_GET_TSC_KHZ), KvmAbi.KVM_GET_TSC_KHZ),
            (nameof(KvmAbi.KVM_SET_TSC_KHZ), KvmAbi.KVM_SET_TSC_KHZ),
        ];
        foreach (var (name, value) in kvm)
        {
            v[name] = value;
        }
        return v;
    }
}
