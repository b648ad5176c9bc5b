/*
 * net: Ethernet frames over virtio-net. role=echo sends every frame back until a stop frame;
 * role=ping sends `frames=` frames of 60..1514 bytes with a checked payload, waits for each
 * echo (resending while the peer is not up yet), verifies it, then stops the echoer.
 */
#include "runtime/virtio.h"

#define HDR 12
#define RXBUFS 8
#define BUFSZ 2048
#define TYPE_DATA 0xb5
#define TYPE_STOP 0xb6

static u8 rxmem[8192] __attribute__((aligned(4096)));
static u8 txmem[8192] __attribute__((aligned(4096)));
static u8 rxbuf[RXBUFS][BUFSZ];
static u8 txbuf[BUFSZ];
static u8 frame[BUFSZ];
static int slot_of_head[256];
static struct virtq rx, tx;
static u8 mac[6];

static void post_rx(int i)
{
    struct vbuf b = { rxbuf[i], BUFSZ, 1 };
    slot_of_head[virtq_submit(&rx, &b, 1, 0)] = i;
    virtq_kick(&rx);
}

static void send(const u8 *f, u32 len)
{
    memset(txbuf, 0, HDR);
    memcpy(txbuf + HDR, f, len);
    struct vbuf b = { txbuf, HDR + len, 0 };
    virtq_submit(&tx, &b, 1, 0);
    virtq_kick(&tx);
    virtq_wait(&tx, 0, 30000000000UL);
}

/* The next received frame (its rx slot), or -1 on timeout. */
static int receive(u8 **f, u32 *len, u64 timeout)
{
    u32 used = 0;
    int id = virtq_wait(&rx, &used, timeout);
    if (id < 0) return -1;
    int slot = slot_of_head[id];
    *f = rxbuf[slot] + HDR;
    *len = used > HDR ? used - HDR : 0;
    return slot;
}

static u32 build(u32 seq, u8 type)
{
    u32 len = 60 + (seq * 37) % 1455;
    memset(frame, 0xff, 6);
    memcpy(frame + 6, mac, 6);
    frame[12] = 0x88;
    frame[13] = type;
    frame[14] = (u8)seq; frame[15] = (u8)(seq >> 8); frame[16] = (u8)(seq >> 16); frame[17] = (u8)(seq >> 24);
    for (u32 k = 18; k < len; k++) frame[k] = (u8)(seq + k);
    return len;
}

int main(void)
{
    struct virtio_dev dev;
    if (virtio_find(1, 0, &dev) || virtio_start(&dev, 1UL << 5)
        || virtio_queue(&dev, 0, &rx, rxmem, 16) || virtio_queue(&dev, 1, &tx, txmem, 16)) {
        printf("net: no virtio-net device\n");
        return 2;
    }
    virtio_driver_ok(&dev);
    u32 m0 = virtio_config32(&dev, 0), m1 = virtio_config32(&dev, 4);
    for (int i = 0; i < 4; i++) mac[i] = (u8)(m0 >> (8 * i));
    mac[4] = (u8)m1; mac[5] = (u8)(m1 >> 8);
    for (int i = 0; i < RXBUFS; i++) post_rx(i);
    printf("net: mac %02x:%02x:%02x:%02x:%02x:%02x, link %s\n", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5],
           (m1 >> 16) & 1 ? "up" : "down");

    const char *role = cmdline_get("role");
    if (role && !strncmp(role, "echo", 4)) {
        int echoed = 0;
        for (;;) {
            u8 *f; u32 len;
            int slot = receive(&f, &len, 120000000000UL);
            if (slot < 0) { printf("net: echo timed out\n"); return 1; }
            if (len >= 14 && f[12] == 0x88 && f[13] == TYPE_STOP) {
                printf("net: echoed %d frames\n", echoed);
                return 0;
            }
            if (len >= 18 && f[12] == 0x88 && f[13] == TYPE_DATA) {   /* anything else on the wire is not ours */
                send(f, len);
                echoed++;
            }
            post_rx(slot);
        }
    }

    u32 frames = (u32)cmdline_u64("frames", 1000);
    u64 bytes = 0;
    for (u32 seq = 0; seq < frames; seq++) {
        u32 len = build(seq, TYPE_DATA);
        int tries = 0;
        for (;;) {
            send(frame, len);
            u8 *f; u32 got;
            int slot = receive(&f, &got, 3000000000UL);
            if (slot < 0) {
                if (++tries == 50) { printf("net: no echo for frame %u\n", seq); return 1; }
                continue;   /* the echoer may not be up yet: send again */
            }
            int ours = got >= 18 && f[12] == 0x88 && f[13] == TYPE_DATA;
            int ok = got == len && !memcmp(f, frame, len);
            post_rx(slot);
            if (!ours) {
                tries--;        /* someone else's frame on the wire: keep waiting for ours */
                continue;
            }
            if (!ok) {
                u32 s = (u32)f[14] | ((u32)f[15] << 8);
                if (s < seq) continue;   /* a late echo of a resent frame */
                printf("net: frame %u came back wrong (%u bytes, want %u)\n", seq, got, len);
                return 1;
            }
            bytes += len;
            break;
        }
    }
    send(frame, build(0, TYPE_STOP));
    printf("net: %u frames echoed, %lu bytes, all verified\n", frames, bytes);
    return 0;
}
