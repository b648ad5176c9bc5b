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
    for (int spin = 0; spin < 1000000; spin++) {
        int all = 1;
        for (int i = 0; i < expected && i < MAX_CPUS; i++)
            all &= seen[ids[i]];
        if (all) break;
        cpu_relax();
    }
    int online = 0;
    for (int i = 0; i < expected && i < MAX_CPUS; i++)
        online += seen[ids[i]];
    printf("smp: %d of %d cpus online (%d aps)\n", online, expected, aps);
    return online == expected ? 0 : 1;
}
