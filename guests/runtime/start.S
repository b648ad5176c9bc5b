/*
 * Entry and CPU plumbing for the test guests: the PVH note and 32-bit entry, static
 * identity page tables, long mode, the GDT, interrupt stubs, the drop to CPL3, the AP
 * trampoline and catch_exception. Everything here runs at CPL0, which this project's
 * CI host emulates slowly, so it stays short.
 */
#define MAX_CPUS 16
#define KSTACK_SHIFT 14
#define AP_TRAMP_ADDR 0x8000

    .section .note.Xen, "a", @note
    .align 4
    .long 4, 4, 18              /* namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long _start32

    .section .text.start, "ax"
    .code32
    .globl _start32
_start32:
    cli
    movl %ebx, pvh_start_info
    lgdt gdt_ptr
    movl $pml4, %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $0x620, %eax            /* PAE | OSFXSR | OSXMMEXCPT */
    movl %eax, %cr4
    movl $0xc0000080, %ecx      /* EFER.LME */
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax       /* PG | PE */
    andl $0x9fffffff, %eax      /* caches on */
    movl %eax, %cr0
    ljmp $0x08, $_start64

    .code64
_start64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorl %eax, %eax
    movw %ax, %fs
    movw %ax, %gs
    movl $0xfee00020, %eax      /* local APIC id */
    movl (%rax), %eax
    shrl $24, %eax
    movl %eax, boot_cpu(%rip)
    jmp cpu_common

    .globl ap_entry64
ap_entry64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl $0xfee00020, %eax
    movl (%rax), %eax
    shrl $24, %eax
cpu_common:
    cmpl $MAX_CPUS, %eax
    jae die
    movl %eax, %edi
    leal 1(%rax), %eax
    shlq $KSTACK_SHIFT, %rax
    leaq kstacks(%rip), %rsp
    addq %rax, %rsp
    call kernel_entry
die:
    cli
    hlt
    jmp die

/* enter_user(rip, rsp, arg): iretq to CPL3 with IOPL=3 and interrupts off. */
    .globl enter_user
enter_user:
    pushq $0x23
    pushq %rsi
    pushq $0x3002
    pushq $0x2b
    pushq %rdi
    movq %rdx, %rdi
    movw $0x23, %ax
    movw %ax, %ds
    movw %ax, %es
    iretq

/* Interrupt stubs, 16 bytes apart: push a zero error code where the CPU pushes none, then the vector. */
    .altmacro
    .macro ISR_STUB n
    .align 16
    .if (\n == 8) || ((\n >= 10) && (\n <= 14)) || (\n == 17) || (\n == 21) || (\n == 29) || (\n == 30)
    .else
    pushq $0
    .endif
    pushq $\n
    jmp isr_common
    .endm

    .align 16
    .globl isr_stubs
isr_stubs:
    .set vec, 0
    .rept 256
    ISR_STUB %vec
    .set vec, vec + 1
    .endr

isr_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, %rdi
    cld
    call isr_dispatch
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $16, %rsp
    iretq

/* int catch_exception(void (*fn)(void)): CPL3; the exception handler resumes at catch_landing. */
    .globl catch_exception, catch_landing
catch_exception:
    pushq %rbx
    pushq %rbp
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    movq %rdi, %rbx
    call cpu_id
    movslq %eax, %r12
    leaq catch_rsp(%rip), %rcx
    movq %rsp, (%rcx,%r12,8)
    leaq catch_armed(%rip), %rcx
    movq $1, (%rcx,%r12,8)
    call *%rbx
    leaq catch_armed(%rip), %rcx
    movq $0, (%rcx,%r12,8)
    movl $-1, %eax
catch_landing:
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbp
    popq %rbx
    ret

/* The AP trampoline: copied to 0x8000, entered in real mode by a SIPI with vector 0x08. */
    .section .data.tramp, "aw"
    .globl ap_tramp_start, ap_tramp_end
    .code16
ap_tramp_start:
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds
    lgdtl (tramp_gdtr - ap_tramp_start)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x18, $(AP_TRAMP_ADDR + tramp32 - ap_tramp_start)
    .code32
tramp32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl $pml4, %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $0x620, %eax
    movl %eax, %cr4
    movl $0xc0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80000000, %eax
    andl $0x9fffffff, %eax
    movl %eax, %cr0
    ljmp $0x08, $(AP_TRAMP_ADDR + tramp64 - ap_tramp_start)
    .code64
tramp64:
    movabsq $ap_entry64, %rax
    jmp *%rax
    .align 8
tramp_gdtr:
    .word gdt_end - gdt - 1
    .long gdt
ap_tramp_end:

    .section .data, "aw"
    .align 16
    .globl gdt, gdt_end
gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08 kernel code, 64-bit */
    .quad 0x00cf92000000ffff    /* 0x10 kernel data */
    .quad 0x00cf9a000000ffff    /* 0x18 kernel code, 32-bit (AP trampoline) */
    .quad 0x00cff2000000ffff    /* 0x20 user data */
    .quad 0x00affa000000ffff    /* 0x28 user code, 64-bit */
    .fill MAX_CPUS * 2, 8, 0    /* 0x30: one 16-byte TSS descriptor a CPU */
gdt_end:
    .align 8
    .globl gdt_ptr
gdt_ptr:
    .word gdt_end - gdt - 1
    .quad gdt
    .globl pvh_start_info, boot_cpu
pvh_start_info:
    .quad 0
boot_cpu:
    .long 0

/*
 * Identity map: the first 16 GiB in 2 MiB pages, all user-accessible. (1 GiB pages would be
 * smaller, but not every KVM offers pdpe1gb to its guests.)
 */
#define MAPPED_GIB 16
    .section .data.pt, "aw"
    .align 4096
    .globl pml4
pml4:
    .quad pdpt + 0x7
    .fill 511, 8, 0
pdpt:
    .set gb, 0
    .rept MAPPED_GIB
    .quad pd + (gb << 12) + 0x7
    .set gb, gb + 1
    .endr
    .fill 512 - MAPPED_GIB, 8, 0
pd:
    .set mb2, 0
    .rept MAPPED_GIB * 512
    .quad (mb2 << 21) | 0x87
    .set mb2, mb2 + 1
    .endr

    .section .bss
    .align 4096
    .globl kstacks
kstacks:
    .skip MAX_CPUS << KSTACK_SHIFT
    .globl catch_rsp, catch_armed
catch_rsp:
    .skip MAX_CPUS * 8
catch_armed:
    .skip MAX_CPUS * 8
