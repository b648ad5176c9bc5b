using Vireo.Virtio.Block;
using Vireo.Virtio.Net;
using Vireo.Virtio.Vsock;

namespace Vireo.Vmm.Tests;

public class DeviceMapTests
{
    private static VmConfig Config(VirtioTransportKind transport, int disks, bool acpi = true) => new()
    {
        KernelPath = "/nonexistent",
        Transport = transport,
        Acpi = acpi,
        Disks = [.. Enumerable.Range(0, disks).Select(i => new BlockConfig($"/d{i}"))],
        Rng = true,
        VirtioConsole = true,
    };

    [Fact]
    public void Every_device_has_a_distinct_id_and_the_legacy_devices_sit_at_their_isa_places()
    {
        var map = DeviceMap.For(Config(VirtioTransportKind.Pci, 2));
        Assert.Equal(map.Slots.Count, map.Slots.Select(s => s.Id).Distinct().Count());
        Assert.Equal(0x3f8, map["com1"].PioBase);
        Assert.Equal(4u, map["com1"].Gsi);
        Assert.Equal(9u, map["acpi-pm"].Gsi);
        Assert.Equal(["blk0", "blk1", "rng", "console"], map.Virtio.Select(s => s.Id));
    }

    [Fact]
    public void Pci_devices_take_slots_from_one_with_a_bar_each_and_intx_by_slot()
    {
        var map = DeviceMap.For(Config(VirtioTransportKind.Pci, 2));
        var virtio = map.Virtio.ToArray();
        for (int i = 0; i < virtio.Length; i++)
        {
            Assert.Equal(i + 1, virtio[i].PciSlot);
            Assert.Equal(DeviceMap.PciBarBase + (ulong)(i + 1) * 0x10000, virtio[i].MmioBase);
            Assert.Equal(DeviceMap.PciGsiForSlot(i + 1), virtio[i].Gsi);
        }
        Assert.Equal("", map.CmdlineSuffix);
        Assert.NotNull(map.AcpiPlatform(2).Pci);
    }

    [Fact]
    public void Mmio_devices_get_a_window_and_an_edge_gsi_of_their_own_past_the_sci()
    {
        var map = DeviceMap.For(Config(VirtioTransportKind.Mmio, 6));
        var gsis = map.Virtio.Select(s => s.Gsi!.Value).ToArray();
        Assert.Equal([5u, 6, 7, 8, 10, 11, 12, 13], gsis); // 9 is the ACPI SCI
        Assert.Null(map.Find("pci-root"));
        Assert.Null(map.AcpiPlatform(1).Pci);
        Assert.StartsWith(" virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6", map.CmdlineSuffix);
        Assert.Contains("virtio_mmio.device=4K@0xd0004000:10", map.CmdlineSuffix);
        Assert.Equal([5u, 6, 7, 8, 9, 10, 11, 12], DeviceMap.For(Config(VirtioTransportKind.Mmio, 6, acpi: false)).Virtio.Select(s => s.Gsi!.Value));
    }

    [Fact]
    public void Sixteen_mmio_devices_fit_below_the_ioapics_24_pins()
    {
        var map = DeviceMap.For(Config(VirtioTransportKind.Mmio, 14));
        Assert.True(map.Virtio.Max(s => s.Gsi!.Value) < 24);
    }

    [Fact]
    public void Two_devices_with_one_id_are_refused_naming_it()
    {
        var config = Config(VirtioTransportKind.Pci, 0) with { Disks = [new BlockConfig("/a", Id: "root"), new BlockConfig("/b", Id: "root")] };
        var e = Assert.Throws<VmConfigException>(() => DeviceMap.For(config));
        Assert.Contains("'root'", e.Message);
        var legacy = Config(VirtioTransportKind.Pci, 0) with { Disks = [new BlockConfig("/a", Id: "com1")] };
        Assert.Contains("'com1'", Assert.Throws<VmConfigException>(() => DeviceMap.For(legacy)).Message);
    }

    [Fact]
    public void Nets_and_vsock_are_named_by_kind()
    {
        var config = Config(VirtioTransportKind.Pci, 0) with
        {
            Nets = [NetConfig.ForTap("tap0", null, 0), NetConfig.ForTap("tap1", null, 1)],
            Vsock = new VsockConfig(3, "/tmp/v.sock"),
        };
        var map = DeviceMap.For(config);
        Assert.Equal(["net0", "net1", "vsock", "rng", "console"], map.Virtio.Select(s => s.Id));
        Assert.Equal(1, map["net1"].ConfigIndex);
    }
}
