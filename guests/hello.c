/* hello: the smallest guest. Prints who it is and what it was given, then exits 0. */
#include "runtime/rt.h"

int main(void)
{
    const struct memmap_entry *map;
    int n = memmap(&map);
    u64 ram = 0;
    for (int i = 0; i < n; i++)
        if (map[i].type == 1)
            ram += map[i].size;
    printf("Hello from a Vireo test guest!\n");
    printf("cpu %d, %lu MiB of RAM in %d e820 entries, cmdline \"%s\"\n", cpu_id(), ram >> 20, n, cmdline());
    return (int)cmdline_u64("status", 0);
}
