using System.Text;
using Vireo.Kvm;

namespace Vireo.Vmm;

/// <summary>A register dump in the layout kernel developers know from oopses and QEMU's "info registers".</summary>
public static class RegisterDump
{
    public static string Format(KvmVcpu vcpu)
    {
        var r = vcpu.GetRegs();
        var s = vcpu.GetSregs();
        var b = new StringBuilder();
        b.AppendLine($"vCPU {vcpu.Id} registers:");
        b.AppendLine($"  RIP={r.rip:x16} RFLAGS={r.rflags:x8} RSP={r.rsp:x16} RBP={r.rbp:x16}");
        b.AppendLine($"  RAX={r.rax:x16} RBX={r.rbx:x16} RCX={r.rcx:x16} RDX={r.rdx:x16}");
        b.AppendLine($"  RSI={r.rsi:x16} RDI={r.rdi:x16} R8 ={r.r8:x16} R9 ={r.r9:x16}");
        b.AppendLine($"  R10={r.r10:x16} R11={r.r11:x16} R12={r.r12:x16} R13={r.r13:x16}");
        b.AppendLine($"  R14={r.r14:x16} R15={r.r15:x16}");
        b.AppendLine($"  CS={s.cs.selector:x4} base={s.cs.@base:x} dpl={s.cs.dpl} l={s.cs.l} db={s.cs.db}  SS={s.ss.selector:x4} DS={s.ds.selector:x4}");
        b.AppendLine($"  CR0={s.cr0:x8} CR2={s.cr2:x16} CR3={s.cr3:x16} CR4={s.cr4:x8} EFER={s.efer:x}");
        b.Append($"  GDT={s.gdt.@base:x}/{s.gdt.limit:x} IDT={s.idt.@base:x}/{s.idt.limit:x}");
        return b.ToString();
    }
}
