/* memtest: writes and verifies patterns over all RAM the e820 map gives, above the image. */
#include "runtime/rt.h"

static u64 pattern(u64 addr, u64 seed) { return (addr * 0x9e3779b97f4a7c15UL) ^ seed; }

static int test_range(u64 start, u64 end, u64 seed)
{
    for (u64 a = start; a < end; a += 8)
        *(volatile u64 *)a = pattern(a, seed);
    for (u64 a = start; a < end; a += 8) {
        u64 got = *(volatile u64 *)a, want = pattern(a, seed);
        if (got != want) {
            printf("memtest: MISMATCH at %lx: got %lx want %lx\n", a, got, want);
            return 0;
        }
    }
    return 1;
}

int main(void)
{
    const struct memmap_entry *map;
    int n = memmap(&map);
    if (n == 0) {
        printf("memtest: no memory map\n");
        return 2;
    }
    u64 floor = ((u64)_end + 0xfff) & ~0xfffUL;
    u64 tested = 0, total = 0;
    for (int i = 0; i < n; i++) {
        if (map[i].type != 1) continue;
        total += map[i].size;
        u64 start = map[i].addr, end = map[i].addr + map[i].size;
        if (start < floor) start = floor;
        if (end > MAPPED_LIMIT) end = MAPPED_LIMIT;
        if (start >= end) continue;
        printf("memtest: %lx-%lx\n", start, end);
        for (u64 seed = 0; seed < 2; seed++)
            if (!test_range(start, end, seed ? 0x5555aaaa5555aaaaUL : 0))
                return 1;
        tested += end - start;
    }
    printf("memtest: %lu MiB of %lu MiB verified, 2 patterns\n", tested >> 20, total >> 20);
    return 0;
}
