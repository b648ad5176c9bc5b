/* rng: asks virtio-rng for 2 x 4 KiB and checks they look random (distinct, chi-square sane). */
#include "runtime/virtio.h"

static u8 qmem[8192] __attribute__((aligned(4096)));
static u8 buf[2][4096];

int main(void)
{
    struct virtio_dev dev;
    struct virtq vq;
    if (virtio_find(4, 0, &dev) || virtio_start(&dev, VIRTIO_F_EVENT_IDX) || virtio_queue(&dev, 0, &vq, qmem, 64)) {
        printf("rng: no virtio-rng device\n");
        return 2;
    }
    int msix = cmdline_get("msix") != 0;
    if (msix && virtio_pci_msix(&dev, 0, 1, 0x45)) {
        printf("rng: the device refused MSI-X\n");
        return 1;
    }
    virtq_interrupts(&vq, msix);
    virtio_driver_ok(&dev);
    if (msix) {
        irq_enable();
        struct vbuf b = { buf[0], 64, 1 };
        virtq_submit(&vq, &b, 1, 0);
        virtq_kick(&vq);
        u64 deadline = rdtsc() + 20000000000UL;
        while (!irq_counts[0x45] && rdtsc() < deadline)
            cpu_relax();
        if (!irq_counts[0x45]) { printf("rng: no MSI-X interrupt\n"); return 1; }
        virtq_wait(&vq, 0, 1000000000UL);
        printf("rng: MSI-X interrupt on vector 0x45 (%lu)\n", irq_counts[0x45]);
    }
    for (int i = 0; i < 2; i++) {
        struct vbuf b = { buf[i], sizeof buf[i], 1 };
        virtq_submit(&vq, &b, 1, 0);
        virtq_kick(&vq);
        u32 len = 0;
        if (virtq_wait(&vq, &len, 30000000000UL) < 0 || len != sizeof buf[i]) {
            printf("rng: request %d got %u bytes\n", i, len);
            return 1;
        }
    }
    u32 counts[256] = { 0 };
    for (int i = 0; i < 2; i++)
        for (u32 j = 0; j < sizeof buf[i]; j++)
            counts[buf[i][j]]++;
    /* 8192 bytes over 256 values: 32 expected each; chi-square has 255 degrees of freedom. */
    u64 chi2x32 = 0;
    for (int v = 0; v < 256; v++) {
        long d = (long)counts[v] - 32;
        chi2x32 += (u64)(d * d);
    }
    u64 chi2 = chi2x32 / 32;
    int distinct = memcmp(buf[0], buf[1], sizeof buf[0]) != 0;
    printf("rng: 8192 bytes, chi-square %lu (255 dof), buffers %s\n", chi2, distinct ? "differ" : "IDENTICAL");
    return distinct && chi2 > 150 && chi2 < 400 ? 0 : 1;
}
