/* The test-guest runtime: what a guest's main() may call. Runs at CPL3 with IOPL=3. */
#ifndef VIREO_GUEST_RT_H
#define VIREO_GUEST_RT_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;
typedef unsigned long size_t;

#define MAX_CPUS 16
#define LAPIC_BASE 0xfee00000UL
#define TIMER_VECTOR 0x40
#define DEBUG_EXIT_PORT 0xf4
#define MAPPED_LIMIT (16UL << 30)   /* the runtime's identity map ends here */

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
static inline u16 inw(u16 port) { u16 v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u64 rdtsc(void) { u32 lo, hi; __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi)); return ((u64)hi << 32) | lo; }
static inline void cpu_relax(void) { __asm__ volatile("pause"); }
static inline u32 mmio_read32(u64 addr) { return *(volatile u32 *)addr; }
static inline void mmio_write32(u64 addr, u32 v) { *(volatile u32 *)addr = v; }

/* Console (COM1) */
void putc(char c);
void puts(const char *s);
int printf(const char *fmt, ...);
int serial_getc(void);          /* -1 when nothing waits */

/* ACPI, found as an OS finds it (RSDP in 0xe0000..0xfffff, then the XSDT). */
const u8 *acpi_table(const char *sig);  /* a table whose checksum holds, or 0 */
int acpi_cpu_count(u8 *apic_ids);       /* enabled CPUs in the MADT, or -1 without one */
void acpi_poweroff(void);               /* returns only when there is no ACPI */

/* Ending the run: the debug-exit port 0xf4, else ACPI power-off, else an i8042 reset. */
void exit(int status) __attribute__((noreturn));

/* Boot information from the PVH start info. */
const char *cmdline(void);
const char *cmdline_get(const char *key);        /* value after "key=", or 0 */
u64 cmdline_u64(const char *key, u64 fallback);
struct memmap_entry { u64 addr, size; u32 type, reserved; };
int memmap(const struct memmap_entry **entries);
extern char _image_start[], _end[];

/* Processors */
int cpu_id(void);                 /* this CPU's local APIC id */
int mp_cpu_count(u8 *apic_ids);   /* CPUs listed in the MP table, or -1 when there is none */
int start_aps(void (*fn)(int cpu)); /* INIT/SIPI every AP in the MP table; returns how many checked in */
void cpu_halt_forever(void) __attribute__((noreturn));

/* Exceptions: run fn; returns the vector it raised, or -1 when it returned normally. */
int catch_exception(void (*fn)(void));
struct exception_info { u64 vector, error, rip, cr2; };
extern volatile struct exception_info last_exception[MAX_CPUS];

/* Empties the IDT (gate 0x82): the next exception shuts the CPU down. For testing triple faults. */
static inline void break_idt(void) { __asm__ volatile("int $0x82" : : : "memory"); }

/* TSC ticks a second, measured against the CMOS RTC's seconds (takes one to two seconds). */
u64 tsc_hz(void);

/* LAPIC timer */
void lapic_timer_start(u32 initial_count, int periodic);
void lapic_timer_stop(void);
extern volatile u64 timer_ticks[MAX_CPUS];
extern volatile u64 irq_counts[256];     /* interrupts taken, by CPU vector (besides the timer) */
/* IF is set through a gate at vector 0x81 (rax = 1 on, 0 off): STI at CPL3 needs IOPL=3,
 * which hosts that run CPL3 natively may not keep. */
static inline void irq_enable(void) { __asm__ volatile("int $0x81" : : "a"(1UL) : "memory"); }
static inline void irq_disable(void) { __asm__ volatile("int $0x81" : : "a"(0UL) : "memory"); }

/* Spinlocks (CPL3 code may share these across CPUs) */
typedef volatile int spinlock_t;
void spin_lock(spinlock_t *l);
void spin_unlock(spinlock_t *l);

void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strncmp(const char *a, const char *b, size_t n);

int main(void);

#endif
