using Vireo.Interop;
using Vireo.Memory;

namespace Vireo.Kvm.Tests;

/// <summary>
/// A VM with no irqchip and 1 MiB of RAM running a few bytes of real-mode code at 0x1000:
/// small enough to exercise one KVM feature at a time. Without an irqchip HLT exits to us; with
/// one (and optionally a PIT) the vCPU has a LAPIC and HLT stays in KVM, so tests exit by port I/O.
/// </summary>
internal sealed class BareVm : IDisposable
{
    public Kvm Kvm { get; } = Kvm.Open();
    public KvmVm Vm { get; }
    public GuestMemory Memory { get; }
    public KvmVcpu Vcpu { get; }

    public BareVm(byte[] code, bool logDirty = false, ulong ramBytes = 1 << 20, bool irqchip = false, bool pit = false, int vcpuId = 0)
    {
        Vm = Kvm.CreateVm();
        Vm.SetTssAddress(MemoryLayout.KvmTssAddr);
        Memory = new GuestMemory([GuestRegion.Allocate(new GuestAddress(0), ramBytes)]);
        Memory.Write(new GuestAddress(0x1000), code);
        Vm.RegisterMemory(Memory, logDirty);
        if (irqchip)
        {
            Vm.CreateIrqchip();
        }
        if (pit)
        {
            Vm.CreatePit2();
        }
        Vcpu = Vm.CreateVcpu(vcpuId);
        var sregs = Vcpu.GetSregs();
        sregs.cs.@base = 0;
        sregs.cs.selector = 0;
        sregs.ds.@base = 0;
        sregs.ds.selector = 0;
        Vcpu.SetSregs(sregs);
        Vcpu.SetRegs(new kvm_regs { rip = 0x1000, rflags = 2 });
    }

    /// <summary>Runs to the next exit and returns its reason; fails the test on an ioctl error.</summary>
    public uint RunToExit()
    {
        Assert.True(Vcpu.TryRun(out int errno), $"KVM_RUN failed with errno {errno}");
        return Vcpu.Exit.Reason;
    }

    public void Dispose()
    {
        Vcpu.Dispose();
        Vm.Dispose();
        Memory.Dispose();
        Kvm.Dispose();
    }
}
