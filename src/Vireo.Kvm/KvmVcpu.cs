using System.Runtime.InteropServices;
using Vireo.Interop;

namespace Vireo.Kvm;

/// <summary>A vCPU file descriptor and its mmapped kvm_run page. Created only by <see cref="KvmVm"/>.</summary>
public sealed unsafe partial class KvmVcpu : IDisposable
{
    private readonly FileDescriptor _fd;
    private readonly int _runSize;
    private kvm_run* _run;
    private readonly int _rawFd;
    private bool _fdRefAdded;

    private readonly Kvm _kvm;

    public int Id { get; }

    /// <summary>Bytes of this vCPU's XSAVE area as KVM moves it: KVM_CAP_XSAVE2's size, at least the 4 KiB kvm_xsave.</summary>
    public int XsaveSize { get; }

    /// <summary>True when the VM has an in-kernel irqchip, so this vCPU has a LAPIC that KVM_GET/SET_LAPIC reach.</summary>
    public bool HasLapic { get; }

    internal KvmVcpu(int id, FileDescriptor fd, int runSize, Kvm kvm, int xsaveSize, bool hasLapic)
    {
        Id = id;
        _kvm = kvm;
        XsaveSize = xsaveSize;
        HasLapic = hasLapic;
        _fd = fd;
        _runSize = runSize;
        nint p = Libc.Mmap(0, (nuint)runSize, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, fd.Fd, 0);
        if (p == Libc.MAP_FAILED)
        {
            int errno = Libc.LastErrno;
            fd.Dispose();
            throw new SysError("mmap(kvm_run)", errno);
        }
        _run = (kvm_run*)p;
        // The fd is borrowed for the vCPU's lifetime so the hot path uses the raw number.
        fd.DangerousAddRef(ref _fdRefAdded);
        _rawFd = fd.Fd;
    }

    /// <summary>Enters the guest until the next exit to userspace. False with errno on failure (EINTR: kicked).</summary>
    public bool TryRun(out int errno)
    {
        if (Libc.Ioctl(_rawFd, KvmAbi.KVM_RUN, 0) == 0)
        {
            errno = 0;
            return true;
        }
        errno = Libc.LastErrno;
        return false;
    }

    /// <summary>The exit KVM_RUN just returned, read in place from kvm_run.</summary>
    public VcpuExit Exit => new(_run, _runSize);

    /// <summary>When set, the next KVM_RUN returns EINTR at once: half of a kick.</summary>
    public bool ImmediateExit
    {
        get => Volatile.Read(ref _run->immediate_exit) != 0;
        set => Volatile.Write(ref _run->immediate_exit, value ? (byte)1 : (byte)0);
    }

    public kvm_regs GetRegs() { kvm_regs r; Get(KvmAbi.KVM_GET_REGS, &r, "KVM_GET_REGS"); return r; }
    public void SetRegs(in kvm_regs r) { fixed (kvm_regs* p = &r) { Get(KvmAbi.KVM_SET_REGS, p, "KVM_SET_REGS"); } }
    public kvm_sregs GetSregs() { kvm_sregs r; Get(KvmAbi.KVM_GET_SREGS, &r, "KVM_GET_SREGS"); return r; }
    public void SetSregs(in kvm_sregs r) { fixed (kvm_sregs* p = &r) { Get(KvmAbi.KVM_SET_SREGS, p, "KVM_SET_SREGS"); } }
    public kvm_fpu GetFpu() { kvm_fpu r; Get(KvmAbi.KVM_GET_FPU, &r, "KVM_GET_FPU"); return r; }
    public void SetFpu(in kvm_fpu r) { fixed (kvm_fpu* p = &r) { Get(KvmAbi.KVM_SET_FPU, p, "KVM_SET_FPU"); } }
    public kvm_lapic_state GetLapic() { kvm_lapic_state r; Get(KvmAbi.KVM_GET_LAPIC, &r, "KVM_GET_LAPIC"); return r; }
    public void SetLapic(in kvm_lapic_state r) { fixed (kvm_lapic_state* p = &r) { Get(KvmAbi.KVM_SET_LAPIC, p, "KVM_SET_LAPIC"); } }
    public kvm_xsave GetXsave() { kvm_xsave r; Get(KvmAbi.KVM_GET_XSAVE, &r, "KVM_GET_XSAVE"); return r; }
    public void SetXsave(in kvm_xsave r) { fixed (kvm_xsave* p = &r) { Get(KvmAbi.KVM_SET_XSAVE, p, "KVM_SET_XSAVE"); } }

    /// <summary>The whole XSAVE area, <see cref="XsaveSize"/> bytes: KVM_GET_XSAVE2 when that is larger than kvm_xsave, else KVM_GET_XSAVE.</summary>
    public byte[] GetXsaveBytes()
    {
        byte[] area = new byte[XsaveSize];
        fixed (byte* p = area)
        {
            // SAFETY: both ioctls write at most XsaveSize bytes (KVM_CAP_XSAVE2's size, or sizeof(kvm_xsave)), area's length.
            if (XsaveSize > sizeof(kvm_xsave))
            {
                Get(KvmAbi.KVM_GET_XSAVE2, p, "KVM_GET_XSAVE2");
            }
            else
            {
                Get(KvmAbi.KVM_GET_XSAVE, p, "KVM_GET_XSAVE");
            }
        }
        return area;
    }

    /// <summary>KVM_SET_XSAVE, which reads <see cref="XsaveSize"/> bytes; a shorter area is zero-filled (its XSTATE_BV names what it holds).</summary>
    public void SetXsaveBytes(ReadOnlySpan<byte> area)
    {
        if (area.Length > XsaveSize)
        {
            throw new ArgumentException($"the XSAVE area is {area.Length} bytes, this host's KVM takes at most {XsaveSize}", nameof(area));
        }
        byte[] buf = new byte[XsaveSize];
        area.CopyTo(buf);
        fixed (byte* p = buf)
        {
            // SAFETY: KVM_SET_XSAVE reads XsaveSize bytes, buf's length.
            Get(KvmAbi.KVM_SET_XSAVE, p, "KVM_SET_XSAVE");
        }
    }

    public kvm_xcrs GetXcrs() { kvm_xcrs r; Get(KvmAbi.KVM_GET_XCRS, &r, "KVM_GET_XCRS"); return r; }
    public void SetXcrs(in kvm_xcrs r) { fixed (kvm_xcrs* p = &r) { Get(KvmAbi.KVM_SET_XCRS, p, "KVM_SET_XCRS"); } }
    public kvm_debugregs GetDebugregs() { kvm_debugregs r; Get(KvmAbi.KVM_GET_DEBUGREGS, &r, "KVM_GET_DEBUGREGS"); return r; }
    public void SetDebugregs(in kvm_debugregs r) { fixed (kvm_debugregs* p = &r) { Get(KvmAbi.KVM_SET_DEBUGREGS, p, "KVM_SET_DEBUGREGS"); } }
    public kvm_vcpu_events GetVcpuEvents() { kvm_vcpu_events r; Get(KvmAbi.KVM_GET_VCPU_EVENTS, &r, "KVM_GET_VCPU_EVENTS"); return r; }
    public void SetVcpuEvents(in kvm_vcpu_events r) { fixed (kvm_vcpu_events* p = &r) { Get(KvmAbi.KVM_SET_VCPU_EVENTS, p, "KVM_SET_VCPU_EVENTS"); } }

    /// <summary>KVM_GET_TSC_KHZ: the rate of this vCPU's TSC (the host's unless it was set).</summary>
    public uint GetTscKhz() => (uint)Check.Io(Libc.Ioctl(_rawFd, KvmAbi.KVM_GET_TSC_KHZ, 0), "KVM_GET_TSC_KHZ");

    /// <summary>KVM_SET_TSC_KHZ: KVM scales the TSC (KVM_CAP_TSC_CONTROL), accepts a rate within 250 ppm, or refuses.</summary>
    public void SetTscKhz(uint khz) => Check.Io(Libc.Ioctl(_rawFd, KvmAbi.KVM_SET_TSC_KHZ, khz), "KVM_SET_TSC_KHZ");

    /// <summary>KVM_GET_CPUID2: KVM's view of this vCPU's CPUID (none until <see cref="SetCpuid"/>); see <see cref="CpuidSet"/> for why state uses that instead.</summary>
    public kvm_cpuid_entry2[] GetCpuid()
    {
        for (int n = 256; ; n *= 2)
        {
            byte[] buf = new byte[sizeof(kvm_cpuid2) + n * sizeof(kvm_cpuid_entry2)];
            fixed (byte* p = buf)
            {
                ((kvm_cpuid2*)p)->nent = (uint)n;
                if (Libc.Ioctl(_rawFd, KvmAbi.KVM_GET_CPUID2, p) == 0)
                {
                    int count = Math.Min((int)((kvm_cpuid2*)p)->nent, n);
                    // SAFETY: KVM wrote count (<= n) entries after the header, all inside buf.
                    return new ReadOnlySpan<kvm_cpuid_entry2>(p + sizeof(kvm_cpuid2), count).ToArray();
                }
                if (Libc.LastErrno != Libc.E2BIG || n >= 4096)
                {
                    throw new SysError("KVM_GET_CPUID2", Libc.LastErrno);
                }
            }
        }
    }

    public uint GetMpState() { kvm_mp_state s; Get(KvmAbi.KVM_GET_MP_STATE, &s, "KVM_GET_MP_STATE"); return s.mp_state; }
    public void SetMpState(uint state) { var s = new kvm_mp_state { mp_state = state }; Get(KvmAbi.KVM_SET_MP_STATE, &s, "KVM_SET_MP_STATE"); }

    private kvm_cpuid_entry2[] _cpuid = [];

    /// <summary>
    /// The CPUID entries last given to <see cref="SetCpuid"/>: what a saved vCPU carries. Not
    /// KVM_GET_CPUID2's answer, which KVM edits at run time (OSXSAVE, the XSAVE size in 0xd.0)
    /// and which on some hosts names more features than were set.
    /// </summary>
    public kvm_cpuid_entry2[] CpuidSet => (kvm_cpuid_entry2[])_cpuid.Clone();

    /// <summary>True when <paramref name="entries"/> are, byte for byte, what <see cref="SetCpuid"/> was last given.</summary>
    public bool CpuidIs(ReadOnlySpan<kvm_cpuid_entry2> entries) =>
        _cpuid.Length > 0 && MemoryMarshal.AsBytes(entries).SequenceEqual(MemoryMarshal.AsBytes(_cpuid.AsSpan()));

    public void SetCpuid(kvm_cpuid_entry2[] entries)
    {
        int bytes = entries.Length * sizeof(kvm_cpuid_entry2);
        byte[] buf = new byte[sizeof(kvm_cpuid2) + bytes];
        fixed (byte* p = buf)
        fixed (kvm_cpuid_entry2* src = entries)
        {
            ((kvm_cpuid2*)p)->nent = (uint)entries.Length;
            // SAFETY: buf has room for the header and every entry.
            Buffer.MemoryCopy(src, p + sizeof(kvm_cpuid2), bytes, bytes);
            Get(KvmAbi.KVM_SET_CPUID2, p, "KVM_SET_CPUID2");
        }
        _cpuid = (kvm_cpuid_entry2[])entries.Clone();
    }

    /// <summary>KVM_SET_MSRS; throws unless every entry was accepted.</summary>
    public void SetMsrs(kvm_msr_entry[] entries)
    {
        int n = MsrIoctl(KvmAbi.KVM_SET_MSRS, entries, "KVM_SET_MSRS");
        if (n != entries.Length)
        {
            throw new InvalidOperationException($"KVM_SET_MSRS accepted {n} of {entries.Length} MSRs; MSR 0x{entries[n].index:x} was refused");
        }
    }

    /// <summary>KVM_GET_MSRS for the given indices; returns the entries KVM filled.</summary>
    public kvm_msr_entry[] GetMsrs(uint[] indices)
    {
        var entries = new kvm_msr_entry[indices.Length];
        for (int i = 0; i < indices.Length; i++)
        {
            entries[i].index = indices[i];
        }
        int n = MsrIoctl(KvmAbi.KVM_GET_MSRS, entries, "KVM_GET_MSRS");
        Array.Resize(ref entries, n);
        return entries;
    }

    /// <summary>
    /// KVM_GET_MSRS over <paramref name="indices"/>, skipping each MSR it cannot read: KVM fills
    /// entries in order and stops at the first it refuses, so the call resumes after that one.
    /// </summary>
    public kvm_msr_entry[] GetReadableMsrs(uint[] indices)
    {
        var read = new List<kvm_msr_entry>(indices.Length);
        int start = 0;
        while (start < indices.Length)
        {
            var got = GetMsrs(indices[start..]);
            read.AddRange(got);
            start += got.Length + 1; // the one after those KVM filled was refused
        }
        return [.. read];
    }

    /// <summary>KVM_SET_MSRS, skipping each MSR KVM refuses as <see cref="GetReadableMsrs"/> does; returns the indices it took.</summary>
    internal uint[] SetAcceptedMsrs(kvm_msr_entry[] entries)
    {
        var accepted = new List<uint>(entries.Length);
        int start = 0;
        while (start < entries.Length)
        {
            var rest = entries[start..];
            int n = MsrIoctl(KvmAbi.KVM_SET_MSRS, rest, "KVM_SET_MSRS");
            for (int i = 0; i < n; i++)
            {
                accepted.Add(rest[i].index);
            }
            start += n + 1;
        }
        return [.. accepted];
    }

    private int MsrIoctl(nuint request, kvm_msr_entry[] entries, string name)
    {
        int bytes = entries.Length * sizeof(kvm_msr_entry);
        byte[] buf = new byte[sizeof(kvm_msrs) + bytes];
        fixed (byte* p = buf)
        fixed (kvm_msr_entry* e = entries)
        {
            ((kvm_msrs*)p)->nmsrs = (uint)entries.Length;
            // SAFETY: buf holds the header and every entry; e holds entries.Length entries.
            Buffer.MemoryCopy(e, p + sizeof(kvm_msrs), bytes, bytes);
            int n = Check.Io(Libc.Ioctl(_rawFd, request, p), name);
            Buffer.MemoryCopy(p + sizeof(kvm_msrs), e, bytes, bytes);
            return n;
        }
    }

    private void Get(nuint request, void* arg, string name) => Check.Io(Libc.Ioctl(_rawFd, request, arg), name);

    public void Dispose()
    {
        var run = _run;
        _run = null;
        if (run != null)
        {
            _ = Libc.Munmap((nint)run, (nuint)_runSize);
        }
        if (_fdRefAdded)
        {
            _fd.DangerousRelease();
            _fdRefAdded = false;
        }
        _fd.Dispose();
    }
}
