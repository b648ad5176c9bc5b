/* Polling virtio-mmio driver core: every access is a plain load or store from CPL3. */
#include "virtio.h"

#define REG(dev, off) ((volatile u32 *)((dev)->base + (off)))
#define S_ACK 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8

static u64 parse_num(const char **p, int base)
{
    u64 n = 0;
    for (;;) {
        char c = **p;
        int d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (base == 16 && c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (base == 16 && c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else break;
        n = n * (u64)base + (u64)d;
        (*p)++;
    }
    return n;
}

static u32 pci_read32(int slot, int off)
{
    outl(0xcf8, 0x80000000u | ((u32)slot << 11) | ((u32)off & 0xfc));
    return inl(0xcfc);
}

static void pci_write32(int slot, int off, u32 v)
{
    outl(0xcf8, 0x80000000u | ((u32)slot << 11) | ((u32)off & 0xfc));
    outl(0xcfc, v);
}

static int virtio_find_pci(u32 device_id, int nth, struct virtio_dev *dev)
{
    for (int slot = 0; slot < 32; slot++) {
        u32 id = pci_read32(slot, 0);
        if ((id & 0xffff) != 0x1af4 || (id >> 16) != 0x1040 + device_id || nth-- > 0)
            continue;
        u64 bar[6];
        for (int b = 0; b < 6; b++) {
            u32 lo = pci_read32(slot, 0x10 + 4 * b);
            bar[b] = lo & ~0xfUL;
            if ((lo & 0x6) == 0x4 && b < 5)        /* 64-bit BAR: the next one holds the high half */
                bar[b] |= (u64)pci_read32(slot, 0x14 + 4 * b) << 32;
        }
        struct virtio_dev d = { 0 };
        d.transport = VIRTIO_PCI;
        d.device_id = device_id;
        d.pci_slot = slot;
        for (int ptr = pci_read32(slot, 0x34) & 0xfc; ptr; ) {
            u32 cap = pci_read32(slot, ptr);
            if ((cap & 0xff) == 0x09) {
                u32 type = cap >> 24, b = pci_read32(slot, ptr + 4) & 0xff, off = pci_read32(slot, ptr + 8);
                u64 at = b < 6 ? bar[b] + off : 0;
                if (type == 1) d.common = at;
                if (type == 2) { d.notify = at; d.notify_mult = pci_read32(slot, ptr + 16); }
                if (type == 4) d.devcfg = at;
            }
            ptr = (cap >> 8) & 0xfc;
        }
        if (!d.common || !d.notify || !d.devcfg)
            return -1;
        pci_write32(slot, 0x04, pci_read32(slot, 0x04) | 0x6);   /* memory decoding, bus mastering */
        *dev = d;
        return 0;
    }
    return -1;
}

#define COMMON8(dev, off) (*(volatile u8 *)((dev)->common + (off)))
#define COMMON16(dev, off) (*(volatile u16 *)((dev)->common + (off)))
#define COMMON32(dev, off) (*(volatile u32 *)((dev)->common + (off)))

int virtio_find(u32 device_id, int nth, struct virtio_dev *dev)
{
    static const char key[] = "virtio_mmio.device=";
    for (const char *p = cmdline(); *p; ) {
        while (*p == ' ') p++;
        if (strncmp(p, key, sizeof key - 1)) {
            while (*p && *p != ' ') p++;
            continue;
        }
        p += sizeof key - 1;
        parse_num(&p, 10);
        if (*p == 'K' || *p == 'k' || *p == 'M' || *p == 'm') p++;
        if (*p++ != '@') continue;
        if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) p += 2;
        u64 base = parse_num(&p, 16);
        u32 irq = 0;
        if (*p == ':') { p++; irq = (u32)parse_num(&p, 10); }
        struct virtio_dev d = { 0 };
        d.transport = VIRTIO_MMIO;
        d.base = base;
        d.irq = irq;
        if (*REG(&d, 0x000) != 0x74726976 || *REG(&d, 0x004) != 2)
            continue;
        d.device_id = *REG(&d, 0x008);
        if (d.device_id == device_id && nth-- == 0) {
            *dev = d;
            return 0;
        }
    }
    return virtio_find_pci(device_id, nth, dev);
}

u32 virtio_status(struct virtio_dev *dev)
{
    return dev->transport == VIRTIO_PCI ? COMMON8(dev, 0x14) : *REG(dev, 0x070);
}

u32 virtio_config32(struct virtio_dev *dev, u32 offset)
{
    return dev->transport == VIRTIO_PCI ? *(volatile u32 *)(dev->devcfg + offset) : *REG(dev, 0x100 + offset);
}

static int virtio_start_pci(struct virtio_dev *dev, u64 wanted)
{
    COMMON8(dev, 0x14) = 0;
    COMMON8(dev, 0x14) = S_ACK;
    COMMON8(dev, 0x14) = S_ACK | S_DRIVER;
    COMMON32(dev, 0x00) = 0;
    u64 offered = COMMON32(dev, 0x04);
    COMMON32(dev, 0x00) = 1;
    offered |= (u64)COMMON32(dev, 0x04) << 32;
    u64 features = (wanted | VIRTIO_F_VERSION_1) & offered;
    COMMON32(dev, 0x08) = 0;
    COMMON32(dev, 0x0c) = (u32)features;
    COMMON32(dev, 0x08) = 1;
    COMMON32(dev, 0x0c) = (u32)(features >> 32);
    COMMON8(dev, 0x14) = S_ACK | S_DRIVER | S_FEATURES_OK;
    if (!(COMMON8(dev, 0x14) & S_FEATURES_OK))
        return -1;
    dev->features = features;
    return 0;
}

int virtio_start(struct virtio_dev *dev, u64 wanted)
{
    if (dev->transport == VIRTIO_PCI)
        return virtio_start_pci(dev, wanted);
    *REG(dev, 0x070) = 0;
    *REG(dev, 0x070) = S_ACK;
    *REG(dev, 0x070) = S_ACK | S_DRIVER;
    *REG(dev, 0x014) = 0;
    u64 offered = *REG(dev, 0x010);
    *REG(dev, 0x014) = 1;
    offered |= (u64)*REG(dev, 0x010) << 32;
    u64 features = (wanted | VIRTIO_F_VERSION_1) & offered;
    *REG(dev, 0x024) = 0;
    *REG(dev, 0x020) = (u32)features;
    *REG(dev, 0x024) = 1;
    *REG(dev, 0x020) = (u32)(features >> 32);
    *REG(dev, 0x070) = S_ACK | S_DRIVER | S_FEATURES_OK;
    if (!(*REG(dev, 0x070) & S_FEATURES_OK))
        return -1;
    dev->features = features;
    return 0;
}

int virtio_queue(struct virtio_dev *dev, int index, struct virtq *q, void *mem, u16 size)
{
    u32 max;
    if (dev->transport == VIRTIO_PCI) {
        COMMON16(dev, 0x16) = (u16)index;
        max = COMMON16(dev, 0x18);
    } else {
        *REG(dev, 0x030) = (u32)index;
        max = *REG(dev, 0x034);
    }
    if (max == 0)
        return -1;
    if (size > max)
        size = (u16)max;        /* the device's limit wins (QEMU's virtio-rng allows 8) */
    if (size > 256)
        return -1;
    memset(mem, 0, 8192);
    q->dev = dev;
    q->index = index;
    q->size = size;
    q->desc = (struct virtq_desc *)mem;
    q->avail = (volatile u16 *)((u8 *)mem + 16 * size);
    q->used = (volatile u16 *)((u8 *)mem + 4096);
    q->last_used = q->avail_idx = 0;
    q->avail[0] = VIRTQ_AVAIL_F_NO_INTERRUPT;   /* the kit polls; see virtq_interrupts */
    q->nfree = size;
    for (u16 i = 0; i < size; i++)
        q->free[i] = (u16)(size - 1 - i);
    u64 d = (u64)q->desc, a = (u64)q->avail, u = (u64)q->used;
    if (dev->transport == VIRTIO_PCI) {
        COMMON16(dev, 0x18) = size;
        COMMON32(dev, 0x20) = (u32)d; COMMON32(dev, 0x24) = (u32)(d >> 32);
        COMMON32(dev, 0x28) = (u32)a; COMMON32(dev, 0x2c) = (u32)(a >> 32);
        COMMON32(dev, 0x30) = (u32)u; COMMON32(dev, 0x34) = (u32)(u >> 32);
        q->notify_addr = dev->notify + (u64)COMMON16(dev, 0x1e) * dev->notify_mult;
        COMMON16(dev, 0x1c) = 1;
        return 0;
    }
    q->notify_addr = dev->base + 0x050;
    *REG(dev, 0x038) = size;
    *REG(dev, 0x080) = (u32)d; *REG(dev, 0x084) = (u32)(d >> 32);
    *REG(dev, 0x090) = (u32)a; *REG(dev, 0x094) = (u32)(a >> 32);
    *REG(dev, 0x0a0) = (u32)u; *REG(dev, 0x0a4) = (u32)(u >> 32);
    *REG(dev, 0x044) = 1;
    return 0;
}

u64 virtio_pci_size_bars(struct virtio_dev *dev)
{
    if (dev->transport != VIRTIO_PCI)
        return 0;
    int slot = dev->pci_slot;
    u32 command = pci_read32(slot, 0x04);
    pci_write32(slot, 0x04, command & ~0x2u);       /* memory decoding off while the BAR is sized */
    u64 size = 0;
    for (int b = 0; b < 6; b++) {
        u32 lo = pci_read32(slot, 0x10 + 4 * b);
        if (!lo || (lo & 1))
            continue;
        pci_write32(slot, 0x10 + 4 * b, 0xffffffffu);
        u32 mask = pci_read32(slot, 0x10 + 4 * b) & ~0xfu;
        pci_write32(slot, 0x10 + 4 * b, lo);
        size += (u64)(~mask + 1u);
        if ((lo & 0x6) == 0x4)
            b++;                                    /* the upper half of a 64-bit BAR */
    }
    pci_write32(slot, 0x04, command);               /* and back on: the BAR is mapped again */
    return size;
}

int virtio_pci_msix(struct virtio_dev *dev, int queue, int entry, u8 cpu_vector)
{
    if (dev->transport != VIRTIO_PCI)
        return -1;
    int slot = dev->pci_slot;
    for (int ptr = pci_read32(slot, 0x34) & 0xfc; ptr; ) {
        u32 cap = pci_read32(slot, ptr);
        if ((cap & 0xff) == 0x11) {
            u32 table = pci_read32(slot, ptr + 4);
            u32 lo = pci_read32(slot, 0x10 + 4 * (table & 7));
            u64 bar = lo & ~0xfUL;
            if ((lo & 0x6) == 0x4)
                bar |= (u64)pci_read32(slot, 0x14 + 4 * (table & 7)) << 32;
            volatile u32 *e = (volatile u32 *)(bar + (table & ~7u) + 16u * (u32)entry);
            e[0] = 0xfee00000;      /* to the local APIC of CPU 0 */
            e[1] = 0;
            e[2] = cpu_vector;      /* fixed delivery, edge */
            e[3] = 0;               /* unmasked */
            pci_write32(slot, ptr, cap | (0x8000u << 16));   /* MSI-X enable */
            COMMON16(dev, 0x16) = (u16)queue;
            COMMON16(dev, 0x1a) = (u16)entry;
            return COMMON16(dev, 0x1a) == entry ? 0 : -1;
        }
        ptr = (cap >> 8) & 0xfc;
    }
    return -1;
}

void virtio_driver_ok(struct virtio_dev *dev)
{
    if (dev->transport == VIRTIO_PCI)
        COMMON8(dev, 0x14) = S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK;
    else
        *REG(dev, 0x070) = S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK;
}

u16 virtq_submit(struct virtq *q, const struct vbuf *bufs, int n, struct virtq_desc *indirect_table)
{
    int need = indirect_table ? 1 : n;
    if (n < 1 || q->nfree < need)
        return 0xffff;
    u16 head = q->free[q->nfree - 1];
    if (indirect_table) {
        for (int i = 0; i < n; i++) {
            indirect_table[i].addr = (u64)bufs[i].addr;
            indirect_table[i].len = bufs[i].len;
            indirect_table[i].flags = (u16)((bufs[i].device_writes ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
            indirect_table[i].next = (u16)(i + 1);
        }
        struct virtq_desc *d = &q->desc[head];
        q->nfree--;
        d->addr = (u64)indirect_table;
        d->len = (u32)(n * sizeof(struct virtq_desc));
        d->flags = VIRTQ_DESC_F_INDIRECT;
        d->next = 0;
    } else {
        for (int i = 0; i < n; i++) {
            u16 idx = q->free[--q->nfree];
            struct virtq_desc *d = &q->desc[idx];
            d->addr = (u64)bufs[i].addr;
            d->len = bufs[i].len;
            d->flags = (u16)((bufs[i].device_writes ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
            d->next = i + 1 < n ? q->free[q->nfree - 1] : 0;
        }
    }
    q->avail[2 + (q->avail_idx % q->size)] = head;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    q->avail[1] = ++q->avail_idx;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return head;
}

void virtq_interrupts(struct virtq *q, int on)
{
    q->avail[0] = on ? 0 : VIRTQ_AVAIL_F_NO_INTERRUPT;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

void virtq_kick(struct virtq *q)
{
    /* VIRTQ_USED_F_NO_NOTIFY: the device is looking at the ring anyway (the submit's fence
     * orders the avail index before this read, as Linux's virtqueue_kick_prepare does). */
    if (q->used[0] & 1)
        return;
    if (q->dev->transport == VIRTIO_PCI)
        *(volatile u16 *)q->notify_addr = (u16)q->index;
    else
        *(volatile u32 *)q->notify_addr = (u32)q->index;
}

int virtq_has_used(struct virtq *q) { return q->used[1] != q->last_used; }

int virtq_wait(struct virtq *q, u32 *len, u64 timeout_cycles)
{
    u64 deadline = rdtsc() + timeout_cycles;
    while (q->used[1] == q->last_used) {
        if (rdtsc() > deadline)
            return -1;
        cpu_relax();
    }
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    volatile u32 *elem = (volatile u32 *)((volatile u8 *)q->used + 4 + 8 * (q->last_used % q->size));
    int id = (int)elem[0];
    if (len) *len = elem[1];
    q->last_used++;
    /* Return the chain's descriptors to the free list. */
    for (u16 i = (u16)id;;) {
        q->free[q->nfree++] = i;
        if (!(q->desc[i].flags & VIRTQ_DESC_F_NEXT))
            break;
        i = q->desc[i].next;
    }
    return id;
}
