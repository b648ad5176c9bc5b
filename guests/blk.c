/*
 * blk: drives virtio-blk from CPL3. Writes a pattern over `mib=` MiB (direct and indirect
 * chains, 64 KiB requests), flushes, reads it back and verifies, then checks write-zeroes,
 * discard, get-id, an out-of-range read, and with `ro=1` that writes are refused.
 * `hold=1` stops after the flush, so a test can kill the VMM and check the file.
 * `keep=1` reads each chunk into the buffer as the last one left it (no memset first), so only
 * the device writes it: a migration that missed the device's writes shows as a MISMATCH.
 */
#include "runtime/virtio.h"

#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4
#define T_GET_ID 8
#define T_DISCARD 11
#define T_WRITE_ZEROES 13
#define CHUNK (64 * 1024)
#define WAIT_CYCLES 30000000000UL

struct req_header { u32 type, reserved; u64 sector; };
struct segment { u64 sector; u32 count, flags; };

static u8 qmem[8192] __attribute__((aligned(4096)));
static struct virtq_desc indirect[4] __attribute__((aligned(16)));
static u8 data[CHUNK] __attribute__((aligned(4096)));
static struct virtq vq;
static struct virtio_dev dev;

/* The pattern the host test recomputes: one 64-bit word per 8 bytes of disk. */
static u64 pattern(u64 byte_offset) { return (byte_offset / 8) * 0x9e3779b97f4a7c15UL ^ 0x5eed; }

static int request(u32 type, u64 sector, void *buf, u32 len, int device_writes, int use_indirect)
{
    static struct req_header hdr;
    static volatile u8 status;
    hdr.type = type;
    hdr.reserved = 0;
    hdr.sector = sector;
    status = 0xff;
    struct vbuf bufs[3] = { { &hdr, sizeof hdr, 0 }, { buf, len, device_writes }, { (const void *)&status, 1, 1 } };
    int n = 3;
    if (len == 0) { bufs[1] = bufs[2]; n = 2; }
    virtq_submit(&vq, bufs, n, use_indirect ? indirect : 0);
    virtq_kick(&vq);
    if (virtq_wait(&vq, 0, WAIT_CYCLES) < 0) {
        printf("blk: request type %u timed out\n", type);
        exit(3);
    }
    return status;
}

int main(void)
{
    if (virtio_find(2, 0, &dev)) {
        printf("blk: no virtio-blk device\n");
        return 2;
    }
    u64 wanted = VIRTIO_F_INDIRECT_DESC | VIRTIO_F_EVENT_IDX | (1UL << 9) | (1UL << 5) | (1UL << 13) | (1UL << 14);
    if (virtio_start(&dev, wanted) || virtio_queue(&dev, 0, &vq, qmem, 128)) {
        printf("blk: negotiation failed, status %x\n", virtio_status(&dev));
        return 2;
    }
    virtio_driver_ok(&dev);
    u64 capacity = virtio_config32(&dev, 0) | ((u64)virtio_config32(&dev, 4) << 32);
    int ro = (dev.features >> 5) & 1;
    printf("blk: %lu sectors, features %lx%s\n", capacity, dev.features, ro ? " (read-only)" : "");

    static char id[21];
    if (request(T_GET_ID, 0, id, 20, 1, 0) != 0) { printf("blk: get-id failed\n"); return 1; }
    printf("blk: id \"%s\"\n", id);

    if (cmdline_get("ro")) {
        int st = request(T_OUT, 0, data, 512, 0, 0);
        printf("blk: write on a read-only disk -> status %d %s\n", st, st == 1 ? "refused" : "ACCEPTED");
        return st == 1 && ro ? 0 : 1;
    }

    u64 bytes = cmdline_u64("mib", 4) << 20;
    if (bytes > capacity * 512) bytes = capacity * 512 / CHUNK * CHUNK;
    for (u64 off = 0; off < bytes; off += CHUNK) {
        for (u32 i = 0; i < CHUNK / 8; i++)
            ((u64 *)data)[i] = pattern(off + 8UL * i);
        if (request(T_OUT, off / 512, data, CHUNK, 0, (off / CHUNK) & 1) != 0) {
            printf("blk: write at %lx failed\n", off);
            return 1;
        }
    }
    if (request(T_FLUSH, 0, 0, 0, 1, 0) != 0) { printf("blk: flush failed\n"); return 1; }
    printf("blk: wrote %lu MiB, flushed\n", bytes >> 20);
    if (cmdline_get("hold"))
        for (;;) cpu_relax();

    u64 sum = 0;
    int keep = cmdline_get("keep") != 0;
    for (u64 off = 0; off < bytes; off += CHUNK) {
        if (!keep)
            memset(data, 0, CHUNK);
        if (request(T_IN, off / 512, data, CHUNK, 1, !((off / CHUNK) & 1)) != 0) {
            printf("blk: read at %lx failed\n", off);
            return 1;
        }
        for (u32 i = 0; i < CHUNK / 8; i++) {
            u64 want = pattern(off + 8UL * i), got = ((u64 *)data)[i];
            if (got != want) {
                printf("blk: MISMATCH at byte %lx: %lx want %lx\n", off + 8UL * i, got, want);
                return 1;
            }
            sum += got;
        }
    }
    printf("blk: read back %lu MiB, verified, sum %lx\n", bytes >> 20, sum);

    static struct segment seg;
    seg = (struct segment){ 0, CHUNK / 512, 0 };
    if (request(T_WRITE_ZEROES, 0, &seg, sizeof seg, 0, 0) != 0) { printf("blk: write-zeroes failed\n"); return 1; }
    request(T_IN, 0, data, CHUNK, 1, 0);
    for (u32 i = 0; i < CHUNK; i++)
        if (data[i]) { printf("blk: write-zeroes left byte %u = %x\n", i, data[i]); return 1; }
    seg = (struct segment){ CHUNK / 512, CHUNK / 512, 0 };
    if (request(T_DISCARD, 0, &seg, sizeof seg, 0, 0) != 0) { printf("blk: discard failed\n"); return 1; }
    int st = request(T_IN, capacity, data, 512, 1, 0);
    if (st != 1) { printf("blk: read past the end -> status %d, want 1 (IOERR)\n", st); return 1; }
    printf("blk: write-zeroes, discard and out-of-range checks ok\n");
    return 0;
}
