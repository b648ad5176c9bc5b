/* A polling virtio-mmio (version 2) driver core for the test guests, running at CPL3. */
#ifndef VIREO_GUEST_VIRTIO_H
#define VIREO_GUEST_VIRTIO_H
#include "rt.h"

#define VIRTIO_F_INDIRECT_DESC (1UL << 28)
#define VIRTIO_F_EVENT_IDX (1UL << 29)
#define VIRTIO_F_VERSION_1 (1UL << 32)

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_DESC_F_INDIRECT 4

struct virtq_desc { u64 addr; u32 len; u16 flags; u16 next; };

#define VIRTIO_MMIO 0
#define VIRTIO_PCI 1

struct virtio_dev {
    int transport;      /* VIRTIO_MMIO or VIRTIO_PCI */
    u64 base;           /* MMIO: the register window */
    u32 irq;
    u32 device_id;
    u64 features;       /* negotiated */
    u64 common, notify, devcfg;   /* PCI: regions found through the vendor capabilities */
    u32 notify_mult;
    int pci_slot;
};

struct virtq {
    struct virtio_dev *dev;
    int index;
    u16 size;
    struct virtq_desc *desc;
    volatile u16 *avail;    /* flags, idx, ring[size], used_event */
    volatile u16 *used;     /* flags, idx, then ring of {u32 id, u32 len}, avail_event */
    u16 last_used;
    u16 avail_idx;
    u64 notify_addr;        /* where a kick is written (the queue index) */
    u16 nfree;              /* descriptors are taken from, and returned to, this free list */
    u16 free[256];
};

/* A buffer of a request: address, length, and whether the device writes it. */
struct vbuf { const void *addr; u32 len; int device_writes; };

/* The nth device of this type: virtio_mmio.device=SIZE@BASE:IRQ entries first, then virtio-pci
 * functions on bus 0 (configuration mechanism #1). 0 when found. */
int virtio_find(u32 device_id, int nth, struct virtio_dev *dev);
/* Reset, acknowledge and negotiate (wanted & offered, with VERSION_1). 0 when FEATURES_OK held. */
int virtio_start(struct virtio_dev *dev, u64 wanted);
/* Sets up queue `index` of `size` entries in `mem` (8 KiB, 4 KiB-aligned, zeroed here). 0 on success. */
int virtio_queue(struct virtio_dev *dev, int index, struct virtq *q, void *mem, u16 size);
void virtio_driver_ok(struct virtio_dev *dev);
/* What Linux's PCI probe does: memory decoding off, each memory BAR sized (all ones written, read
 * back, restored), decoding on. Returns the sum of the sizes (0 on MMIO). */
u64 virtio_pci_size_bars(struct virtio_dev *dev);
/* PCI only, before virtio_driver_ok: queue `queue` interrupts through MSI-X table entry `entry`,
 * delivered to CPU 0 as `cpu_vector`. 0 when the device took it. */
int virtio_pci_msix(struct virtio_dev *dev, int queue, int entry, u8 cpu_vector);
u32 virtio_status(struct virtio_dev *dev);
u32 virtio_config32(struct virtio_dev *dev, u32 offset);

/* Posts a chain of n buffers (direct, or through `indirect_table` when it is not 0); returns its
 * head, or 0xffff when too few descriptors are free (wait for a completion, then retry). */
u16 virtq_submit(struct virtq *q, const struct vbuf *bufs, int n, struct virtq_desc *indirect_table);
/* Queues start with interrupts off (VIRTQ_AVAIL_F_NO_INTERRUPT), as a polling driver wants;
 * a driver that waits for interrupts turns them on. Ignored by devices when EVENT_IDX is on. */
void virtq_interrupts(struct virtq *q, int on);
/* Notifies the device of new buffers, unless it asked not to be (VIRTQ_USED_F_NO_NOTIFY). */
void virtq_kick(struct virtq *q);
/* Waits for the next used element and frees its descriptors; returns its id (the head), with
 * *len the bytes written. -1 on timeout. Completions may come in any order. */
int virtq_wait(struct virtq *q, u32 *len, u64 timeout_cycles);
/* True when a used element is waiting. */
int virtq_has_used(struct virtq *q);

#endif
