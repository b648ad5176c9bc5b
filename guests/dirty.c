/* dirty: writes memory at a fixed rate, for live migration's pre-copy (bench). One byte in each
 * 4 KiB page of a working set of `mib=` MiB (default 64) above the image, `rate=` pages a
 * millisecond (default 25, about 100 MiB/s), paced by the TSC (calibrated against the RTC's
 * seconds at start-up, one to two seconds), round and round the set. A backlog (the vCPU was
 * stopped, or slowed by the dirty log's write faults) is dropped rather than caught up, so the
 * rate stays a ceiling. Each second it prints a heartbeat with the pages written in that second;
 * the line counter keeps counting across a migration, since it is in RAM. All at CPL3. */
#include "runtime/rt.h"

#define PAGE 4096UL

static volatile u64 beats;

int main(void)
{
    u64 mib = cmdline_u64("mib", 64), rate = cmdline_u64("rate", 25);
    u64 base = ((u64)_end + (2UL << 20) - 1) & ~((2UL << 20) - 1);
    u64 pages = (mib << 20) / PAGE;
    const struct memmap_entry *map;
    int n = memmap(&map);
    int fits = 0;
    for (int i = 0; i < n; i++)
        if (map[i].type == 1 && map[i].addr <= base && base + (mib << 20) <= map[i].addr + map[i].size)
            fits = 1;
    if (!fits || base + (mib << 20) > MAPPED_LIMIT) {
        printf("dirty: %lu MiB at %lx is not all RAM\n", mib, base);
        return 2;
    }
    u64 hz = tsc_hz();
    u64 per_ms = hz / 1000;
    printf("dirty: up, %lu MiB at %lx, %lu pages/ms, tsc %lu kHz\n", mib, base, rate, per_ms);
    volatile u8 *set = (volatile u8 *)base;
    u64 next = 0, written = 0, in_second = 0, value = 1;
    u64 t0 = rdtsc(), beat_at = t0 + hz, due = 0;
    for (;;) {
        u64 now = rdtsc();
        u64 should = (now - t0) / per_ms * rate;   /* pages due by now */
        if (should > due + 2 * rate)               /* more than 2 ms behind: drop the backlog */
            due = should - rate;
        while (due < should) {
            set[next * PAGE] = (u8)value;
            if (++next == pages) {
                next = 0;
                value = (value % 255) + 1;         /* never 0: a page once written stays non-zero */
            }
            due++;
            written++;
            in_second++;
        }
        if (now >= beat_at) {
            printf("dirty: beat %lu, %lu pages in it, %lu in all\n", ++beats, in_second, written);
            in_second = 0;
            beat_at += hz;
            if (beat_at < now)
                beat_at = now + hz;
        }
        cpu_relax();
    }
}
