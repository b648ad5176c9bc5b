using Vireo.Interop;

namespace Vireo.Kvm;

/// <summary>
/// A view of kvm_run after KVM_RUN returned. A ref struct over the mmapped page: reading an
/// exit allocates nothing, and the data span of an I/O exit is written back in place.
/// </summary>
public readonly unsafe ref struct VcpuExit
{
    private readonly kvm_run* _run;
    private readonly int _runSize;

    internal VcpuExit(kvm_run* run, int runSize)
    {
        _run = run;
        _runSize = runSize;
    }

    public uint Reason => _run->exit_reason;

    private byte* Union => (byte*)_run + KvmAbi.RunExitUnionOffset;

    public ref readonly kvm_run_io Io => ref *(kvm_run_io*)Union;
    public ref readonly kvm_run_internal Internal => ref *(kvm_run_internal*)Union;
    public ref readonly kvm_run_fail_entry FailEntry => ref *(kvm_run_fail_entry*)Union;
    public ref readonly kvm_run_system_event SystemEvent => ref *(kvm_run_system_event*)Union;

    /// <summary>The bytes of a port I/O exit (size × count), or empty when KVM's offset is out of the page.</summary>
    public Span<byte> IoData
    {
        get
        {
            var io = (kvm_run_io*)Union;
            ulong length = (ulong)io->size * io->count;
            if (io->data_offset >= (ulong)_runSize || length > (ulong)_runSize - io->data_offset)
            {
                return default;
            }
            // SAFETY: data_offset and length were checked to lie inside the kvm_run mapping.
            return new Span<byte>((byte*)_run + io->data_offset, (int)length);
        }
    }

    public ulong MmioAddress => ((kvm_run_mmio*)Union)->phys_addr;
    public bool MmioIsWrite => ((kvm_run_mmio*)Union)->is_write != 0;

    /// <summary>The 1 to 8 bytes of an MMIO exit.</summary>
    public Span<byte> MmioData
    {
        get
        {
            var mmio = (kvm_run_mmio*)Union;
            // SAFETY: data is an 8-byte array inside kvm_run; len is clamped to it.
            return new Span<byte>(mmio->data, (int)Math.Min(mmio->len, 8u));
        }
    }
}
