using Vireo.Interop;
using Vireo.Memory;

namespace Vireo.Kvm;

/// <summary>A KVM VM file descriptor. Only this type creates vCPUs and registers memory slots.</summary>
public sealed unsafe partial class KvmVm : IDisposable
{
    private readonly Kvm _kvm;
    private readonly FileDescriptor _fd;
    private readonly int _runMmapSize;
    private uint _nextSlot;
    private int _vcpuCount;
    private int _xsaveSize;

    internal KvmVm(Kvm kvm, FileDescriptor fd, int runMmapSize)
    {
        _kvm = kvm;
        _fd = fd;
        _runMmapSize = runMmapSize;
    }

    /// <summary>KVM_CHECK_EXTENSION on the VM fd, where some capabilities (KVM_CAP_XSAVE2) answer for this VM.</summary>
    public int CheckExtension(int capability) => Libc.Ioctl(_fd.Fd, KvmAbi.KVM_CHECK_EXTENSION, (nuint)capability);

    public bool HasIrqchip { get; private set; }
    public bool HasPit { get; private set; }

    public void SetTssAddress(ulong address) =>
        Check.Io(Libc.Ioctl(_fd.Fd, KvmAbi.KVM_SET_TSS_ADDR, (nuint)address), "KVM_SET_TSS_ADDR");

    public void SetIdentityMapAddress(ulong address) =>
        Check.Io(Libc.Ioctl(_fd.Fd, KvmAbi.KVM_SET_IDENTITY_MAP_ADDR, &address), "KVM_SET_IDENTITY_MAP_ADDR");

    /// <summary>In-kernel PIC pair, IOAPIC and per-vCPU LAPICs. Must precede vCPU creation.</summary>
    public void CreateIrqchip()
    {
        Check.Io(Libc.Ioctl(_fd.Fd, KvmAbi.KVM_CREATE_IRQCHIP, 0), "KVM_CREATE_IRQCHIP");
        HasIrqchip = true;
    }

    /// <summary>In-kernel i8254 PIT, with port 0x61 handled as a dummy speaker.</summary>
    public void CreatePit2()
    {
        kvm_pit_config config = default;
        config.flags = KvmAbi.KVM_PIT_SPEAKER_DUMMY;
        Check.Io(Libc.Ioctl(_fd.Fd, KvmAbi.KVM_CREATE_PIT2, &config), "KVM_CREATE_PIT2");
        HasPit = true;
    }

    /// <summary>Registers every region of <paramref name="memory"/> as a memory slot.</summary>
    public void RegisterMemory(GuestMemory memory, bool logDirty = false)
    {
        foreach (var region in memory.Regions)
        {
            var slot = new kvm_userspace_memory_region
            {
                slot = _nextSlot++,
                flags = logDirty ? KvmAbi.KVM_MEM_LOG_DIRTY_PAGES : 0,
                guest_phys_addr = region.Start.Value,
                memory_size = region.Size,
                userspace_addr = (ulong)region.HostAddress,
            };
            Check.Io(Libc.Ioctl(_fd.Fd, KvmAbi.KVM_SET_USER_MEMORY_REGION, &slot), "KVM_SET_USER_MEMORY_REGION");
            _slots.Add(slot);
        }
        LogsDirty = logDirty;
    }

    private readonly List<kvm_userspace_memory_region> _slots = [];

    /// <summary>The memory slots <see cref="RegisterMemory"/> made, in its regions' order.</summary>
    public int MemorySlots => _slots.Count;

    /// <summary>True while KVM records the pages the guest writes (KVM_MEM_LOG_DIRTY_PAGES on every slot).</summary>
    public bool LogsDirty { get; private set; }

    /// <summary>
    /// Turns KVM's dirty log on or off for every memory slot (the slots are re-registered with
    /// the flag; the guest may keep running). Turned on, the log starts empty: the caller copies
    /// everything once, then only what each <see cref="GetDirtyLog"/> reports. While it is on,
    /// KVM maps guest RAM in 4 KiB pages, so it costs the guest some speed.
    /// </summary>
    public void SetDirtyLogging(bool on)
    {
        for (int i = 0; i < _slots.Count; i++)
        {
            var slot = _slots[i];
            slot.flags = on ? slot.flags | KvmAbi.KVM_MEM_LOG_DIRTY_PAGES : slot.flags & ~KvmAbi.KVM_MEM_LOG_DIRTY_PAGES;
            Check.Io(Libc.Ioctl(_fd.Fd, KvmAbi.KVM_SET_USER_MEMORY_REGION, &slot), "KVM_SET_USER_MEMORY_REGION (dirty log)");
            _slots[i] = slot;
        }
        LogsDirty = on;
    }

    /// <summary>
    /// KVM_GET_DIRTY_LOG: one bit a 4 KiB page of the slot, cleared by the read. The bitmap must
    /// hold a bit for every page of the slot, rounded up to 64.
    /// </summary>
    public void GetDirtyLog(uint slot, Span<ulong> bitmap)
    {
        foreach (var s in _slots)
        {
            if (s.slot == slot && (ulong)bitmap.Length * 64 < (s.memory_size + 4095) / 4096)
            {
                throw new ArgumentException($"a dirty bitmap of {bitmap.Length} words is too short for slot {slot}", nameof(bitmap));
            }
        }
        fixed (ulong* p = bitmap)
        {
            var log = new kvm_dirty_log { slot = slot, dirty_bitmap = (ulong)p };
            Check.Io(Libc.Ioctl(_fd.Fd, KvmAbi.KVM_GET_DIRTY_LOG, &log), "KVM_GET_DIRTY_LOG");
        }
    }

    /// <summary><see cref="GetDirtyLog"/> of the slot <see cref="RegisterMemory"/> made for its region number <paramref name="region"/>.</summary>
    public void GetRegionDirtyLog(int region, Span<ulong> bitmap) => GetDirtyLog(_slots[region].slot, bitmap);

    public KvmVcpu CreateVcpu(int id)
    {
        if (_xsaveSize == 0)
        {
            // 0 when KVM lacks KVM_CAP_XSAVE2: then the area is the 4 KiB kvm_xsave.
            _xsaveSize = Math.Max(sizeof(kvm_xsave), CheckExtension(KvmAbi.KVM_CAP_XSAVE2));
        }
        int fd = Check.Io(Libc.Ioctl(_fd.Fd, KvmAbi.KVM_CREATE_VCPU, (nuint)id), $"KVM_CREATE_VCPU({id})");
        var vcpu = new KvmVcpu(id, new FileDescriptor(fd), _runMmapSize, _kvm, _xsaveSize, HasIrqchip);
        _vcpuCount++;
        return vcpu;
    }

    /// <summary>Routes signals of <paramref name="eventFd"/> to interrupt line <paramref name="gsi"/> (edge).</summary>
    public void RegisterIrqfd(EventFd eventFd, uint gsi)
    {
        var irqfd = new kvm_irqfd { fd = (uint)eventFd.Fd, gsi = gsi };
        Check.Io(Libc.Ioctl(_fd.Fd, KvmAbi.KVM_IRQFD, &irqfd), "KVM_IRQFD");
    }

    /// <summary>Makes guest writes to <paramref name="address"/> signal <paramref name="eventFd"/> inside KVM, with no exit to userspace.</summary>
    /// <remarks>A length of 0 matches a write of any width; <paramref name="deassign"/> removes a registration.</remarks>
    public void RegisterIoeventfd(EventFd eventFd, ulong address, uint length, bool pio, ulong? dataMatch = null, bool deassign = false)
    {
        var ioeventfd = new kvm_ioeventfd
        {
            addr = address,
            len = length,
            fd = eventFd.Fd,
            flags = (pio ? KvmAbi.KVM_IOEVENTFD_FLAG_PIO : 0) | (dataMatch.HasValue ? KvmAbi.KVM_IOEVENTFD_FLAG_DATAMATCH : 0)
                | (deassign ? KvmAbi.KVM_IOEVENTFD_FLAG_DEASSIGN : 0),
            datamatch = dataMatch ?? 0,
        };
        Check.Io(Libc.Ioctl(_fd.Fd, KvmAbi.KVM_IOEVENTFD, &ioeventfd), "KVM_IOEVENTFD");
    }

    /// <summary>Injects one MSI (an MSI-X vector's address and data) into the guest.</summary>
    public void SignalMsi(ulong address, uint data)
    {
        var msi = new kvm_msi { address_lo = (uint)address, address_hi = (uint)(address >> 32), data = data };
        // > 0: delivered; 0: the guest blocked it (a masked LAPIC vector); both are fine.
        Check.Io(Libc.Ioctl(_fd.Fd, KvmAbi.KVM_SIGNAL_MSI, &msi), "KVM_SIGNAL_MSI");
    }

    /// <summary>An MSI route: GSI <paramref name="Gsi"/> delivers the message (address, data).</summary>
    public readonly record struct MsiRoute(uint Gsi, ulong Address, uint Data);

    /// <summary>
    /// Replaces KVM's GSI routing with its default (GSIs 0..15 to both PICs and the IOAPIC, 16..23
    /// to the IOAPIC) plus <paramref name="msiRoutes"/>.
    /// </summary>
    public void SetGsiRouting(ReadOnlySpan<MsiRoute> msiRoutes)
    {
        const int Defaults = 16 * 2 + 8;
        int count = Defaults + msiRoutes.Length;
        byte[] buf = new byte[sizeof(kvm_irq_routing) + count * sizeof(kvm_irq_routing_entry)];
        fixed (byte* p = buf)
        {
            ((kvm_irq_routing*)p)->nr = (uint)count;
            var e = (kvm_irq_routing_entry*)(p + sizeof(kvm_irq_routing));
            int n = 0;
            for (uint gsi = 0; gsi < 24; gsi++)
            {
                if (gsi < 16)
                {
                    e[n].gsi = gsi;
                    e[n].type = KvmAbi.KVM_IRQ_ROUTING_IRQCHIP;
                    e[n].u[0] = gsi < 8 ? KvmAbi.KVM_IRQCHIP_PIC_MASTER : KvmAbi.KVM_IRQCHIP_PIC_SLAVE;
                    e[n].u[1] = gsi % 8;
                    n++;
                }
                e[n].gsi = gsi;
                e[n].type = KvmAbi.KVM_IRQ_ROUTING_IRQCHIP;
                e[n].u[0] = KvmAbi.KVM_IRQCHIP_IOAPIC;
                e[n].u[1] = gsi;
                n++;
            }
            foreach (var route in msiRoutes)
            {
                e[n].gsi = route.Gsi;
                e[n].type = KvmAbi.KVM_IRQ_ROUTING_MSI;
                e[n].u[0] = (uint)route.Address;
                e[n].u[1] = (uint)(route.Address >> 32);
                e[n].u[2] = route.Data;
                n++;
            }
            Check.Io(Libc.Ioctl(_fd.Fd, KvmAbi.KVM_SET_GSI_ROUTING, p), "KVM_SET_GSI_ROUTING");
        }
    }

    public void SetIrqLine(uint irq, bool level)
    {
        var l = new kvm_irq_level { irq = irq, level = level ? 1u : 0u };
        Check.Io(Libc.Ioctl(_fd.Fd, KvmAbi.KVM_IRQ_LINE, &l), "KVM_IRQ_LINE");
    }

    public void Dispose() => _fd.Dispose();
}
