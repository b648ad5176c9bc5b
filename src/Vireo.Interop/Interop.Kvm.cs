using System.Runtime.InteropServices;

namespace Vireo.Interop;

// Mirrors <linux/kvm.h> and <asm/kvm.h> for x86_64. Sizes and offsets are checked against
// the kernel headers by Vireo.Interop.Tests/KvmAbiTests, which compiles a C program.

[StructLayout(LayoutKind.Sequential)]
public struct kvm_regs
{
    public ulong rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp;
    public ulong r8, r9, r10, r11, r12, r13, r14, r15;
    public ulong rip, rflags;
}

[StructLayout(LayoutKind.Sequential)]
public struct kvm_segment
{
    public ulong @base;
    public uint limit;
    public ushort selector;
    public byte type, present, dpl, db, s, l, g, avl, unusable, padding;
}

[StructLayout(LayoutKind.Sequential)]
public struct kvm_dtable
{
    public ulong @base;
    public ushort limit;
    public ushort padding0, padding1, padding2;
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_sregs
{
    public kvm_segment cs, ds, es, fs, gs, ss, tr, ldt;
    public kvm_dtable gdt, idt;
    public ulong cr0, cr2, cr3, cr4, cr8, efer, apic_base;
    public fixed ulong interrupt_bitmap[4];
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_fpu
{
    public fixed byte fpr[128];
    public ushort fcw, fsw;
    public byte ftwx, pad1;
    public ushort last_opcode;
    public ulong last_ip, last_dp;
    public fixed byte xmm[256];
    public uint mxcsr, pad2;
}

[StructLayout(LayoutKind.Sequential)]
public struct kvm_msr_entry
{
    public uint index, reserved;
    public ulong data;
}

/// <summary>Header of struct kvm_msrs; the entries follow it.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct kvm_msrs
{
    public uint nmsrs, pad;
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_cpuid_entry2
{
    public uint function, index, flags, eax, ebx, ecx, edx;
    public fixed uint padding[3];
}

/// <summary>Header of struct kvm_cpuid2; the entries follow it.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct kvm_cpuid2
{
    public uint nent, padding;
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_lapic_state
{
    public fixed byte regs[1024];
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_pit_config
{
    public uint flags;
    public fixed uint pad[15];
}

[StructLayout(LayoutKind.Sequential)]
public struct kvm_userspace_memory_region
{
    public uint slot, flags;
    public ulong guest_phys_addr, memory_size, userspace_addr;
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_irqfd
{
    public uint fd, gsi, flags, resamplefd;
    public fixed byte pad[16];
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_ioeventfd
{
    public ulong datamatch, addr;
    public uint len;
    public int fd;
    public uint flags;
    public fixed byte pad[36];
}

[StructLayout(LayoutKind.Sequential)]
public struct kvm_dirty_log
{
    public uint slot, padding1;
    public ulong dirty_bitmap;
}

[StructLayout(LayoutKind.Sequential)]
public struct kvm_irq_level
{
    public uint irq, level;
}

/// <summary>struct kvm_irq_routing_entry: the union u is an irqchip pin (chip, pin) or an MSI (address_lo, address_hi, data).</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_irq_routing_entry
{
    public uint gsi, type, flags, pad;
    public fixed uint u[8];
}

/// <summary>Header of struct kvm_irq_routing; the entries follow it.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct kvm_irq_routing
{
    public uint nr, flags;
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_msi
{
    public uint address_lo, address_hi, data, flags, devid;
    public fixed byte pad[12];
}

[StructLayout(LayoutKind.Sequential)]
public struct kvm_mp_state
{
    public uint mp_state;
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_xsave
{
    public fixed uint region[1024];
}

/// <summary>Header of struct kvm_msr_list; the MSR indices (u32) follow it.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct kvm_msr_list
{
    public uint nmsrs;
}

[StructLayout(LayoutKind.Sequential)]
public struct kvm_xcr
{
    public uint xcr, reserved;
    public ulong value;
}

/// <summary>struct kvm_xcrs: xcrs[KVM_MAX_XCRS] is held as raw words; <see cref="Get"/> and <see cref="Set"/> give typed access.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_xcrs
{
    public uint nr_xcrs, flags;
    public fixed ulong xcrs[KvmAbi.KVM_MAX_XCRS * 2];
    public fixed ulong padding[16];

    public readonly kvm_xcr Get(int i)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(i);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(i, KvmAbi.KVM_MAX_XCRS);
        return new kvm_xcr { xcr = (uint)xcrs[2 * i], reserved = (uint)(xcrs[2 * i] >> 32), value = xcrs[2 * i + 1] };
    }

    public void Set(int i, in kvm_xcr x)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(i);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(i, KvmAbi.KVM_MAX_XCRS);
        xcrs[2 * i] = x.xcr | ((ulong)x.reserved << 32);
        xcrs[2 * i + 1] = x.value;
    }
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_debugregs
{
    public fixed ulong db[4];
    public ulong dr6, dr7, flags;
    public fixed ulong reserved[9];

    /// <summary>DR0..DR3, for code without unsafe.</summary>
    public readonly ulong GetDb(int i) => (uint)i < 4 ? db[i] : throw new ArgumentOutOfRangeException(nameof(i));

    public void SetDb(int i, ulong value) => db[(uint)i < 4 ? i : throw new ArgumentOutOfRangeException(nameof(i))] = value;
}

[StructLayout(LayoutKind.Sequential)]
public struct kvm_vcpu_events_exception
{
    public byte injected, nr, has_error_code, pending;
    public uint error_code;
}

[StructLayout(LayoutKind.Sequential)]
public struct kvm_vcpu_events_interrupt
{
    public byte injected, nr, soft, shadow;
}

[StructLayout(LayoutKind.Sequential)]
public struct kvm_vcpu_events_nmi
{
    public byte injected, pending, masked, pad;
}

[StructLayout(LayoutKind.Sequential)]
public struct kvm_vcpu_events_smi
{
    public byte smm, pending, smm_inside_nmi, latched_init;
}

[StructLayout(LayoutKind.Sequential)]
public struct kvm_vcpu_events_triple_fault
{
    public byte pending;
}

/// <summary>struct kvm_vcpu_events; its anonymous member structs are the kvm_vcpu_events_* types.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_vcpu_events
{
    public kvm_vcpu_events_exception exception;
    public kvm_vcpu_events_interrupt interrupt;
    public kvm_vcpu_events_nmi nmi;
    public uint sipi_vector, flags;
    public kvm_vcpu_events_smi smi;
    public kvm_vcpu_events_triple_fault triple_fault;
    public fixed byte reserved[26];
    public byte exception_has_payload;
    public ulong exception_payload;
}

[StructLayout(LayoutKind.Sequential)]
public struct kvm_pic_state
{
    public byte last_irr, irr, imr, isr, priority_add, irq_base, read_reg_select, poll, special_mask,
        init_state, auto_eoi, rotate_on_auto_eoi, special_fully_nested_mode, init4, elcr, elcr_mask;
}

/// <summary>struct kvm_ioapic_state; each redirtbl entry is the 64-bit redirection register.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_ioapic_state
{
    public ulong base_address;
    public uint ioregsel, id, irr, pad;
    public fixed ulong redirtbl[KvmAbi.KVM_IOAPIC_NUM_PINS];
}

/// <summary>struct kvm_irqchip: chip is the 512-byte union of kvm_pic_state and kvm_ioapic_state.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_irqchip
{
    public uint chip_id, pad;
    public fixed byte chip[KvmAbi.IrqchipPayloadSize];
}

[StructLayout(LayoutKind.Sequential)]
public struct kvm_pit_channel_state
{
    public uint count;
    public ushort latched_count;
    public byte count_latched, status_latched, status, read_state, write_state, write_latch, rw_mode, mode, bcd, gate;
    public long count_load_time;
}

/// <summary>struct kvm_pit_state2; channels[3] is channel0..channel2.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_pit_state2
{
    public kvm_pit_channel_state channel0, channel1, channel2;
    public uint flags;
    public fixed uint reserved[9];
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_clock_data
{
    public ulong clock;
    public uint flags, pad0;
    public ulong realtime, host_tsc;
    public fixed uint pad[4];
}

/// <summary>The fixed head of struct kvm_run; the exit union starts at <see cref="KvmAbi.RunExitUnionOffset"/>.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_run
{
    public byte request_interrupt_window, immediate_exit;
    public fixed byte padding1[6];
    public uint exit_reason;
    public byte ready_for_interrupt_injection, if_flag;
    public ushort flags;
    public ulong cr8, apic_base;
}

[StructLayout(LayoutKind.Sequential)]
public struct kvm_run_io
{
    public byte direction, size;
    public ushort port;
    public uint count;
    public ulong data_offset;
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_run_mmio
{
    public ulong phys_addr;
    public fixed byte data[8];
    public uint len;
    public byte is_write;
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_run_internal
{
    public uint suberror, ndata;
    public fixed ulong data[16];
}

[StructLayout(LayoutKind.Sequential)]
public struct kvm_run_fail_entry
{
    public ulong hardware_entry_failure_reason;
    public uint cpu;
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_run_system_event
{
    public uint type, ndata;
    public fixed ulong data[16];
}

/// <summary>KVM constants and ioctl numbers, named as in the kernel headers.</summary>
public static unsafe class KvmAbi
{
    public const uint KVMIO = 0xAE;
    public const int KVM_API_VERSION = 12;
    public const int RunExitUnionOffset = 32;

    // Exit reasons.
    public const uint KVM_EXIT_UNKNOWN = 0, KVM_EXIT_EXCEPTION = 1, KVM_EXIT_IO = 2, KVM_EXIT_HYPERCALL = 3,
        KVM_EXIT_DEBUG = 4, KVM_EXIT_HLT = 5, KVM_EXIT_MMIO = 6, KVM_EXIT_IRQ_WINDOW_OPEN = 7,
        KVM_EXIT_SHUTDOWN = 8, KVM_EXIT_FAIL_ENTRY = 9, KVM_EXIT_INTR = 10, KVM_EXIT_NMI = 16,
        KVM_EXIT_INTERNAL_ERROR = 17, KVM_EXIT_SYSTEM_EVENT = 24;
    public const byte KVM_EXIT_IO_IN = 0, KVM_EXIT_IO_OUT = 1;
    public const uint KVM_INTERNAL_ERROR_EMULATION = 1, KVM_INTERNAL_ERROR_SIMUL_EX = 2,
        KVM_INTERNAL_ERROR_DELIVERY_EV = 3, KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON = 4;
    public const uint KVM_SYSTEM_EVENT_SHUTDOWN = 1, KVM_SYSTEM_EVENT_RESET = 2, KVM_SYSTEM_EVENT_CRASH = 3;

    // Capabilities.
    public const int KVM_CAP_ADJUST_CLOCK = 39, KVM_CAP_VCPU_EVENTS = 41, KVM_CAP_DEBUGREGS = 50, KVM_CAP_XSAVE = 55,
        KVM_CAP_XCRS = 56, KVM_CAP_TSC_CONTROL = 60, KVM_CAP_GET_TSC_KHZ = 61, KVM_CAP_XSAVE2 = 208;
    public const int KVM_CAP_IRQCHIP = 0, KVM_CAP_HLT = 1, KVM_CAP_USER_MEMORY = 3, KVM_CAP_SET_TSS_ADDR = 4,
        KVM_CAP_EXT_CPUID = 7, KVM_CAP_NR_VCPUS = 9, KVM_CAP_PIT2 = 33, KVM_CAP_IOEVENTFD = 36,
        KVM_CAP_IRQFD = 32, KVM_CAP_MAX_VCPUS = 66, KVM_CAP_TSC_DEADLINE_TIMER = 72, KVM_CAP_IMMEDIATE_EXIT = 136;

    public const uint KVM_PIT_SPEAKER_DUMMY = 1;
    public const uint KVM_MEM_LOG_DIRTY_PAGES = 1, KVM_MEM_READONLY = 2;
    public const uint KVM_IOEVENTFD_FLAG_DATAMATCH = 1, KVM_IOEVENTFD_FLAG_PIO = 2, KVM_IOEVENTFD_FLAG_DEASSIGN = 4;
    public const uint KVM_IRQFD_FLAG_DEASSIGN = 1;
    public const uint KVM_IRQ_ROUTING_IRQCHIP = 1, KVM_IRQ_ROUTING_MSI = 2;
    public const uint KVM_IRQCHIP_PIC_MASTER = 0, KVM_IRQCHIP_PIC_SLAVE = 1, KVM_IRQCHIP_IOAPIC = 2, KVM_NR_IRQCHIPS = 3;
    public const int KVM_IOAPIC_NUM_PINS = 24, KVM_MAX_XCRS = 16;
    /// <summary>sizeof(kvm_irqchip.chip): the union's dummy[512].</summary>
    public const int IrqchipPayloadSize = 512;
    public const uint KVM_CLOCK_TSC_STABLE = 2, KVM_CLOCK_REALTIME = 1 << 2, KVM_CLOCK_HOST_TSC = 1 << 3;
    public const uint KVM_PIT_FLAGS_HPET_LEGACY = 1, KVM_PIT_FLAGS_SPEAKER_DATA_ON = 2;
    public const uint KVM_VCPUEVENT_VALID_NMI_PENDING = 0x1, KVM_VCPUEVENT_VALID_SIPI_VECTOR = 0x2, KVM_VCPUEVENT_VALID_SHADOW = 0x4,
        KVM_VCPUEVENT_VALID_SMM = 0x8, KVM_VCPUEVENT_VALID_PAYLOAD = 0x10, KVM_VCPUEVENT_VALID_TRIPLE_FAULT = 0x20;
    public const uint KVM_MP_STATE_RUNNABLE = 0, KVM_MP_STATE_UNINITIALIZED = 1, KVM_MP_STATE_INIT_RECEIVED = 2,
        KVM_MP_STATE_HALTED = 3, KVM_MP_STATE_SIPI_RECEIVED = 4;

    // System ioctls.
    public static readonly nuint KVM_GET_API_VERSION = IoctlNumber.IO(KVMIO, 0x00);
    public static readonly nuint KVM_CREATE_VM = IoctlNumber.IO(KVMIO, 0x01);
    public static readonly nuint KVM_CHECK_EXTENSION = IoctlNumber.IO(KVMIO, 0x03);
    public static readonly nuint KVM_GET_VCPU_MMAP_SIZE = IoctlNumber.IO(KVMIO, 0x04);
    public static readonly nuint KVM_GET_MSR_INDEX_LIST = IoctlNumber.IOWR(KVMIO, 0x02, sizeof(kvm_msr_list));
    public static readonly nuint KVM_GET_SUPPORTED_CPUID = IoctlNumber.IOWR(KVMIO, 0x05, sizeof(kvm_cpuid2));

    // VM ioctls.
    public static readonly nuint KVM_CREATE_VCPU = IoctlNumber.IO(KVMIO, 0x41);
    public static readonly nuint KVM_GET_DIRTY_LOG = IoctlNumber.IOW(KVMIO, 0x42, sizeof(kvm_dirty_log));
    public static readonly nuint KVM_SET_USER_MEMORY_REGION = IoctlNumber.IOW(KVMIO, 0x46, sizeof(kvm_userspace_memory_region));
    public static readonly nuint KVM_SET_TSS_ADDR = IoctlNumber.IO(KVMIO, 0x47);
    public static readonly nuint KVM_SET_IDENTITY_MAP_ADDR = IoctlNumber.IOW(KVMIO, 0x48, sizeof(ulong));
    public static readonly nuint KVM_CREATE_IRQCHIP = IoctlNumber.IO(KVMIO, 0x60);
    public static readonly nuint KVM_IRQ_LINE = IoctlNumber.IOW(KVMIO, 0x61, sizeof(kvm_irq_level));
    public static readonly nuint KVM_GET_IRQCHIP = IoctlNumber.IOWR(KVMIO, 0x62, sizeof(kvm_irqchip));
    public static readonly nuint KVM_SET_IRQCHIP = IoctlNumber.IOR(KVMIO, 0x63, sizeof(kvm_irqchip)); // _IOR, as the header has it
    public static readonly nuint KVM_SET_CLOCK = IoctlNumber.IOW(KVMIO, 0x7b, sizeof(kvm_clock_data));
    public static readonly nuint KVM_GET_CLOCK = IoctlNumber.IOR(KVMIO, 0x7c, sizeof(kvm_clock_data));
    public static readonly nuint KVM_GET_PIT2 = IoctlNumber.IOR(KVMIO, 0x9f, sizeof(kvm_pit_state2));
    public static readonly nuint KVM_SET_PIT2 = IoctlNumber.IOW(KVMIO, 0xa0, sizeof(kvm_pit_state2));
    public static readonly nuint KVM_IRQFD = IoctlNumber.IOW(KVMIO, 0x76, sizeof(kvm_irqfd));
    public static readonly nuint KVM_CREATE_PIT2 = IoctlNumber.IOW(KVMIO, 0x77, sizeof(kvm_pit_config));
    public static readonly nuint KVM_SET_BOOT_CPU_ID = IoctlNumber.IO(KVMIO, 0x78);
    public static readonly nuint KVM_IOEVENTFD = IoctlNumber.IOW(KVMIO, 0x79, sizeof(kvm_ioeventfd));
    public static readonly nuint KVM_SIGNAL_MSI = IoctlNumber.IOW(KVMIO, 0xa5, sizeof(kvm_msi));
    public static readonly nuint KVM_SET_GSI_ROUTING = IoctlNumber.IOW(KVMIO, 0x6a, sizeof(kvm_irq_routing));

    // vCPU ioctls.
    public static readonly nuint KVM_RUN = IoctlNumber.IO(KVMIO, 0x80);
    public static readonly nuint KVM_GET_REGS = IoctlNumber.IOR(KVMIO, 0x81, sizeof(kvm_regs));
    public static readonly nuint KVM_SET_REGS = IoctlNumber.IOW(KVMIO, 0x82, sizeof(kvm_regs));
    public static readonly nuint KVM_GET_SREGS = IoctlNumber.IOR(KVMIO, 0x83, sizeof(kvm_sregs));
    public static readonly nuint KVM_SET_SREGS = IoctlNumber.IOW(KVMIO, 0x84, sizeof(kvm_sregs));
    public static readonly nuint KVM_GET_MSRS = IoctlNumber.IOWR(KVMIO, 0x88, sizeof(kvm_msrs));
    public static readonly nuint KVM_SET_MSRS = IoctlNumber.IOW(KVMIO, 0x89, sizeof(kvm_msrs));
    public static readonly nuint KVM_GET_FPU = IoctlNumber.IOR(KVMIO, 0x8c, sizeof(kvm_fpu));
    public static readonly nuint KVM_SET_FPU = IoctlNumber.IOW(KVMIO, 0x8d, sizeof(kvm_fpu));
    public static readonly nuint KVM_GET_LAPIC = IoctlNumber.IOR(KVMIO, 0x8e, sizeof(kvm_lapic_state));
    public static readonly nuint KVM_SET_LAPIC = IoctlNumber.IOW(KVMIO, 0x8f, sizeof(kvm_lapic_state));
    public static readonly nuint KVM_SET_CPUID2 = IoctlNumber.IOW(KVMIO, 0x90, sizeof(kvm_cpuid2));
    public static readonly nuint KVM_GET_MP_STATE = IoctlNumber.IOR(KVMIO, 0x98, sizeof(kvm_mp_state));
    public static readonly nuint KVM_SET_MP_STATE = IoctlNumber.IOW(KVMIO, 0x99, sizeof(kvm_mp_state));
    public static readonly nuint KVM_GET_CPUID2 = IoctlNumber.IOWR(KVMIO, 0x91, sizeof(kvm_cpuid2));
    public static readonly nuint KVM_GET_VCPU_EVENTS = IoctlNumber.IOR(KVMIO, 0x9f, sizeof(kvm_vcpu_events));
    public static readonly nuint KVM_SET_VCPU_EVENTS = IoctlNumber.IOW(KVMIO, 0xa0, sizeof(kvm_vcpu_events));
    public static readonly nuint KVM_GET_DEBUGREGS = IoctlNumber.IOR(KVMIO, 0xa1, sizeof(kvm_debugregs));
    public static readonly nuint KVM_SET_DEBUGREGS = IoctlNumber.IOW(KVMIO, 0xa2, sizeof(kvm_debugregs));
    public static readonly nuint KVM_SET_TSC_KHZ = IoctlNumber.IO(KVMIO, 0xa2);
    public static readonly nuint KVM_GET_TSC_KHZ = IoctlNumber.IO(KVMIO, 0xa3);
    public static readonly nuint KVM_GET_XCRS = IoctlNumber.IOR(KVMIO, 0xa6, sizeof(kvm_xcrs));
    public static readonly nuint KVM_SET_XCRS = IoctlNumber.IOW(KVMIO, 0xa7, sizeof(kvm_xcrs));
    public static readonly nuint KVM_GET_XSAVE2 = IoctlNumber.IOR(KVMIO, 0xcf, sizeof(kvm_xsave));
    public static readonly nuint KVM_GET_XSAVE = IoctlNumber.IOR(KVMIO, 0xa4, sizeof(kvm_xsave));
    public static readonly nuint KVM_SET_XSAVE = IoctlNumber.IOW(KVMIO, 0xa5, sizeof(kvm_xsave));
}
