/* pio: the cost of a port-I/O exit, measured in TSC cycles around a CPL3 loop of OUTs to 0x80. */
#include "runtime/rt.h"

int main(void)
{
    u64 n = cmdline_u64("exits", 50000);
    for (int i = 0; i < 1000; i++)
        outb(0x80, 0);                       /* warm up the exit path */
    u64 t0 = rdtsc();
    for (u64 i = 0; i < n; i++)
        outb(0x80, (u8)i);
    u64 t1 = rdtsc();
    printf("pio: %lu exits, %lu cycles per exit\n", n, (t1 - t0) / n);
    return 0;
}
