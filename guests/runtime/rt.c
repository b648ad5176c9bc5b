/* The test-guest runtime. kernel_entry and isr_dispatch run at CPL0; everything else at CPL3. */
#include "rt.h"

#define COM1 0x3f8
#define USTACK_SIZE 65536
#define AP_TRAMP_ADDR 0x8000UL
#define SYSCALL_VECTOR 0x80
#define IRQ_FLAG_VECTOR 0x81
#define BREAK_IDT_VECTOR 0x82
#define SPURIOUS_VECTOR 0xff

struct tss {
    u32 reserved0;
    u64 rsp0, rsp1, rsp2;
    u64 reserved1;
    u64 ist[7];
    u64 reserved2;
    u16 reserved3, iomap_base;
    u8 iomap[8192 + 1];        /* every port allowed at CPL3; the last byte is the 0xff terminator */
} __attribute__((packed, aligned(16)));

struct idt_gate {
    u16 offset_lo, selector;
    u8 ist, type_attr;
    u16 offset_mid;
    u32 offset_hi, zero;
} __attribute__((packed));

struct frame {
    u64 r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
    u64 vector, error, rip, cs, rflags, rsp, ss;
};

struct hvm_start_info {
    u32 magic, version, flags, nr_modules;
    u64 modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
    u32 memmap_entries, reserved;
};

extern u64 gdt[];
extern struct { u16 limit; u64 base; } __attribute__((packed)) gdt_ptr;
extern u64 pvh_start_info;
extern u32 boot_cpu;
extern char isr_stubs[], kstacks[], ap_tramp_start[], ap_tramp_end[], catch_landing[];
extern volatile u64 catch_rsp[MAX_CPUS], catch_armed[MAX_CPUS];
void enter_user(void (*rip)(int), u64 rsp, u64 arg) __attribute__((noreturn));
void ap_entry64(void);

static struct tss tss[MAX_CPUS];
static struct idt_gate idt[256] __attribute__((aligned(16)));
static volatile int idt_ready;
static char ustacks[MAX_CPUS][USTACK_SIZE] __attribute__((aligned(16)));
volatile struct exception_info last_exception[MAX_CPUS];
volatile u64 timer_ticks[MAX_CPUS];
volatile u64 irq_counts[256];
static volatile int aps_checked_in;
static void (*volatile ap_fn)(int);
static spinlock_t print_lock;

/* ---------- CPL0 ---------- */

static void set_gate(int vec, int dpl)
{
    u64 addr = (u64)isr_stubs + (u64)vec * 16;
    idt[vec].offset_lo = (u16)addr;
    idt[vec].selector = 0x08;
    idt[vec].ist = 0;
    idt[vec].type_attr = (u8)(0x8e | (dpl << 5));
    idt[vec].offset_mid = (u16)(addr >> 16);
    idt[vec].offset_hi = (u32)(addr >> 32);
    idt[vec].zero = 0;
}

static void user_entry(int cpu);
static void panic_printf(const char *fmt, ...);

void kernel_entry(int cpu)
{
    if (!idt_ready) {
        for (int v = 0; v < 256; v++)
            set_gate(v, (v == 3 || v == 4 || (v >= SYSCALL_VECTOR && v <= BREAK_IDT_VECTOR)) ? 3 : 0);
        idt_ready = 1;
    }
    struct tss *t = &tss[cpu];
    t->rsp0 = (u64)kstacks + ((u64)(cpu + 1) << 14);
    /* IOPL=3 lets CPL3 do port I/O; the all-zero bitmap does too where IOPL does not survive. */
    t->iomap_base = (u16)__builtin_offsetof(struct tss, iomap);
    t->iomap[8192] = 0xff;
    u64 base = (u64)t, limit = __builtin_offsetof(struct tss, iomap) + 8192;
    int slot = 6 + cpu * 2;                   /* selector 0x30 + 16 * cpu */
    gdt[slot] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89UL << 40) |
                (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
    gdt[slot + 1] = base >> 32;
    struct { u16 limit; u64 base; } __attribute__((packed)) idtr = { sizeof(idt) - 1, (u64)idt };
    __asm__ volatile("lgdt %0" : : "m"(gdt_ptr));
    __asm__ volatile("lidt %0" : : "m"(idtr));
    __asm__ volatile("ltr %w0" : : "r"((u16)(0x30 + cpu * 16)));
    /* Software-enable the local APIC, spurious vector 0xff. */
    mmio_write32(LAPIC_BASE + 0xf0, 0x100 | SPURIOUS_VECTOR);
    enter_user(user_entry, (u64)ustacks[cpu] + USTACK_SIZE, (u64)cpu);
}

static const char *exception_name(u64 v)
{
    static const char *names[] = { "#DE divide error", "#DB debug", "NMI", "#BP breakpoint", "#OF overflow",
        "#BR bound", "#UD invalid opcode", "#NM device not available", "#DF double fault", "coprocessor",
        "#TS invalid TSS", "#NP segment not present", "#SS stack fault", "#GP general protection",
        "#PF page fault", "reserved", "#MF x87", "#AC alignment", "#MC machine check", "#XM SIMD" };
    return v < sizeof(names) / sizeof(names[0]) ? names[v] : "exception";
}

void isr_dispatch(struct frame *f)
{
    int cpu = (int)(mmio_read32(LAPIC_BASE + 0x20) >> 24) % MAX_CPUS;
    if (f->vector == 6 && (f->cs & 3) == 3) {
        /* Hosts that run CPL3 natively may turn "int n" into #UD: finish the gate's job here. */
        const u8 *ip = (const u8 *)f->rip;
        if (ip[0] == 0xcd && ip[1] >= SYSCALL_VECTOR && ip[1] <= BREAK_IDT_VECTOR) {
            f->vector = ip[1];
            f->rip += 2;
        }
    }
    if (f->vector == TIMER_VECTOR) {
        timer_ticks[cpu]++;
        mmio_write32(LAPIC_BASE + 0xb0, 0);
        return;
    }
    if (f->vector == SYSCALL_VECTOR) {
        for (;;)
            __asm__ volatile("sti; hlt");
    }
    if (f->vector == IRQ_FLAG_VECTOR) {
        f->rflags = f->rax ? (f->rflags | 0x200) : (f->rflags & ~0x200UL);
        return;
    }
    if (f->vector == BREAK_IDT_VECTOR) {
        struct { u16 limit; u64 base; } __attribute__((packed)) empty = { 0, 0 };
        __asm__ volatile("lidt %0" : : "m"(empty));
        return;
    }
    if (f->vector == SPURIOUS_VECTOR)
        return;
    if (f->vector >= 32) {
        irq_counts[f->vector]++;
        mmio_write32(LAPIC_BASE + 0xb0, 0);
        return;
    }
    u64 cr2;
    __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    last_exception[cpu].vector = f->vector;
    last_exception[cpu].error = f->error;
    last_exception[cpu].rip = f->rip;
    last_exception[cpu].cr2 = cr2;
    if (catch_armed[cpu] && (f->cs & 3) == 3) {
        catch_armed[cpu] = 0;
        f->rip = (u64)catch_landing;
        f->rsp = catch_rsp[cpu];
        f->rax = f->vector;
        return;
    }
    panic_printf("unhandled exception %lu (%s) on cpu %d: error=%lx rip=%lx rsp=%lx cr2=%lx cs=%lx rflags=%lx\n",
           f->vector, exception_name(f->vector), cpu, f->error, f->rip, f->rsp, cr2, f->cs, f->rflags);
    exit(0x40 + (int)f->vector);
}

/* ---------- CPL3 ---------- */

static void user_entry(int cpu)
{
    if ((u32)cpu == boot_cpu) {
        /* The kit takes interrupts through the local APIC only: mask the legacy 8259s, which a
         * BIOS may have left mapped over the exception vectors with its timer running. */
        outb(0x21, 0xff);
        outb(0xa1, 0xff);
        exit(main());
    }
    __atomic_add_fetch(&aps_checked_in, 1, __ATOMIC_SEQ_CST);
    if (ap_fn)
        ap_fn(cpu);
    cpu_halt_forever();
}

void cpu_halt_forever(void)
{
    __asm__ volatile("int $0x80");
    for (;;)
        cpu_relax();
}

void spin_lock(spinlock_t *l)
{
    while (__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE))
        while (*l)
            cpu_relax();
}

void spin_unlock(spinlock_t *l) { __atomic_store_n(l, 0, __ATOMIC_RELEASE); }

static void serial_put_raw(char c)
{
    while (!(inb(COM1 + 5) & 0x20))
        cpu_relax();
    outb(COM1, (u8)c);
}

void putc(char c)
{
    if (c == '\n')
        serial_put_raw('\r');
    serial_put_raw(c);
}

void puts(const char *s)
{
    spin_lock(&print_lock);
    while (*s)
        putc(*s++);
    spin_unlock(&print_lock);
}

int serial_getc(void)
{
    if (!(inb(COM1 + 5) & 1))
        return -1;
    return inb(COM1);
}

void exit(int status)
{
    outb(DEBUG_EXIT_PORT, (u8)status);
    /* No debug-exit device: ACPI power-off, else a reset through the keyboard controller. */
    acpi_poweroff();
    outb(0x64, 0xfe);
    for (;;)
        cpu_relax();
}

/* A small printf: %d %u %x %lu %ld %lx %s %c %p %%, with a width and 0-padding. */
static int format(char *out, size_t cap, const char *fmt, __builtin_va_list ap)
{
    size_t n = 0;
#define EMIT(ch) do { if (n + 1 < cap) out[n] = (ch); n++; } while (0)
    for (; *fmt; fmt++) {
        if (*fmt != '%') { EMIT(*fmt); continue; }
        fmt++;
        char pad = ' ';
        int width = 0, is_long = 0;
        if (*fmt == '0') { pad = '0'; fmt++; }
        while (*fmt >= '0' && *fmt <= '9') width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l') { is_long = 1; fmt++; }
        char tmp[24];
        int len = 0;
        const char *s = tmp;
        switch (*fmt) {
        case 'd': case 'u': case 'x': case 'p': {
            u64 v;
            int neg = 0;
            if (*fmt == 'p') { v = (u64)__builtin_va_arg(ap, void *); is_long = 1; }
            else if (*fmt == 'd') {
                long sv = is_long ? __builtin_va_arg(ap, long) : __builtin_va_arg(ap, int);
                if (sv < 0) { neg = 1; v = (u64)-sv; } else v = (u64)sv;
            } else v = is_long ? __builtin_va_arg(ap, u64) : __builtin_va_arg(ap, u32);
            int base = (*fmt == 'x' || *fmt == 'p') ? 16 : 10;
            char rev[24];
            int r = 0;
            do { rev[r++] = "0123456789abcdef"[v % base]; v /= base; } while (v);
            if (neg) rev[r++] = '-';
            while (r) tmp[len++] = rev[--r];
            break;
        }
        case 's': s = __builtin_va_arg(ap, const char *); if (!s) s = "(null)"; len = (int)strlen(s); break;
        case 'c': tmp[0] = (char)__builtin_va_arg(ap, int); len = 1; break;
        case '%': tmp[0] = '%'; len = 1; break;
        default: tmp[0] = '?'; len = 1; break;
        }
        for (int i = len; i < width; i++) EMIT(pad);
        for (int i = 0; i < len; i++) EMIT(s[i]);
    }
    if (cap) out[n < cap ? n : cap - 1] = 0;
#undef EMIT
    return (int)n;
}

int printf(const char *fmt, ...)
{
    char buf[512];
    __builtin_va_list ap;
    __builtin_va_start(ap, fmt);
    int n = format(buf, sizeof buf, fmt, ap);
    __builtin_va_end(ap);
    puts(buf);
    return n;
}

/* For the exception handler: no lock, since the faulting code may hold it. */
static void panic_printf(const char *fmt, ...)
{
    char buf[512];
    __builtin_va_list ap;
    __builtin_va_start(ap, fmt);
    format(buf, sizeof buf, fmt, ap);
    __builtin_va_end(ap);
    for (const char *s = buf; *s; s++)
        putc(*s);
}

/* ---------- boot information ---------- */

static const struct hvm_start_info *start_info(void)
{
    const struct hvm_start_info *si = (const struct hvm_start_info *)pvh_start_info;
    return si && si->magic == 0x336ec578 ? si : 0;
}

const char *cmdline(void)
{
    const struct hvm_start_info *si = start_info();
    return si && si->cmdline_paddr ? (const char *)si->cmdline_paddr : "";
}

const char *cmdline_get(const char *key)
{
    size_t k = strlen(key);
    for (const char *p = cmdline(); *p; ) {
        while (*p == ' ') p++;
        if (!strncmp(p, key, k) && p[k] == '=')
            return p + k + 1;
        while (*p && *p != ' ') p++;
    }
    return 0;
}

u64 cmdline_u64(const char *key, u64 fallback)
{
    const char *v = cmdline_get(key);
    if (!v || *v < '0' || *v > '9')
        return fallback;
    u64 n = 0;
    while (*v >= '0' && *v <= '9') n = n * 10 + (u64)(*v++ - '0');
    if (*v == 'K' || *v == 'k') n <<= 10;
    if (*v == 'M' || *v == 'm') n <<= 20;
    return n;
}

int memmap(const struct memmap_entry **entries)
{
    const struct hvm_start_info *si = start_info();
    if (!si || si->version < 1 || !si->memmap_paddr) return 0;
    *entries = (const struct memmap_entry *)si->memmap_paddr;
    return (int)si->memmap_entries;
}

/* ---------- processors ---------- */

int cpu_id(void) { return (int)(mmio_read32(LAPIC_BASE + 0x20) >> 24); }

static const u8 *find_mp_floating(u64 start, u64 len)
{
    for (u64 a = start; a + 16 <= start + len; a += 16) {
        const u8 *p = (const u8 *)a;
        if (p[0] == '_' && p[1] == 'M' && p[2] == 'P' && p[3] == '_') {
            u8 sum = 0;
            for (int i = 0; i < 16; i++) sum += p[i];
            if (sum == 0) return p;
        }
    }
    return 0;
}

int mp_cpu_count(u8 *apic_ids)
{
    const u8 *fp = find_mp_floating(0x9fc00, 0x400);
    if (!fp) fp = find_mp_floating(0xf0000, 0x10000);
    if (!fp) return -1;
    const u8 *table = (const u8 *)(u64)*(const u32 *)(fp + 4);
    if (!table || table[0] != 'P' || table[1] != 'C' || table[2] != 'M' || table[3] != 'P') return -1;
    u16 length = *(const u16 *)(table + 4), entries = *(const u16 *)(table + 34);
    u8 sum = 0;
    for (u16 i = 0; i < length; i++) sum += table[i];
    if (sum) return -1;
    const u8 *e = table + 44;
    int cpus = 0;
    for (u16 i = 0; i < entries && e < table + length; i++) {
        if (e[0] == 0) {
            if ((e[3] & 1) && apic_ids && cpus < MAX_CPUS) apic_ids[cpus] = e[1];
            if (e[3] & 1) cpus++;
            e += 20;
        } else {
            e += 8;
        }
    }
    return cpus;
}

/* ---------- ACPI: read the tables as an OS does ---------- */

static int checksum_ok(const u8 *p, u32 len)
{
    u8 sum = 0;
    for (u32 i = 0; i < len; i++) sum += p[i];
    return sum == 0;
}

static const u8 *find_rsdp(void)
{
    for (u64 a = 0xe0000; a < 0x100000; a += 16) {
        const u8 *p = (const u8 *)a;
        if (p[0] == 'R' && p[1] == 'S' && p[2] == 'D' && p[3] == ' ' && p[4] == 'P' && p[5] == 'T'
            && p[6] == 'R' && p[7] == ' ' && checksum_ok(p, 20) && p[15] >= 2 && checksum_ok(p, 36))
            return p;
    }
    return 0;
}

const u8 *acpi_table(const char *sig)
{
    const u8 *rsdp = find_rsdp();
    if (!rsdp) return 0;
    const u8 *xsdt = (const u8 *)*(const u64 *)(rsdp + 24);
    u32 len = *(const u32 *)(xsdt + 4);
    if (xsdt[0] != 'X' || xsdt[1] != 'S' || xsdt[2] != 'D' || xsdt[3] != 'T' || !checksum_ok(xsdt, len)) return 0;
    for (u32 off = 36; off + 8 <= len; off += 8) {
        const u8 *t = (const u8 *)*(const u64 *)(xsdt + off);
        if (t[0] == sig[0] && t[1] == sig[1] && t[2] == sig[2] && t[3] == sig[3] && checksum_ok(t, *(const u32 *)(t + 4)))
            return t;
    }
    return 0;
}

int acpi_cpu_count(u8 *apic_ids)
{
    const u8 *madt = acpi_table("APIC");
    if (!madt) return -1;
    u32 len = *(const u32 *)(madt + 4);
    int cpus = 0;
    for (const u8 *e = madt + 44; e + 2 <= madt + len && e[1] >= 2; e += e[1]) {
        if (e[0] == 0 && (e[4] & 1)) {
            if (apic_ids && cpus < MAX_CPUS) apic_ids[cpus] = e[3];
            cpus++;
        }
    }
    return cpus;
}

/* S5 through the fixed hardware: SLP_TYP from \_S5 in the DSDT, written with SLP_EN to PM1a_CNT. */
void acpi_poweroff(void)
{
    const u8 *fadt = acpi_table("FACP");
    if (!fadt) return;
    u16 pm1a_cnt = (u16)*(const u32 *)(fadt + 64);
    const u8 *dsdt = (const u8 *)*(const u64 *)(fadt + 140);
    if (!pm1a_cnt || !dsdt) return;
    u32 len = *(const u32 *)(dsdt + 4);
    for (u32 i = 36; i + 8 < len; i++) {
        const u8 *p = dsdt + i;
        /* NameOp "_S5_" PackageOp PkgLength NumElements, then SLP_TYPa as an integer */
        if (p[0] != '_' || p[1] != 'S' || p[2] != '5' || p[3] != '_' || p[4] != 0x12) continue;
        const u8 *v = p + 7;
        u16 typ = v[0] == 0x0a ? v[1] : v[0] == 0x01 ? 1 : 0;
        outw(pm1a_cnt, (u16)((typ << 10) | (1 << 13)));
        return;
    }
}

static void lapic_icr(u8 apic, u32 low)
{
    mmio_write32(LAPIC_BASE + 0x310, (u32)apic << 24);
    mmio_write32(LAPIC_BASE + 0x300, low);
    while (mmio_read32(LAPIC_BASE + 0x300) & (1 << 12))
        cpu_relax();
}

int start_aps(void (*fn)(int cpu))
{
    u8 ids[MAX_CPUS];
    int n = mp_cpu_count(ids);
    if (n < 0) return -1;
    if (n > MAX_CPUS) n = MAX_CPUS;
    ap_fn = fn;
    memcpy((void *)AP_TRAMP_ADDR, ap_tramp_start, (size_t)(ap_tramp_end - ap_tramp_start));
    int self = cpu_id(), expected = 0;
    for (int i = 0; i < n; i++) {
        if (ids[i] == self) continue;
        expected++;
        lapic_icr(ids[i], 0x4500);                                  /* INIT, assert */
        for (int k = 0; k < 2; k++)
            lapic_icr(ids[i], 0x4600 | (u32)(AP_TRAMP_ADDR >> 12)); /* STARTUP */
    }
    u64 deadline = rdtsc() + 20000000000UL;
    while (aps_checked_in < expected && rdtsc() < deadline)
        cpu_relax();
    return aps_checked_in;
}

/* ---------- time ---------- */

static u8 cmos(u8 reg) { outb(0x70, reg); return inb(0x71); }

u64 tsc_hz(void)
{
    u8 s = cmos(0);
    while (cmos(0) == s) cpu_relax();     /* wait for a seconds edge, then count to the next */
    u64 t0 = rdtsc();
    s = cmos(0);
    while (cmos(0) == s) cpu_relax();
    return rdtsc() - t0;
}

/* ---------- LAPIC timer ---------- */

void lapic_timer_start(u32 initial_count, int periodic)
{
    mmio_write32(LAPIC_BASE + 0x3e0, 0xb);    /* divide by 1 */
    mmio_write32(LAPIC_BASE + 0x320, TIMER_VECTOR | (periodic ? (1u << 17) : 0));
    mmio_write32(LAPIC_BASE + 0x380, initial_count);
}

void lapic_timer_stop(void)
{
    mmio_write32(LAPIC_BASE + 0x320, 1u << 16);
    mmio_write32(LAPIC_BASE + 0x380, 0);
}

/* ---------- strings ---------- */

void *memset(void *d, int c, size_t n) { u8 *p = d; while (n--) *p++ = (u8)c; return d; }
void *memcpy(void *d, const void *s, size_t n) { u8 *p = d; const u8 *q = s; while (n--) *p++ = *q++; return d; }
int memcmp(const void *a, const void *b, size_t n)
{
    const u8 *p = a, *q = b;
    for (; n; n--, p++, q++) if (*p != *q) return *p - *q;
    return 0;
}
size_t strlen(const char *s) { size_t n = 0; while (s[n]) n++; return n; }
int strncmp(const char *a, const char *b, size_t n)
{
    for (; n; n--, a++, b++) { if (*a != *b) return (u8)*a - (u8)*b; if (!*a) return 0; }
    return 0;
}
