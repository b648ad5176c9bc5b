/*
 * netbench: virtio-net throughput between two VMs. role=send streams `mib=` MiB of 1514-byte
 * frames, keeping the transmit queue full, then sends stop frames; role=sink counts what
 * arrives and reports MB/s from its first frame to the stop (TSC, calibrated on the RTC).
 */
#include "runtime/virtio.h"

#define HDR 12
#define FRAME 1514
#define BUFS 64
#define BUFSZ 2048

static u8 rxmem[8192] __attribute__((aligned(4096)));
static u8 txmem[8192] __attribute__((aligned(4096)));
static u8 bufs[BUFS][BUFSZ];
static int slot_of_head[256];
static struct virtq rx, tx;

static void post_rx(int i)
{
    struct vbuf b = { bufs[i], BUFSZ, 1 };
    slot_of_head[virtq_submit(&rx, &b, 1, 0)] = i;
}

int main(void)
{
    struct virtio_dev dev;
    if (virtio_find(1, 0, &dev) || virtio_start(&dev, 1UL << 5)
        || virtio_queue(&dev, 0, &rx, rxmem, 64) || virtio_queue(&dev, 1, &tx, txmem, 64)) {
        printf("netbench: no virtio-net device\n");
        return 2;
    }
    virtio_driver_ok(&dev);
    const char *role = cmdline_get("role");
    if (role && !strncmp(role, "sink", 4)) {
        u64 hz = tsc_hz();
        for (int i = 0; i < BUFS && i < rx.size; i++) post_rx(i);
        virtq_kick(&rx);
        u64 bytes = 0, first = 0, last = 0, frames = 0;
        for (;;) {
            u32 len = 0;
            int id = virtq_wait(&rx, &len, 120000000000UL);
            if (id < 0) { printf("netbench: sink timed out\n"); return 1; }
            int slot = slot_of_head[id];
            u8 *f = bufs[slot] + HDR;
            if (len > HDR + 14 && f[12] == 0x88 && f[13] == 0xb6) {
                printf("netbench: received %lu frames, %lu MB/s\n", frames, last > first ? bytes * hz / (last - first) / 1000000 : 0);
                return 0;
            }
            if (!first) first = rdtsc();
            last = rdtsc();
            bytes += len - HDR;
            frames++;
            post_rx(slot);
            virtq_kick(&rx);
        }
    }
    for (int i = 0; i < BUFS; i++) {
        memset(bufs[i], 0, HDR);
        u8 *f = bufs[i] + HDR;
        memset(f, 0xff, 6);
        memset(f + 6, 0x02, 6);
        f[12] = 0x88; f[13] = 0xb5;
        for (int k = 14; k < FRAME; k++) f[k] = (u8)k;
    }
    u64 frames = (cmdline_u64("mib", 256) << 20) / FRAME, sent = 0;
    int inflight = 0;
    while (sent < frames) {
        while (inflight < tx.size && sent < frames) {
            struct vbuf b = { bufs[sent % BUFS], HDR + FRAME, 0 };
            if (virtq_submit(&tx, &b, 1, 0) == 0xffff) break;
            inflight++;
            sent++;
        }
        virtq_kick(&tx);
        while (inflight > 0 && virtq_has_used(&tx)) { virtq_wait(&tx, 0, 1); inflight--; }
        if (inflight == tx.size) { virtq_wait(&tx, 0, 30000000000UL); inflight--; }
    }
    while (inflight > 0) { virtq_wait(&tx, 0, 30000000000UL); inflight--; }
    for (int i = 0; i < 20; i++) {      /* stop frames; some may be dropped under load */
        u8 *f = bufs[0] + HDR;
        f[13] = 0xb6;
        struct vbuf b = { bufs[0], HDR + 60, 0 };
        virtq_submit(&tx, &b, 1, 0);
        virtq_kick(&tx);
        virtq_wait(&tx, 0, 30000000000UL);
        for (u64 t = rdtsc(); rdtsc() - t < 30000000UL; ) cpu_relax();
    }
    printf("netbench: sent %lu frames\n", sent);
    return 0;
}
