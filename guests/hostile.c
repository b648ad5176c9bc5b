/* hostile: a guest that attacks its own virtio devices (a disk and an rng), as a malicious guest
 * would, and then checks they still serve once reset:
 *   - notification storms: kicks with nothing available, tens of thousands of them;
 *   - chains into MMIO and the PCI hole, past RAM, of absurd length, looping, indirect tables
 *     pointing at the APIC, avail rings full of heads out of range;
 *   - queue size and addresses changed under the running device;
 *   - configuration writes between a request's submit and its kick;
 *   - resets in a loop, each with a request in flight.
 * Then a clean start and a read of sector 0 (the disk) and 64 random bytes (the rng) that must
 * succeed. "hostile: idle" follows, and the CPU halts, so the host can measure the VMM at rest.
 * cmdline: rounds=N (default 20), storm=N kicks a storm (default 20000). Exit 0 when both devices
 * serve again. */
#include "runtime/virtio.h"

#define S_ACK 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8
#define S_NEEDS_RESET 0x40

static u8 blk_qmem[8192] __attribute__((aligned(4096)));
static u8 rng_qmem[8192] __attribute__((aligned(4096)));
static struct virtq_desc bad_table[16] __attribute__((aligned(16)));
static u8 hdr[16], data[4096], status_byte;

static volatile u8 *common8(struct virtio_dev *d, u32 off) { return (volatile u8 *)(d->common + off); }
static volatile u16 *common16(struct virtio_dev *d, u32 off) { return (volatile u16 *)(d->common + off); }
static volatile u32 *common32(struct virtio_dev *d, u32 off) { return (volatile u32 *)(d->common + off); }
static volatile u32 *reg(struct virtio_dev *d, u32 off) { return (volatile u32 *)(d->base + off); }

static void set_status(struct virtio_dev *d, u8 s)
{
    if (d->transport == VIRTIO_PCI)
        *common8(d, 0x14) = s;
    else
        *reg(d, 0x070) = s;
}

static void notify(struct virtq *q)
{
    if (q->dev->transport == VIRTIO_PCI)
        *(volatile u16 *)q->notify_addr = (u16)q->index;
    else
        *(volatile u32 *)q->notify_addr = (u32)q->index;
}

/* A full start: reset, features, queue 0 of 8, DRIVER_OK. 0 when the device took it. */
static int start(struct virtio_dev *d, struct virtq *q, u8 *mem)
{
    if (virtio_start(d, 0) || virtio_queue(d, 0, q, mem, 8))
        return -1;
    virtio_driver_ok(d);
    return 0;
}

/* Publishes head `h` in the avail ring without a descriptor of ours behind it. */
static void publish_raw(struct virtq *q, u16 h)
{
    q->avail[2 + (q->avail_idx % q->size)] = h;
    __asm__ volatile("" ::: "memory");
    q->avail_idx++;
    q->avail[1] = q->avail_idx;
}

/* Descriptors that point where a device must never read or write. */
static void poison(struct virtq *q, int round)
{
    static const u64 places[] = {
        0xfee00000UL,          /* the local APIC */
        0xfec00000UL,          /* the IOAPIC */
        0xd0000000UL,          /* the PCI hole */
        0xe0000000UL,          /* ECAM */
        0x100000000000UL,      /* far past RAM */
        0xfffffffffffff000UL,  /* where a sum wraps */
    };
    for (int i = 0; i < q->size; i++) {
        struct virtq_desc *d = &q->desc[i];
        d->addr = places[(i + round) % 6];
        d->len = (i & 1) ? 0xffffffffU : 4096;
        d->flags = (u16)((i % 3 == 0 ? VIRTQ_DESC_F_NEXT : 0) | (i & 2 ? VIRTQ_DESC_F_WRITE : 0));
        d->next = (u16)(i % 4 == 0 ? i : (i + 1) % q->size);   /* some chains loop on themselves */
    }
    for (int i = 0; i < 16; i++) {
        bad_table[i].addr = places[i % 6];
        bad_table[i].len = 512;
        bad_table[i].flags = (u16)(i == 15 ? VIRTQ_DESC_F_INDIRECT : VIRTQ_DESC_F_NEXT);   /* a nested indirect */
        bad_table[i].next = (u16)((i + 1) % 16);
    }
    q->desc[q->size - 1] = (struct virtq_desc){ (u64)bad_table, sizeof bad_table, VIRTQ_DESC_F_INDIRECT, 0 };
    q->desc[q->size - 2] = (struct virtq_desc){ 0xfee00000UL, 4096, VIRTQ_DESC_F_INDIRECT, 0 };  /* a table in the APIC */
    for (int i = 0; i < q->size; i++)
        publish_raw(q, (u16)(i % 3 == 2 ? 0xffff - i : i));                                  /* heads out of range too */
}

/* A blk read of sector 0 into data; 0 when it completed with status 0. */
static int read_sector0(struct virtq *q)
{
    memset(hdr, 0, sizeof hdr);
    status_byte = 0xff;
    struct vbuf b[3] = { { hdr, 16, 0 }, { data, 512, 1 }, { &status_byte, 1, 1 } };
    if (virtq_submit(q, b, 3, 0) == 0xffff)
        return -1;
    virtq_kick(q);
    u32 len;
    return virtq_wait(q, &len, 5000000000UL) < 0 || status_byte != 0 ? -1 : 0;
}

int main(void)
{
    struct virtio_dev blk, rng;
    struct virtq bq, rq;
    if (virtio_find(2, 0, &blk) || virtio_find(4, 0, &rng)) {
        printf("hostile: needs a virtio-blk disk and a virtio-rng\n");
        return 2;
    }
    u64 rounds = cmdline_u64("rounds", 20), storm = cmdline_u64("storm", 20000);
    u64 needs_reset = 0;
    for (u64 r = 0; r < rounds; r++) {
        struct virtio_dev *devs[2] = { &blk, &rng };
        struct virtq *qs[2] = { &bq, &rq };
        u8 *mems[2] = { blk_qmem, rng_qmem };
        for (int k = 0; k < 2; k++) {
            struct virtio_dev *d = devs[k];
            struct virtq *q = qs[k];
            if (start(d, q, mems[k])) {
                printf("hostile: round %lu: device %d refused a clean start\n", r, k);
                return 1;
            }
            /* A storm of kicks with nothing new available. */
            for (u64 i = 0; i < storm / rounds + 1; i++)
                notify(q);
            /* Poisoned chains, then a storm on them. */
            poison(q, (int)r);
            for (int i = 0; i < 64; i++)
                notify(q);
            if (virtio_status(d) & S_NEEDS_RESET)
                needs_reset++;
            /* The queue moved under the running device: size 1, rings in the APIC. */
            if (d->transport == VIRTIO_PCI) {
                *common16(d, 0x16) = 0;
                *common16(d, 0x18) = 1;
                *common32(d, 0x20) = 0xfee00000U;
                *common32(d, 0x28) = 0xfec00000U;
                *common16(d, 0x16) = 0x7fff;   /* a queue that is not there */
                *common16(d, 0x1c) = 1;
            } else {
                *reg(d, 0x030) = 0;
                *reg(d, 0x038) = 1;
                *reg(d, 0x080) = 0xfee00000U;
                *reg(d, 0x044) = 0;
                *reg(d, 0x030) = 0x7fff;
            }
            notify(q);
            /* Resets in a loop, each with a request in flight and the config written between
             * the submit and the kick. */
            for (int i = 0; i < 5; i++) {
                set_status(d, 0);
                if (start(d, q, mems[k]))
                    break;
                struct vbuf b = { data, 64, 1 };
                virtq_submit(q, &b, 1, 0);
                if (d->transport == VIRTIO_PCI)
                    for (u32 off = 0; off < 64; off += 4)
                        *(volatile u32 *)(d->devcfg + off) = 0xdeadbeef;
                else
                    for (u32 off = 0; off < 64; off += 4)
                        *reg(d, 0x100 + off) = 0xdeadbeef;
                notify(q);
                set_status(d, 0);   /* reset with the request in flight */
            }
        }
    }
    /* Both devices must serve again after a reset. */
    if (start(&blk, &bq, blk_qmem) || read_sector0(&bq)) {
        printf("hostile: the disk does not serve after the attacks\n");
        return 1;
    }
    if (start(&rng, &rq, rng_qmem)) {
        printf("hostile: the rng refused a clean start\n");
        return 1;
    }
    struct vbuf b = { data, 64, 1 };
    virtq_submit(&rq, &b, 1, 0);
    virtq_kick(&rq);
    u32 len = 0;
    if (virtq_wait(&rq, &len, 5000000000UL) < 0 || len != 64) {
        printf("hostile: the rng does not serve after the attacks\n");
        return 1;
    }
    printf("hostile: %lu rounds, %lu times NEEDS_RESET; the disk and the rng serve again\n", rounds, needs_reset);
    if (cmdline_get("idle")) {
        printf("hostile: idle\n");
        cpu_halt_forever();
    }
    return 0;
}
