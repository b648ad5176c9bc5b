/* exceptions: CPL3 faults reach the IDT with the right vector, and the LAPIC timer interrupts. */
#include "runtime/rt.h"

static void divide_error(void) { __asm__ volatile("xorl %%edx, %%edx; movl $1, %%eax; divl %0" : : "r"(0) : "eax", "edx"); }
static void breakpoint(void) { __asm__ volatile("int3"); }
static void invalid_opcode(void) { __asm__ volatile("ud2"); }
static void general_protection(void) { __asm__ volatile("hlt"); }     /* privileged at CPL3 */
static void page_fault(void) { (void)*(volatile u64 *)0x8000000000UL; } /* beyond the identity map */
static void no_fault(void) { }

struct test { const char *name; void (*fn)(void); int vector; };

int main(void)
{
    static const struct test tests[] = {
        { "divide error", divide_error, 0 },
        { "breakpoint", breakpoint, 3 },
        { "invalid opcode", invalid_opcode, 6 },
        { "general protection", general_protection, 13 },
        { "page fault", page_fault, 14 },
        { "no fault", no_fault, -1 },
    };
    int failures = 0, cpu = cpu_id();
    for (unsigned i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        int got = catch_exception(tests[i].fn);
        int ok = got == tests[i].vector;
        if (got == 14 && last_exception[cpu].cr2 != 0x8000000000UL) ok = 0;
        printf("exceptions: %s -> vector %d %s\n", tests[i].name, got, ok ? "ok" : "FAIL");
        failures += !ok;
    }

    lapic_timer_start(200000, 1);
    irq_enable();
    u64 deadline = rdtsc() + 20000000000UL;
    while (timer_ticks[cpu] < 5 && rdtsc() < deadline)
        cpu_relax();
    irq_disable();
    lapic_timer_stop();
    int timer_ok = timer_ticks[cpu] >= 5;
    printf("exceptions: lapic timer -> %lu ticks %s\n", timer_ticks[cpu], timer_ok ? "ok" : "FAIL");
    failures += !timer_ok;

    if (cmdline_get("unhandled")) {
        printf("exceptions: now an unhandled #UD\n");
        __asm__ volatile("ud2");
    }
    printf("exceptions: %d failures\n", failures);
    return failures ? 1 : 0;
}
