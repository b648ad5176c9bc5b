/* cpuburn: a CPL3 loop on every vCPU; each reports its iterations and a checksum. */
#include "runtime/rt.h"

static volatile u64 done_iters[MAX_CPUS];
static volatile int finished;
static u64 iterations;

static u64 burn(u64 n, u64 seed)
{
    u64 x = seed | 1;
    for (u64 i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    return x;
}

static void report(int cpu, u64 x, u64 cycles)
{
    done_iters[cpu] = iterations;
    printf("cpu %d: %lu iterations, checksum %lx, %lu cycles\n", cpu, iterations, x, cycles);
}

static void ap_burn(int cpu)
{
    u64 t0 = rdtsc();
    u64 x = burn(iterations, (u64)cpu + 1);
    report(cpu, x, rdtsc() - t0);
    __atomic_add_fetch(&finished, 1, __ATOMIC_SEQ_CST);
}

int main(void)
{
    iterations = cmdline_u64("iters", 50000000);
    int aps = 0;
    u8 ids[MAX_CPUS];
    if (mp_cpu_count(ids) > 1)
        aps = start_aps(ap_burn);
    u64 t0 = rdtsc();
    u64 x = burn(iterations, (u64)cpu_id() + 1);
    report(cpu_id(), x, rdtsc() - t0);
    while (finished < aps)
        cpu_relax();
    printf("cpuburn: %d cpus done, %lu iterations each\n", aps + 1, iterations);
    return 0;
}
