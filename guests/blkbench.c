/*
 * blkbench: virtio-blk throughput from inside the guest. Sequential write and read of `mib=`
 * MiB in 128 KiB requests, then 4 KiB random reads, each with up to `qd=` requests in flight
 * (indirect descriptors). Time comes from the TSC, calibrated against the CMOS RTC's seconds.
 */
#include "runtime/virtio.h"

#define T_IN 0
#define T_OUT 1
#define MAXQD 32
#define SEQ (128 * 1024)

struct req { u32 type, reserved; u64 sector; };

static u8 qmem[8192] __attribute__((aligned(4096)));
static struct virtq vq;
static struct virtio_dev dev;
static struct req hdr[MAXQD];
static volatile u8 status[MAXQD];
static struct virtq_desc tables[MAXQD][3] __attribute__((aligned(16)));
static u8 data[MAXQD][SEQ] __attribute__((aligned(4096)));
static u64 seed = 88172645463325252UL;

static u64 next_rand(void) { seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17; return seed; }

static u16 submit(int slot, u32 type, u64 sector, u32 len)
{
    hdr[slot] = (struct req){ type, 0, sector };
    status[slot] = 0xff;
    struct vbuf b[3] = { { &hdr[slot], sizeof hdr[slot], 0 }, { data[slot], len, type == T_IN }, { (const void *)&status[slot], 1, 1 } };
    return virtq_submit(&vq, b, 3, tables[slot]);
}

/* Runs `count` requests keeping `qd` in flight; returns TSC cycles taken. */
static u64 run(u32 type, u64 count, u32 len, int qd, int random, u64 span_sectors)
{
    int slot_of_head[256];
    int free_slots[MAXQD], nfree = qd;
    for (int i = 0; i < qd; i++) free_slots[i] = i;
    u64 issued = 0, done = 0, t0 = rdtsc();
    while (done < count) {
        int batch = 0;
        while (issued < count && nfree > 0) {
            int slot = free_slots[--nfree];
            u64 sector = random ? (next_rand() % (span_sectors - len / 512)) & ~7UL : issued * (len / 512);
            u16 head = submit(slot, type, sector, len);
            slot_of_head[head] = slot;
            issued++;
            batch++;
        }
        if (batch) virtq_kick(&vq);
        int head = virtq_wait(&vq, 0, 60000000000UL);
        if (head < 0) { printf("blkbench: timeout\n"); exit(3); }
        int slot = slot_of_head[head];
        if (status[slot] != 0) { printf("blkbench: request failed, status %d\n", status[slot]); exit(1); }
        free_slots[nfree++] = slot;
        done++;
    }
    return rdtsc() - t0;
}

int main(void)
{
    if (virtio_find(2, 0, &dev) || virtio_start(&dev, VIRTIO_F_INDIRECT_DESC) || virtio_queue(&dev, 0, &vq, qmem, 128)) {
        printf("blkbench: no virtio-blk device\n");
        return 2;
    }
    virtio_driver_ok(&dev);
    u64 hz = tsc_hz();
    u64 mib = cmdline_u64("mib", 64), qd = cmdline_u64("qd", 8);
    if (qd > MAXQD) qd = MAXQD;
    u64 sectors = mib << 11;
    u64 capacity = virtio_config32(&dev, 0) | ((u64)virtio_config32(&dev, 4) << 32);
    if (sectors > capacity) { printf("blkbench: disk too small\n"); return 2; }
    u64 reqs = (mib << 20) / SEQ;

    u64 c = run(T_OUT, reqs, SEQ, (int)qd, 0, sectors);
    printf("blkbench: seq-write %lu MB/s\n", (mib << 20) * hz / c / 1000000);
    c = run(T_IN, reqs, SEQ, (int)qd, 0, sectors);
    printf("blkbench: seq-read %lu MB/s\n", (mib << 20) * hz / c / 1000000);
    u64 n = cmdline_u64("iops", 20000);
    c = run(T_IN, n, 4096, MAXQD, 1, sectors);
    printf("blkbench: rand-read-4k %lu IOPS\n", n * hz / c);
    return 0;
}
