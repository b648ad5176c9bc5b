using Vireo.Boot.Acpi;
using Vireo.Devices;
using Vireo.Devices.Pci;
using Vireo.Memory;
using Vireo.Virtio.Transport;

namespace Vireo.Vmm;

/// <summary>What a device is, which says how it is built and how its state is saved.</summary>
public enum DeviceKind
{
    Serial,
    I8042,
    Rtc,
    PostCode,
    DebugExit,
    AcpiPm,
    PciRoot,
    Block,
    Net,
    Vsock,
    Rng,
    Console,
}

/// <summary>
/// One device's place in the guest: its id (the key of its state in a snapshot), its I/O ports,
/// its MMIO window, its GSI and its PCI slot, whichever it has.
/// </summary>
/// <param name="ConfigIndex">For a virtio device, its index among the config's devices of its kind.</param>
public sealed record DeviceSlot(
    string Id,
    DeviceKind Kind,
    ushort PioBase = 0,
    ulong PioLength = 0,
    ulong MmioBase = 0,
    ulong MmioLength = 0,
    uint? Gsi = null,
    int? PciSlot = null,
    int ConfigIndex = 0)
{
    public bool IsVirtio => Kind >= DeviceKind.Block;
}

/// <summary>
/// The one table of where every device of a VM sits: ports, MMIO windows, PCI slots and GSIs,
/// computed from the config alone (so a restore, given the same config, lays the machine out
/// exactly as the boot did). ACPI, the kernel command line (virtio-mmio windows) and the
/// machine builder all read it from here; nothing else holds an address or a GSI.
/// The fixed platform addresses (IOAPIC, LAPIC, KVM's pages) are the memory layout's.
/// </summary>
public sealed class DeviceMap
{
    /// <summary>virtio-mmio windows: 4 KiB each from here, one GSI each from <see cref="MmioFirstGsi"/>.</summary>
    public const ulong MmioBase = 0xd000_0000;
    public const uint MmioFirstGsi = 5;

    /// <summary>PCI: BARs from here, 64 KiB a slot; ECAM for bus 0 at <see cref="PciEcamBase"/>; INTx on GSIs 16..23.</summary>
    public const ulong PciBarBase = 0xc000_0000;
    public const ulong PciBarWindowEnd = 0xcfff_ffff;
    public const ulong PciEcamBase = 0xe000_0000;
    public const uint PciFirstGsi = 16;

    /// <summary>The GSI a PCI slot's INTA is wired to (what the DSDT's _PRT says).</summary>
    public static uint PciGsiForSlot(int slot) => PciFirstGsi + (uint)(slot % 8);

    private readonly DeviceSlot[] _slots;

    public VirtioTransportKind Transport { get; }
    public IReadOnlyList<DeviceSlot> Slots => _slots;

    private DeviceMap(VirtioTransportKind transport, DeviceSlot[] slots)
    {
        Transport = transport;
        _slots = slots;
        CheckNoOverlap();
    }

    /// <summary>The slot registered under <paramref name="id"/>; throws when there is none.</summary>
    public DeviceSlot this[string id] =>
        Array.Find(_slots, s => s.Id == id) ?? throw new KeyNotFoundException($"no device '{id}' in this machine");

    public DeviceSlot? Find(string id) => Array.Find(_slots, s => s.Id == id);

    /// <summary>The virtio devices, in the order the guest sees them.</summary>
    public IEnumerable<DeviceSlot> Virtio => _slots.Where(s => s.IsVirtio);

    public static DeviceMap For(VmConfig config)
    {
        var slots = new List<DeviceSlot>
        {
            new("com1", DeviceKind.Serial, Serial16550.Com1Base, 8, Gsi: Serial16550.Com1Irq),
            new("i8042", DeviceKind.I8042, I8042.Base, I8042.Length),
            new("rtc", DeviceKind.Rtc, CmosRtc.Base, CmosRtc.Length),
            new("post", DeviceKind.PostCode, PostCodePort.Port, 1),
        };
        if (config.DebugExit)
        {
            slots.Add(new("debug-exit", DeviceKind.DebugExit, DebugExitPort.Port, DebugExitPort.Length));
        }
        if (config.Acpi)
        {
            slots.Add(new("acpi-pm", DeviceKind.AcpiPm, AcpiPm.Base, AcpiPm.Length, Gsi: AcpiPm.SciIrq));
        }
        if (config.Transport == VirtioTransportKind.Pci)
        {
            // Present even with no device, so that the guest's probe finds a host bridge where the DSDT says.
            slots.Add(new("pci-root", DeviceKind.PciRoot, PciRoot.ConfigAddressPort, 8, PciEcamBase, PciRoot.EcamSize));
        }
        var virtio = new List<(string Id, DeviceKind Kind, int Index)>();
        for (int i = 0; i < config.Disks.Count; i++)
        {
            virtio.Add((config.Disks[i].Id ?? $"blk{i}", DeviceKind.Block, i));
        }
        for (int i = 0; i < config.Nets.Count; i++)
        {
            virtio.Add(($"net{i}", DeviceKind.Net, i));
        }
        if (config.Vsock is not null)
        {
            virtio.Add(("vsock", DeviceKind.Vsock, 0));
        }
        if (config.Rng)
        {
            virtio.Add(("rng", DeviceKind.Rng, 0));
        }
        if (config.VirtioConsole)
        {
            virtio.Add(("console", DeviceKind.Console, 0));
        }
        uint nextMmioGsi = MmioFirstGsi;
        for (int i = 0; i < virtio.Count; i++)
        {
            var (id, kind, index) = virtio[i];
            if (slots.Exists(s => s.Id == id))
            {
                throw new VmConfigException($"devices: two devices are called '{id}'; device ids must differ");
            }
            if (config.Transport == VirtioTransportKind.Mmio)
            {
                // Edge-triggered lines of their own: past the ones the legacy devices hold (the SCI is 9).
                while (slots.Exists(s => s.Gsi == nextMmioGsi))
                {
                    nextMmioGsi++;
                }
                slots.Add(new(id, kind, MmioBase: MmioBase + (ulong)i * MmioTransport.WindowSize, MmioLength: MmioTransport.WindowSize,
                    Gsi: nextMmioGsi++, ConfigIndex: index));
            }
            else
            {
                int slot = i + 1; // slot 0 is the host bridge
                slots.Add(new(id, kind, MmioBase: PciBarBase + (ulong)slot * PciTransport.BarSize, MmioLength: PciTransport.BarSize,
                    Gsi: PciGsiForSlot(slot), PciSlot: slot, ConfigIndex: index));
            }
        }
        return new DeviceMap(config.Transport, [.. slots]);
    }

    /// <summary>What the kernel command line needs: the virtio-mmio windows (PCI is found by probing).</summary>
    public string CmdlineSuffix
    {
        get
        {
            if (Transport != VirtioTransportKind.Mmio)
            {
                return "";
            }
            var s = new System.Text.StringBuilder();
            foreach (var d in Virtio)
            {
                s.Append($" virtio_mmio.device=4K@0x{d.MmioBase:x}:{d.Gsi}");
            }
            return s.ToString();
        }
    }

    /// <summary>What the ACPI tables describe: the vCPUs, the PCI host bridge and the fixed registers of the PM device.</summary>
    public AcpiPlatform AcpiPlatform(int vcpus) => new(
        vcpus,
        Find("pci-root") is { } pci
            ? new AcpiPci(pci.MmioBase, pci.MmioLength, (uint)PciBarBase, (uint)PciBarWindowEnd, PciGsiForSlot)
            : null,
        AcpiPm.Base,
        AcpiPm.ResetPort,
        AcpiPm.ResetValue,
        (byte)this["acpi-pm"].Gsi!.Value,
        AcpiPm.S5SleepType,
        MemoryLayout.IoApicBase,
        IoApicId: (byte)vcpus, // as in the MP table: the first id after the vCPUs
        MemoryLayout.LapicBase);

    private void CheckNoOverlap()
    {
        for (int i = 0; i < _slots.Length; i++)
        {
            for (int j = i + 1; j < _slots.Length; j++)
            {
                var a = _slots[i];
                var b = _slots[j];
                if (a.PioLength > 0 && b.PioLength > 0 && a.PioBase < b.PioBase + b.PioLength && b.PioBase < a.PioBase + a.PioLength)
                {
                    throw new InvalidOperationException($"devices '{a.Id}' and '{b.Id}' share I/O ports");
                }
                if (a.MmioLength > 0 && b.MmioLength > 0 && a.MmioBase < b.MmioBase + b.MmioLength && b.MmioBase < a.MmioBase + a.MmioLength)
                {
                    throw new InvalidOperationException($"devices '{a.Id}' and '{b.Id}' share MMIO addresses");
                }
                if (a.Gsi is { } g && g == b.Gsi && (a.PciSlot is null || b.PciSlot is null))
                {
                    throw new InvalidOperationException($"devices '{a.Id}' and '{b.Id}' share GSI {g}"); // only PCI INTx lines are shared
                }
                if (a.PciSlot is { } s && s == b.PciSlot)
                {
                    throw new InvalidOperationException($"devices '{a.Id}' and '{b.Id}' share PCI slot {s}");
                }
            }
        }
    }
}
