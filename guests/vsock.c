/*
 * vsock: a stream echo server on virtio-vsock port `port=` (default 1234) for one host
 * connection; with `connect=PORT` it instead connects to the host's PORT, sends a line and
 * prints the reply; with `halfclose=1` as well it shuts down its sending side after the line,
 * reads the reply, and waits for the host to close its end. Packets are built by hand: the
 * 44-byte header, then the payload.
 */
#include "runtime/virtio.h"

#define HDR 44
#define RXBUFS 8
#define BUFSZ (HDR + 8192)
#define OP_REQUEST 1
#define OP_RESPONSE 2
#define OP_RST 3
#define OP_SHUTDOWN 4
#define OP_RW 5
#define OP_CREDIT_UPDATE 6
#define BUF_ALLOC (64 * 1024)

struct hdr { u64 src_cid, dst_cid; u32 src_port, dst_port, len; u16 type, op; u32 flags, buf_alloc, fwd_cnt; } __attribute__((packed));

static u8 rxmem[8192] __attribute__((aligned(4096)));
static u8 txmem[8192] __attribute__((aligned(4096)));
static u8 evmem[8192] __attribute__((aligned(4096)));
static u8 rxbuf[RXBUFS][BUFSZ];
static u8 txbuf[BUFSZ];
static int slot_of_head[256];
static struct virtq rx, tx, ev;
static u64 cid;
static u32 fwd_cnt;

static void post_rx(int i)
{
    struct vbuf b = { rxbuf[i], BUFSZ, 1 };
    slot_of_head[virtq_submit(&rx, &b, 1, 0)] = i;
    virtq_kick(&rx);
}

#define SHUTDOWN_RCV 1
#define SHUTDOWN_SEND 2

static void send_flags(u32 src_port, u32 dst_port, u16 op, u32 flags, const u8 *data, u32 len)
{
    struct hdr *h = (struct hdr *)txbuf;
    *h = (struct hdr){ cid, 2, src_port, dst_port, len, 1, op, flags, BUF_ALLOC, fwd_cnt };
    if (len) memcpy(txbuf + HDR, data, len);
    struct vbuf b = { txbuf, HDR + len, 0 };
    virtq_submit(&tx, &b, 1, 0);
    virtq_kick(&tx);
    virtq_wait(&tx, 0, 30000000000UL);
}

static void send(u32 src_port, u32 dst_port, u16 op, const u8 *data, u32 len)
{
    send_flags(src_port, dst_port, op, op == OP_SHUTDOWN ? SHUTDOWN_RCV | SHUTDOWN_SEND : 0, data, len);
}

/* The next packet from the host (its rx slot), or -1 on timeout. */
static int receive(struct hdr **h, u8 **data)
{
    u32 len;
    int id = virtq_wait(&rx, &len, 120000000000UL);
    if (id < 0) return -1;
    int slot = slot_of_head[id];
    *h = (struct hdr *)rxbuf[slot];
    *data = rxbuf[slot] + HDR;
    return slot;
}

int main(void)
{
    struct virtio_dev dev;
    if (virtio_find(19, 0, &dev) || virtio_start(&dev, 0) || virtio_queue(&dev, 0, &rx, rxmem, 16)
        || virtio_queue(&dev, 1, &tx, txmem, 16) || virtio_queue(&dev, 2, &ev, evmem, 4)) {
        printf("vsock: no virtio-vsock device\n");
        return 2;
    }
    virtio_driver_ok(&dev);
    cid = virtio_config32(&dev, 0) | ((u64)virtio_config32(&dev, 4) << 32);
    for (int i = 0; i < RXBUFS; i++) post_rx(i);
    printf("vsock: cid %lu\n", cid);

    u32 host_port = (u32)cmdline_u64("connect", 0);
    if (host_port) {
        const u32 me = 5000;
        static const char line[] = "hello from the guest\n";
        int half = (int)cmdline_u64("halfclose", 0);
        send(me, host_port, OP_REQUEST, 0, 0);
        for (int done = 0; !done; ) {
            struct hdr *h; u8 *d;
            int slot = receive(&h, &d);
            if (slot < 0) { printf("vsock: no answer from host port %u\n", host_port); return 1; }
            if (h->src_port != host_port || h->dst_port != me) {   /* not our connection */
                post_rx(slot);
                continue;
            }
            if (h->op == OP_RST) { printf("vsock: host port %u refused\n", host_port); return 1; }
            if (h->op == OP_RESPONSE) {
                send(me, host_port, OP_RW, (const u8 *)line, sizeof line - 1);
                if (half) send_flags(me, host_port, OP_SHUTDOWN, SHUTDOWN_SEND, 0, 0);
            }
            if (h->op == OP_RW) {
                d[h->len < 200 ? h->len : 200] = 0;
                fwd_cnt += h->len;
                printf("vsock: host replied: %s", (char *)d);
                done = !half;
            }
            if (h->op == OP_SHUTDOWN) {
                printf("vsock: host closed its end (flags %u)\n", h->flags);
                send(me, host_port, OP_RST, 0, 0);
                post_rx(slot);
                return 0;
            }
            post_rx(slot);
        }
        send(me, host_port, OP_SHUTDOWN, 0, 0);
        return 0;
    }

    u32 port = (u32)cmdline_u64("port", 1234), peer = 0;
    u64 echoed = 0;
    for (;;) {
        struct hdr *h; u8 *d;
        int slot = receive(&h, &d);
        if (slot < 0) { printf("vsock: no connection\n"); return 1; }
        if (h->op == OP_REQUEST && h->dst_port == port) {
            peer = h->src_port;
            send(port, peer, OP_RESPONSE, 0, 0);
        } else if (h->op == OP_RW && h->src_port == peer) {
            fwd_cnt += h->len;                 /* consumed: the reply's header returns the credit */
            send(port, peer, OP_RW, d, h->len);
            echoed += h->len;
        } else if ((h->op == OP_SHUTDOWN || h->op == OP_RST) && h->src_port != peer) {
            /* an earlier connection the host gave up on (a newer request took its place) */
            if (h->op == OP_SHUTDOWN) send(port, h->src_port, OP_RST, 0, 0);
        } else if (h->op == OP_SHUTDOWN || h->op == OP_RST) {
            if (h->op == OP_SHUTDOWN) send(port, peer, OP_RST, 0, 0);
            printf("vsock: connection closed, echoed %lu bytes\n", echoed);
            return 0;
        }
        post_rx(slot);
    }
}
