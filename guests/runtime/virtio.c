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
        struct virtio_dev d = { base, irq, 0, 0 };
        if (*REG(&d, 0x000) != 0x74726976 || *REG(&d, 0x004) != 2)
            continue;
        d.device_id = *REG(&d, 0x008);
        if (d.device_id == device_id && nth-- == 0) {
            *dev = d;
            return 0;
        }
    }
    return -1;
}

u32 virtio_status(struct virtio_dev *dev) { return *REG(dev, 0x070); }
u32 virtio_config32(struct virtio_dev *dev, u32 offset) { return *REG(dev, 0x100 + offset); }

int virtio_start(struct virtio_dev *dev, u64 wanted)
{
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
    *REG(dev, 0x030) = (u32)index;
    u32 max = *REG(dev, 0x034);
    if (max == 0 || size > max || size > 256)
        return -1;
    memset(mem, 0, 8192);
    q->dev = dev;
    q->index = index;
    q->size = size;
    q->desc = (struct virtq_desc *)mem;
    q->avail = (volatile u16 *)((u8 *)mem + 16 * size);
    q->used = (volatile u16 *)((u8 *)mem + 4096);
    q->last_used = q->avail_idx = 0;
    q->nfree = size;
    for (u16 i = 0; i < size; i++)
        q->free[i] = (u16)(size - 1 - i);
    u64 d = (u64)q->desc, a = (u64)q->avail, u = (u64)q->used;
    *REG(dev, 0x038) = size;
    *REG(dev, 0x080) = (u32)d; *REG(dev, 0x084) = (u32)(d >> 32);
    *REG(dev, 0x090) = (u32)a; *REG(dev, 0x094) = (u32)(a >> 32);
    *REG(dev, 0x0a0) = (u32)u; *REG(dev, 0x0a4) = (u32)(u >> 32);
    *REG(dev, 0x044) = 1;
    return 0;
}

void virtio_driver_ok(struct virtio_dev *dev)
{
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

void virtq_kick(struct virtq *q) { *REG(q->dev, 0x050) = (u32)q->index; }

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
