/* snapshot: state that must survive a save and restore (or a migration). A counter in RAM, the
 * LAPIC timer running periodically (its ticks are interrupts), the TSC, and an echoing console:
 *   "c" prints count=N, N one more each time (RAM kept);
 *   "t" prints ticks=N tsc=T (the timer still ticks; the TSC never goes back);
 *   "p" prints a '.' every 100 us until the next key (a heartbeat an outside timer can see:
 *       bench/ takes a restored guest's first '.' as the moment it runs again, and a migrated
 *       one's pause as the gap in the dots; a finer beat would be mostly console traffic);
 *   any other line is echoed; "q" quits.
 * Between lines it spins at CPL3, as a busy guest does.
 * With msix=1 on its command line, it first sizes a virtio-blk function's BARs and routes its queue's
 * interrupt through MSI-X (as Linux's PCI probe and virtio-pci do), so a save carries MSI routes for the restore to put back. */
#include "runtime/virtio.h"

static volatile u64 counter;
static u8 blk_qmem[8192] __attribute__((aligned(4096)));

static int route_blk_by_msix(void)
{
    struct virtio_dev dev;
    struct virtq vq;
    if (virtio_find(2, 0, &dev) || !virtio_pci_size_bars(&dev) || virtio_start(&dev, 0) || virtio_queue(&dev, 0, &vq, blk_qmem, 64)
        || virtio_pci_msix(&dev, 0, 1, 0x46))
        return -1;
    virtq_interrupts(&vq, 1);
    virtio_driver_ok(&dev);
    return 0;
}

int main(void)
{
    int cpu = cpu_id();
    if (cmdline_get("msix") && route_blk_by_msix()) {
        printf("snapshot: no virtio-blk device to route by MSI-X\n");
        return 1;
    }
    irq_enable();
    lapic_timer_start(2000000, 1);
    u64 last_tsc = rdtsc();
    u64 beat = 0, beat_at = 0;
    int beating = 0;
    printf("snapshot: up\n> ");
    char line[128];
    int len = 0;
    for (;;) {
        u64 now = rdtsc();
        if (now < last_tsc) {
            printf("\nsnapshot: TSC went back from %lu to %lu\n", last_tsc, now);
            return 1;
        }
        last_tsc = now;
        if (beating && now >= beat_at) {
            putc('.');
            beat_at = now + beat;
        }
        int c = serial_getc();
        if (c < 0) { cpu_relax(); continue; }
        beating = 0;
        if (c == '\r' || c == '\n') {
            line[len] = 0;
            if (len == 1 && line[0] == 'c')
                printf("\ncount=%lu\n", ++counter);
            else if (len == 1 && line[0] == 't')
                printf("\nticks=%lu tsc=%lu\n", timer_ticks[cpu], now);
            else if (len == 1 && line[0] == 'q')
                return 0;
            else if (len == 1 && line[0] == 'p') {
                if (!beat) beat = tsc_hz() / 10000;  /* 100 us, measured once, on the first "p": up to 2 s */
                printf("\nbeating\n");
                beating = 1;
                beat_at = now;
                len = 0;
                continue;
            }
            else
                printf("\necho: %s\n", line);
            len = 0;
            printf("> ");
        } else if (len < (int)sizeof line - 1) {
            line[len++] = (char)c;
            putc((char)c);
        }
    }
}
