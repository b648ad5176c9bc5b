using Vireo.Interop;

namespace Vireo.Kvm;

/// <summary>An open /dev/kvm: the system-level handle that checks capabilities and creates VMs.</summary>
public sealed unsafe class Kvm : IDisposable
{
    public const string DevicePath = "/dev/kvm";

    private readonly FileDescriptor _fd;

    private Kvm(FileDescriptor fd) => _fd = fd;

    /// <summary>Opens /dev/kvm and checks the API version; throws <see cref="KvmUnavailableException"/> when it cannot.</summary>
    public static Kvm Open(string path = DevicePath)
    {
        FileDescriptor fd;
        try
        {
            fd = FileDescriptor.Open(path, Libc.O_RDWR);
        }
        catch (SysError e)
        {
            throw new KvmUnavailableException($"cannot open {path}: {Libc.StrError(e.Errno)}" +
                (e.Errno == Libc.ENOENT ? " (is the kvm module loaded, or is this host without hardware virtualization?)" : ""));
        }
        int version = Libc.Ioctl(fd.Fd, KvmAbi.KVM_GET_API_VERSION, 0);
        if (version != KvmAbi.KVM_API_VERSION)
        {
            fd.Dispose();
            throw new KvmUnavailableException($"{path} speaks KVM API version {version}, Vireo needs {KvmAbi.KVM_API_VERSION}");
        }
        var kvm = new Kvm(fd);
        for (int i = 0; i < RequiredCapabilities.Length; i++)
        {
            if (kvm.CheckExtension(RequiredCapabilities[i]) <= 0)
            {
                kvm.Dispose();
                throw new KvmUnavailableException($"{path} lacks the capability {RequiredCapabilityNames[i]}");
            }
        }
        return kvm;
    }

    /// <summary>True when /dev/kvm can be opened here; otherwise why not.</summary>
    public static bool IsAvailable(out string reason)
    {
        try
        {
            using var kvm = Open();
            reason = "";
            return true;
        }
        catch (KvmUnavailableException e)
        {
            reason = e.Message;
            return false;
        }
    }

    private static readonly int[] RequiredCapabilities =
    [
        KvmAbi.KVM_CAP_IRQCHIP, KvmAbi.KVM_CAP_USER_MEMORY, KvmAbi.KVM_CAP_SET_TSS_ADDR, KvmAbi.KVM_CAP_EXT_CPUID,
        KvmAbi.KVM_CAP_PIT2, KvmAbi.KVM_CAP_IRQFD, KvmAbi.KVM_CAP_IOEVENTFD, KvmAbi.KVM_CAP_IMMEDIATE_EXIT,
    ];

    private static readonly string[] RequiredCapabilityNames =
    [
        "KVM_CAP_IRQCHIP", "KVM_CAP_USER_MEMORY", "KVM_CAP_SET_TSS_ADDR", "KVM_CAP_EXT_CPUID",
        "KVM_CAP_PIT2", "KVM_CAP_IRQFD", "KVM_CAP_IOEVENTFD", "KVM_CAP_IMMEDIATE_EXIT",
    ];

    public int CheckExtension(int capability) => Libc.Ioctl(_fd.Fd, KvmAbi.KVM_CHECK_EXTENSION, (nuint)capability);

    public int MaxVcpus => Math.Max(CheckExtension(KvmAbi.KVM_CAP_MAX_VCPUS), CheckExtension(KvmAbi.KVM_CAP_NR_VCPUS));

    public int VcpuMmapSize => Check.Io(Libc.Ioctl(_fd.Fd, KvmAbi.KVM_GET_VCPU_MMAP_SIZE, 0), "KVM_GET_VCPU_MMAP_SIZE");

    private kvm_cpuid_entry2[]? _supportedCpuid;

    /// <summary>
    /// KVM_GET_SUPPORTED_CPUID: every leaf the host and KVM can offer a guest. Asked once per
    /// /dev/kvm descriptor (the answer is the module's and the CPU's, fixed while it is open) and
    /// then copied: asking took 0.2-1 ms on this nested host (KVM runs CPUID for every leaf), which
    /// a migration's destination paid in the guest's pause when it checked the saved CPU.
    /// </summary>
    public kvm_cpuid_entry2[] GetSupportedCpuid() => (kvm_cpuid_entry2[])(_supportedCpuid ??= AskSupportedCpuid()).Clone();

    private kvm_cpuid_entry2[] AskSupportedCpuid()
    {
        for (int n = 256; ; n *= 2)
        {
            byte[] buf = new byte[sizeof(kvm_cpuid2) + n * sizeof(kvm_cpuid_entry2)];
            fixed (byte* p = buf)
            {
                ((kvm_cpuid2*)p)->nent = (uint)n;
                if (Libc.Ioctl(_fd.Fd, KvmAbi.KVM_GET_SUPPORTED_CPUID, p) == 0)
                {
                    int count = (int)((kvm_cpuid2*)p)->nent;
                    var entries = new kvm_cpuid_entry2[count];
                    fixed (kvm_cpuid_entry2* dst = entries)
                    {
                        // SAFETY: KVM filled count entries after the header; dst holds count entries.
                        Buffer.MemoryCopy(p + sizeof(kvm_cpuid2), dst, count * sizeof(kvm_cpuid_entry2), count * sizeof(kvm_cpuid_entry2));
                    }
                    return entries;
                }
                // E2BIG: the buffer was too small; grow and ask again.
                if (Libc.LastErrno != 7 || n > 4096)
                {
                    throw new SysError("KVM_GET_SUPPORTED_CPUID", Libc.LastErrno);
                }
            }
        }
    }

    /// <summary>KVM_GET_MSR_INDEX_LIST: the MSRs KVM says it saves and restores for a guest.</summary>
    /// <remarks>Not every one is readable and writable on every vCPU; see <see cref="SaveableMsrs"/>.</remarks>
    public uint[] GetMsrIndexList()
    {
        ObjectDisposedException.ThrowIf(_fd.IsClosed, this);
        kvm_msr_list probe = default;
        // With nmsrs 0, KVM answers E2BIG and writes the count it has.
        if (Libc.Ioctl(_fd.Fd, KvmAbi.KVM_GET_MSR_INDEX_LIST, &probe) == 0)
        {
            return [];
        }
        if (Libc.LastErrno != Libc.E2BIG)
        {
            throw new SysError("KVM_GET_MSR_INDEX_LIST", Libc.LastErrno);
        }
        int count = (int)probe.nmsrs;
        if (count > MaxMsrIndices)
        {
            throw new InvalidOperationException($"KVM_GET_MSR_INDEX_LIST lists {count} MSRs, more than the {MaxMsrIndices} Vireo expects");
        }
        byte[] buf = new byte[sizeof(kvm_msr_list) + count * sizeof(uint)];
        fixed (byte* p = buf)
        {
            ((kvm_msr_list*)p)->nmsrs = (uint)count;
            Check.Io(Libc.Ioctl(_fd.Fd, KvmAbi.KVM_GET_MSR_INDEX_LIST, p), "KVM_GET_MSR_INDEX_LIST");
            int filled = (int)((kvm_msr_list*)p)->nmsrs;
            // SAFETY: KVM wrote filled (<= count) indices after the header, and buf holds count of them.
            return new ReadOnlySpan<uint>(p + sizeof(kvm_msr_list), Math.Min(filled, count)).ToArray();
        }
    }

    /// <summary>More MSRs than any KVM lists (about 100 on x86 today); also the bound a saved vCPU's MSR list is held to.</summary>
    public const int MaxMsrIndices = 4096;

    private uint[]? _saveableWithLapic, _saveableWithoutLapic;

    /// <summary>
    /// The MSRs of <see cref="GetMsrIndexList"/> that a vCPU of this host both reads
    /// (KVM_GET_MSRS) and takes back (KVM_SET_MSRS): what a vCPU's state holds. Found once per
    /// kind of vCPU (with or without an in-kernel LAPIC) on a scratch VM, and cached.
    /// </summary>
    /// <remarks>
    /// Readable is not enough: without an in-kernel LAPIC, KVM reads MSR_KVM_ASYNC_PF_INT but
    /// refuses any write to it, so a state holding it could never be restored. The probe runs on
    /// a scratch vCPU because writing an MSR back (the TSC above all) is not free on a live one.
    /// </remarks>
    internal uint[] SaveableMsrs(bool withLapic)
    {
        ref uint[]? slot = ref withLapic ? ref _saveableWithLapic : ref _saveableWithoutLapic;
        var cached = Volatile.Read(ref slot);
        if (cached is null)
        {
            cached = ProbeSaveableMsrs(withLapic);
            Volatile.Write(ref slot, cached);
        }
        return cached;
    }

    private uint[] ProbeSaveableMsrs(bool withLapic)
    {
        ObjectDisposedException.ThrowIf(_fd.IsClosed, this); // a vCPU outlived its Kvm: never ioctl a stale fd number
        var vm = CreateVm();
        KvmVcpu? vcpu = null;
        try
        {
            if (withLapic)
            {
                vm.CreateIrqchip();
            }
            vcpu = vm.CreateVcpu(0);
            // Every feature the host offers, so an MSR that only exists with a CPUID bit is probed too.
            vcpu.SetCpuid(GetSupportedCpuid());
            var readable = vcpu.GetReadableMsrs(GetMsrIndexList());
            return vcpu.SetAcceptedMsrs(readable);
        }
        finally
        {
            // Tearing a VM down takes KVM 14-17 ms on this host (bench/README.md): off the first
            // snapshot's path, since nothing waits for the scratch VM to be gone.
            var scratch = (vm, vcpu);
            ThreadPool.UnsafeQueueUserWorkItem(static s =>
            {
                s.vcpu?.Dispose();
                s.vm.Dispose();
            }, scratch, preferLocal: false);
        }
    }

    public KvmVm CreateVm()
    {
        int vmfd = Check.Io(Libc.Ioctl(_fd.Fd, KvmAbi.KVM_CREATE_VM, 0), "KVM_CREATE_VM");
        return new KvmVm(this, new FileDescriptor(vmfd), VcpuMmapSize);
    }

    public void Dispose() => _fd.Dispose();
}

/// <summary>/dev/kvm is absent, closed to us, or too old: the one error a caller may treat as "skip".</summary>
public sealed class KvmUnavailableException(string message) : Exception(message);
