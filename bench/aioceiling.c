/*
 * aioceiling: the host's own O_DIRECT limit for blkbench's patterns, with no VM at all.
 * Linux native AIO straight on the file: sequential 128 KiB writes then reads with 8 in flight,
 * then random 4 KiB reads with 32 in flight. Prints lines in blkbench's format, so that
 * bench/run can show how close each VMM comes to the disk itself.
 * usage: aioceiling FILE MIB
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static aio_context_t ctx;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static double run(int fd, int write, long count, size_t len, int qd, int random, long span, char *bufs)
{
    struct iocb cbs[32], *ptrs[32];
    struct io_event ev[32];
    int free_slots[32], nfree = qd;
    uint64_t seed = 88172645463325252ULL;
    for (int i = 0; i < qd; i++) free_slots[i] = i;
    long issued = 0, done = 0;
    double t0 = now();
    while (done < count) {
        int n = 0;
        while (issued < count && nfree > 0) {
            int s = free_slots[--nfree];
            long off;
            if (random) {
                seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
                off = (long)(seed % (uint64_t)(span / 4096)) * 4096;
            } else {
                off = issued * (long)len;
            }
            memset(&cbs[s], 0, sizeof cbs[s]);
            cbs[s].aio_data = (uint64_t)s;
            cbs[s].aio_lio_opcode = write ? IOCB_CMD_PWRITE : IOCB_CMD_PREAD;
            cbs[s].aio_fildes = (uint32_t)fd;
            cbs[s].aio_buf = (uint64_t)(bufs + (size_t)s * len);
            cbs[s].aio_nbytes = len;
            cbs[s].aio_offset = off;
            ptrs[n++] = &cbs[s];
            issued++;
        }
        if (n && syscall(SYS_io_submit, ctx, n, ptrs) != n) { perror("io_submit"); exit(1); }
        long got = syscall(SYS_io_getevents, ctx, 1, 32, ev, NULL);
        if (got < 1) { perror("io_getevents"); exit(1); }
        for (long i = 0; i < got; i++) {
            if (ev[i].res != (long)len) { fprintf(stderr, "aioceiling: short I/O\n"); exit(1); }
            free_slots[nfree++] = (int)ev[i].data;
            done++;
        }
    }
    return now() - t0;
}

int main(int argc, char **argv)
{
    if (argc != 3) { fprintf(stderr, "usage: aioceiling FILE MIB\n"); return 2; }
    long mib = atol(argv[2]), bytes = mib << 20;
    int fd = open(argv[1], O_RDWR | O_DIRECT);
    if (fd < 0 || syscall(SYS_io_setup, 64, &ctx) < 0) { perror("aioceiling"); return 1; }
    /* Buffers on a transparent huge page, as both VMMs back guest RAM. */
    char *bufs = aligned_alloc(2 << 20, 4 << 20);
    madvise(bufs, 4 << 20, MADV_HUGEPAGE);
    memset(bufs, 0x5a, 32 * 128 * 1024);
    long reqs = bytes / (128 * 1024);
    printf("blkbench: seq-write %.0f MB/s\n", bytes / run(fd, 1, reqs, 128 * 1024, 8, 0, bytes, bufs) / 1e6);
    printf("blkbench: seq-read %.0f MB/s\n", bytes / run(fd, 0, reqs, 128 * 1024, 8, 0, bytes, bufs) / 1e6);
    printf("blkbench: rand-read-4k %.0f IOPS\n", 20000 / run(fd, 0, 20000, 4096, 32, 1, bytes, bufs));
    return 0;
}
