/* vcons: writes to virtio-console (hvc0) and echoes what the host types; a line "q" ends it. */
#include "runtime/virtio.h"

static u8 rxmem[8192] __attribute__((aligned(4096)));
static u8 txmem[8192] __attribute__((aligned(4096)));
static struct virtq rx, tx;
static char inbuf[256];
static char outbuf[512];

static void send(const char *s)
{
    u32 n = (u32)strlen(s);
    memcpy(outbuf, s, n);
    struct vbuf b = { outbuf, n, 0 };
    virtq_submit(&tx, &b, 1, 0);
    virtq_kick(&tx);
    virtq_wait(&tx, 0, 30000000000UL);
}

static void post_rx(void)
{
    struct vbuf b = { inbuf, sizeof inbuf - 1, 1 };
    virtq_submit(&rx, &b, 1, 0);
    virtq_kick(&rx);
}

int main(void)
{
    struct virtio_dev dev;
    if (virtio_find(3, 0, &dev) || virtio_start(&dev, VIRTIO_F_EVENT_IDX)
        || virtio_queue(&dev, 0, &rx, rxmem, 16) || virtio_queue(&dev, 1, &tx, txmem, 16)) {
        printf("vcons: no virtio-console device\n");
        return 2;
    }
    virtio_driver_ok(&dev);
    post_rx();
    send("vcons: hello on hvc0\n");
    for (;;) {
        u32 len = 0;
        if (virtq_wait(&rx, &len, 60000000000UL) < 0) {
            printf("vcons: no input\n");
            return 1;
        }
        inbuf[len] = 0;
        static char line[300];
        int n = 0;
        for (const char *p = "vcons: got "; *p; p++) line[n++] = *p;
        for (u32 i = 0; i < len && n < 296; i++) line[n++] = inbuf[i];
        line[n] = 0;
        send(line);
        for (u32 i = 0; i < len; i++)
            if (inbuf[i] == 'q' && (i + 1 == len || inbuf[i + 1] == '\n'))
                return 0;
        post_rx();
    }
}
