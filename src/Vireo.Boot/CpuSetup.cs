using Vireo.Interop;

namespace Vireo.Boot;

/// <summary>The register state the boot vCPU starts with, set by Vireo instead of a BIOS.</summary>
public readonly record struct BootCpuState(kvm_regs Regs, ushort CodeSelector, ulong Cr0, ulong Cr3, ulong Cr4, ulong Efer)
{
    /// <summary>Writes the segments, descriptor tables and control registers into <paramref name="sr"/>, keeping the rest.</summary>
    public void ApplyTo(ref kvm_sregs sr)
    {
        sr.cs = Gdt.Segment(CodeSelector);
        var data = Gdt.Segment(Gdt.DataSelector);
        sr.ds = sr.es = sr.fs = sr.gs = sr.ss = data;
        sr.tr = Gdt.Segment(Gdt.TssSelector);
        sr.gdt = new kvm_dtable { @base = BootLayout.GdtAddr, limit = (ushort)(Gdt.Entries.Length * 8 - 1) };
        sr.idt = new kvm_dtable { @base = BootLayout.IdtAddr, limit = 0 };
        sr.cr0 = Cr0;
        sr.cr3 = Cr3;
        sr.cr4 = Cr4;
        sr.efer = Efer;
    }
}

public static class CpuSetup
{
    public const ulong CR0_PE = 1, CR0_ET = 0x10, CR0_NE = 0x20, CR0_PG = 0x8000_0000;
    public const ulong CR4_PAE = 0x20;
    public const ulong EFER_LME = 0x100, EFER_LMA = 0x400;

    /// <summary>PVH: 32-bit flat protected mode, paging off, EBX = start info.</summary>
    public static BootCpuState Pvh(ulong entry, ulong startInfo) => new(
        new kvm_regs { rip = entry, rbx = startInfo, rflags = 2 },
        Gdt.Code32Selector, CR0_PE | CR0_ET | CR0_NE, 0, 0, 0);

    /// <summary>Linux 64-bit boot protocol: long mode on identity page tables, RSI = boot_params.</summary>
    public static BootCpuState Linux64(ulong entry, ulong zeroPage) => new(
        new kvm_regs { rip = entry, rsi = zeroPage, rsp = BootLayout.BootStackTop, rbp = BootLayout.BootStackTop, rflags = 2 },
        Gdt.Code64Selector, CR0_PE | CR0_ET | CR0_NE | CR0_PG, BootLayout.Pml4Addr, CR4_PAE, EFER_LME | EFER_LMA);
}
