using System.Buffers.Binary;
using Vireo.Devices.Pci;

namespace Vireo.Devices.Tests;

public class PciRootTests
{
    private sealed class FakeFunction : IPciFunction
    {
        public readonly byte[] Config = new byte[4096];
        public void ReadConfig(int offset, Span<byte> data) => Config.AsSpan(offset, data.Length).CopyTo(data);
        public void WriteConfig(int offset, ReadOnlySpan<byte> data) => data.CopyTo(Config.AsSpan(offset));
    }

    private static uint ReadViaPorts(IBusDevice ports, int slot, int offset)
    {
        var a = new byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(a, 0x8000_0000u | ((uint)slot << 11) | (uint)(offset & 0xfc));
        ports.Write(0, a);
        var d = new byte[4];
        ports.Read(4, d);
        return BinaryPrimitives.ReadUInt32LittleEndian(d);
    }

    [Fact]
    public void The_host_bridge_sits_at_slot_0_and_functions_take_the_next_slots()
    {
        var root = new PciRoot();
        var f = new FakeFunction();
        BinaryPrimitives.WriteUInt32LittleEndian(f.Config, 0x10421af4);
        Assert.Equal(1, root.Add(f));
        var ports = root.PortDevice;
        Assert.Equal(0x0008_1b36u, ReadViaPorts(ports, 0, 0));
        Assert.Equal(0x0600u, ReadViaPorts(ports, 0, 8) >> 16); // class: host bridge
        Assert.Equal(0x10421af4u, ReadViaPorts(ports, 1, 0));
        Assert.Equal(0xffffffffu, ReadViaPorts(ports, 2, 0)); // nothing there
    }

    [Fact]
    public void Ecam_reaches_the_same_functions_with_4k_each()
    {
        var root = new PciRoot();
        var f = new FakeFunction();
        root.Add(f);
        var ecam = root.EcamDevice;
        ecam.Write((1UL << 15) + 0x100, [1, 2, 3, 4]);
        Assert.Equal(new byte[] { 1, 2, 3, 4 }, f.Config[0x100..0x104]);
        var d = new byte[2];
        ecam.Read((1UL << 15) | (1UL << 12), d); // function 1: absent
        Assert.Equal(new byte[] { 0xff, 0xff }, d);
    }

    [Fact]
    public void Config_data_port_honours_byte_offsets_and_the_enable_bit()
    {
        var root = new PciRoot();
        var f = new FakeFunction();
        f.Config[0x3d] = 1;
        root.Add(f);
        var ports = root.PortDevice;
        var a = new byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(a, 0x8000_0000u | (1u << 11) | 0x3c);
        ports.Write(0, a);
        var one = new byte[1];
        ports.Read(5, one); // 0xCFD: byte 1 of the dword at 0x3c
        Assert.Equal(1, one[0]);
        BinaryPrimitives.WriteUInt32LittleEndian(a, (1u << 11) | 0x3c); // enable bit clear
        ports.Write(0, a);
        ports.Read(5, one);
        Assert.Equal(0xff, one[0]);
    }

    [Fact]
    public void Bus_numbers_other_than_zero_read_all_ones()
    {
        Assert.Equal(0xffffffffu, ReadBus1(new PciRoot().PortDevice));
    }

    private static uint ReadBus1(IBusDevice ports)
    {
        var a = new byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(a, 0x8001_0000u);
        ports.Write(0, a);
        var d = new byte[4];
        ports.Read(4, d);
        return BinaryPrimitives.ReadUInt32LittleEndian(d);
    }
}
