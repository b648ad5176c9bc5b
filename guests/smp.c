/* smp: every vCPU in the MP table starts through INIT/SIPI and checks in. */
#include "runtime/rt.h"

static volatile int seen[MAX_CPUS];

static void ap_main(int cpu)
{
    printf("cpu %d checked in\n", cpu);
    seen[cpu] = 1;
}

int main(void)
{
    u8 ids[MAX_CPUS];
    int expected = mp_cpu_count(ids);
    if (expected < 1) {
        printf("smp: no MP table\n");
        return 2;
    }
    seen[cpu_id()] = 1;
    printf("smp: MP table lists %d cpus, bsp is %d\n", expected, cpu_id());
    u8 acpi_ids[MAX_CPUS];
    int in_madt = acpi_cpu_count(acpi_ids);
    if (in_madt >= 0) {
        printf("smp: ACPI MADT lists %d cpus\n", in_madt);
        for (int i = 0; i < in_madt && i < expected && i < MAX_CPUS; i++)
            if (acpi_ids[i] != ids[i]) {
                printf("smp: MADT cpu %d has APIC id %d, the MP table says %d\n", i, acpi_ids[i], ids[i]);
                return 3;
            }
        if (in_madt != expected) return 3;
    }
    int aps = start_aps(ap_main);
    /* Up to about 5 s of TSC (at 2-3 GHz) for the APs, which start at CPL0: on a host that
       emulates CPL0 that is milliseconds each, and they share the host's CPUs with the BSP. */
    u64 start = rdtsc();
    while (rdtsc() - start < 12000000000ull) {
        int all = 1;
        for (int i = 0; i < expected && i < MAX_CPUS; i++)
            all &= seen[ids[i]];
        if (all) break;
        cpu_relax();
    }
    u64 took = rdtsc() - start;
    int online = 0;
    for (int i = 0; i < expected && i < MAX_CPUS; i++)
        online += seen[ids[i]];
    printf("smp: %d of %d cpus online (%d aps), %d M TSC cycles after the SIPIs\n", online, expected, aps, (int)(took / 1000000));
    return online == expected ? 0 : 1;
}
