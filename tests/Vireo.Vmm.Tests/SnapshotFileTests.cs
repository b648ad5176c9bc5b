using System.Buffers.Binary;
using System.Diagnostics;
using System.IO.Hashing;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json.Nodes;
using Vireo.Interop;
using Vireo.Kvm;
using Vireo.Memory;
using Vireo.Tests;
using Vireo.Virtio;
using Vireo.Virtio.Block;
using Vireo.Virtio.Queue;
using Vireo.Vmm.Snapshot;
using Xunit.Abstractions;
using Xunit.Sdk;

namespace Vireo.Vmm.Tests;

/// <summary>Runs a class's tests in the order of their names, so that one named Z_ can come last.</summary>
public sealed class ByNameOrderer : ITestCaseOrderer
{
    public IEnumerable<TTestCase> OrderTestCases<TTestCase>(IEnumerable<TTestCase> testCases) where TTestCase : ITestCase =>
        testCases.OrderBy(t => t.TestMethod.Method.Name, StringComparer.Ordinal);
}

/// <summary>One real Full snapshot of the kit guest per transport, taken once for the whole class.</summary>
public sealed class SnapshotFileFixture : IDisposable
{
    public sealed record Taken(string StatePath, string MemPath, byte[] Bytes, MachineState State, SnapshotFile.Layout Layout);

    public string Dir { get; } = Directory.CreateTempSubdirectory("vireo-snapfile-").FullName;
    private readonly Lazy<Taken> _pci, _mmio;

    public SnapshotFileFixture()
    {
        _pci = new(() => Take(VirtioTransportKind.Pci, "pci"));
        _mmio = new(() => Take(VirtioTransportKind.Mmio, "mmio"));
    }

    public Taken Pci => _pci.Value;
    public Taken Mmio => _mmio.Value;
    public Taken Of(VirtioTransportKind kind) => kind == VirtioTransportKind.Pci ? Pci : Mmio;

    private Taken Take(VirtioTransportKind transport, string name)
    {
        string disk = Path.Combine(Dir, name + ".disk");
        File.WriteAllBytes(disk, new byte[1 << 20]);
        var config = new VmConfig
        {
            KernelPath = TestEnvironment.Guest("snapshot"), MemoryBytes = 128 << 20, Vcpus = 2, DebugExit = true,
            Disks = [new BlockConfig(disk)], Rng = true, VirtioConsole = true, Transport = transport, MemoryBacking = MemoryBacking.Anonymous,
        };
        var output = new StringBuilder();
        using var machine = Machine.Create(config, b =>
        {
            lock (output)
            {
                output.Append((char)b);
            }
        });
        var run = Task.Factory.StartNew(() => machine.Run(TimeSpan.FromSeconds(60)), TaskCreationOptions.LongRunning);
        SnapshotFileTests.WaitFor(output, "snapshot: up", run);
        machine.Serial.Enqueue("c\n"u8); // the console is virtio's, which this guest does not drive: type on COM1
        SnapshotFileTests.WaitFor(output, "count=1", run);
        machine.Pause();
        string state = Path.Combine(Dir, name + ".snap"), mem = Path.Combine(Dir, name + ".mem");
        Snapshots.Create(machine, SnapshotKind.Full, state, mem);
        machine.RequestStop(new VmOutcome(StopReason.HostRequest, Message: "test"));
        run.Wait();
        var bytes = File.ReadAllBytes(state);
        var (decoded, layout) = SnapshotFile.Decode(bytes);
        return new Taken(state, mem, bytes, decoded, layout);
    }

    public void Dispose() => Directory.Delete(Dir, recursive: true);
}

/// <summary>
/// Hostile snapshots: every way a file can be cut, corrupted or lie, each refused by the reader or
/// the restore with a <see cref="SnapshotException"/> naming what is wrong, and nothing else. The
/// last test loads the pristine snapshot and talks to the guest: the refusals left the process whole.
/// </summary>
[TestCaseOrderer("Vireo.Vmm.Tests.ByNameOrderer", "Vireo.Vmm.Tests")]
public class SnapshotFileTests(SnapshotFileFixture fixture, ITestOutputHelper log) : IClassFixture<SnapshotFileFixture>
{
    private int _name;

    internal static void WaitFor(StringBuilder output, string text, Task run)
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (true)
        {
            lock (output)
            {
                if (output.ToString().Contains(text, StringComparison.Ordinal))
                {
                    return;
                }
            }
            Assert.True(DateTime.UtcNow < deadline && !run.IsCompleted, $"no '{text}' on the console; it says:\n{output}");
            Thread.Sleep(5);
        }
    }

    // ---- the file's sections, for cutting and splicing ----

    private sealed record Section(string Tag, int Offset, byte[] Payload);

    private static List<Section> Split(byte[] file)
    {
        var list = new List<Section>();
        int at = 12;
        while (at < file.Length)
        {
            int length = (int)BinaryPrimitives.ReadUInt32LittleEndian(file.AsSpan(at + 8));
            list.Add(new Section(Encoding.ASCII.GetString(file, at, 4), at, file[(at + 12)..(at + 12 + length)]));
            at += 12 + length;
        }
        return list;
    }

    /// <summary>A file of these sections, each with a correct CRC and length.</summary>
    private static byte[] Join(IEnumerable<(string Tag, byte[] Payload)> sections)
    {
        var s = new MemoryStream();
        s.Write("VIREOSNP"u8);
        s.Write(BitConverter.GetBytes(SnapshotFile.Version));
        foreach (var (tag, payload) in sections)
        {
            s.Write(Encoding.ASCII.GetBytes(tag));
            s.Write(BitConverter.GetBytes(Crc32.HashToUInt32(payload)));
            s.Write(BitConverter.GetBytes((uint)payload.Length));
            s.Write(payload);
        }
        return s.ToArray();
    }

    private static byte[] Join(IEnumerable<Section> sections) => Join(sections.Select(s => (s.Tag, s.Payload)));

    private static byte[] Replace(byte[] file, int index, byte[] payload)
    {
        var sections = Split(file);
        sections[index] = sections[index] with { Payload = payload };
        return Join(sections);
    }

    private static int IndexOf(byte[] file, string tag) => Split(file).FindIndex(s => s.Tag == tag);

    // ---- what a refusal must look like ----

    private static SnapshotException DecodeRefused(byte[] file, string why)
    {
        try
        {
            SnapshotFile.Decode(file);
        }
        catch (SnapshotException e)
        {
            AssertWords(e.Message);
            return e;
        }
        catch (Exception e)
        {
            Assert.Fail($"{why}: {e.GetType().Name} escaped the reader: {e}");
        }
        Assert.Fail($"{why}: the reader took it");
        return null!;
    }

    /// <summary>A message for a user: no exception type, no .NET type name, no stack, no deserializer's internals.</summary>
    private static void AssertWords(string message)
    {
        Assert.False(string.IsNullOrWhiteSpace(message));
        foreach (var internals in new[] { "System.", "Vireo.", "Exception", "   at ", "JsonTypeInfo", "$." })
        {
            Assert.DoesNotContain(internals, message, StringComparison.Ordinal);
        }
    }

    private string Write(byte[] file)
    {
        string path = Path.Combine(fixture.Dir, $"case-{Environment.CurrentManagedThreadId}-{Interlocked.Increment(ref _name)}.snap");
        File.WriteAllBytes(path, file);
        return path;
    }

    /// <summary>Loads the snapshot on a thread of its own (a hang is a failure too) and returns the SnapshotException it must throw.</summary>
    private static SnapshotException LoadRefused(string statePath, string memPath, string why)
    {
        var load = Task.Run(() =>
        {
            var (machine, files) = Snapshots.Load(statePath, memPath, _ => { }, resume: false);
            machine.Dispose();
            files.Dispose();
        });
        Assert.True(((IAsyncResult)load).AsyncWaitHandle.WaitOne(TimeSpan.FromSeconds(20)), $"{why}: the load hangs");
        var e = load.Exception?.InnerException;
        Assert.True(e is SnapshotException, $"{why}: {(e is null ? "the load succeeded" : $"{e.GetType().Name} escaped the load: {e}")}");
        AssertWords(e!.Message);
        return (SnapshotException)e;
    }

    private SnapshotException LoadRefused(string statePath, string why, VirtioTransportKind kind = VirtioTransportKind.Pci) =>
        LoadRefused(statePath, fixture.Of(kind).MemPath, why);

    private SnapshotException LoadRefused(byte[] file, string why, VirtioTransportKind kind = VirtioTransportKind.Pci) =>
        LoadRefused(Write(file), fixture.Of(kind).MemPath, why);

    private SnapshotException LoadRefused(MachineState state, string why, VirtioTransportKind kind = VirtioTransportKind.Pci, SnapshotFile.Layout? layout = null) =>
        LoadRefused(SnapshotFile.Encode(state, layout ?? fixture.Of(kind).Layout), why, kind);

    // ---- the envelope ----

    [KvmFact]
    public void A_every_truncation_of_the_file_is_refused_as_truncated()
    {
        var file = fixture.Pci.Bytes;
        var clock = Stopwatch.StartNew();
        for (int length = 0; length < file.Length; length++)
        {
            var e = DecodeRefused(file[..length], $"the first {length} bytes");
            Assert.True(length < 12 ? e.Message.Contains("not a Vireo snapshot") : e.Message.Contains("truncated"), $"{length} bytes: {e.Message}");
        }
        log.WriteLine($"{file.Length} truncations in {clock.ElapsedMilliseconds} ms");
        foreach (int length in new[] { 0, 11, 12, 100, file.Length / 2, file.Length - 1 })
        {
            LoadRefused(file[..length], $"a file of {length} bytes");
        }
    }

    [KvmFact]
    public void A2_a_config_known_by_its_bytes_is_taken_as_it_is_and_any_other_is_decoded_and_checked()
    {
        var taken = fixture.Pci;
        byte[] bytes = System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(taken.State.Config, SnapshotJson.Default.VmConfig);
        var known = new SnapshotFile.KnownConfig(taken.State.Config, bytes);

        // Encoded with its bytes known: the same file as encoding it again.
        Assert.Equal(SnapshotFile.Encode(taken.State, taken.Layout), SnapshotFile.Encode(taken.State, taken.Layout, known));
        // A known config that is not the state's own object is not used for it.
        var other = new SnapshotFile.KnownConfig(taken.State.Config with { Vcpus = 1 }, "{}"u8.ToArray());
        Assert.Equal(SnapshotFile.Encode(taken.State, taken.Layout), SnapshotFile.Encode(taken.State, taken.Layout, other));

        // Decoded: the same bytes give the known object back; other bytes are decoded, and still checked.
        var (same, _) = SnapshotFile.Decode(taken.Bytes, known);
        Assert.Same(taken.State.Config, same.Config);
        var (decoded, _) = SnapshotFile.Decode(taken.Bytes, new SnapshotFile.KnownConfig(taken.State.Config, [.. bytes, (byte)' ']));
        Assert.NotSame(taken.State.Config, decoded.Config);
        Assert.Equal(bytes, System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(decoded.Config, SnapshotJson.Default.VmConfig));
        var wrongMemory = taken.State with { Config = taken.State.Config with { MemoryBytes = 256 << 20 } };
        var e = Assert.Throws<SnapshotException>(() => SnapshotFile.Decode(SnapshotFile.Encode(wrongMemory, taken.Layout), known));
        Assert.Contains("the layout says", e.Message);
    }

    [KvmFact]
    public void B_a_wrong_magic_or_version_is_refused()
    {
        var file = (byte[])fixture.Pci.Bytes.Clone();
        file[0] = (byte)'X';
        Assert.Contains("not a Vireo snapshot", DecodeRefused(file, "magic").Message);
        foreach (uint version in new uint[] { 0, 2, uint.MaxValue })
        {
            file = (byte[])fixture.Pci.Bytes.Clone();
            BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(8), version);
            Assert.Contains($"version {version}", DecodeRefused(file, $"version {version}").Message);
        }
        Assert.Contains("not a Vireo snapshot", LoadRefused("VIREOSNX"u8.ToArray(), "magic").Message);
    }

    [KvmFact]
    public void C_each_sections_crc_is_checked()
    {
        foreach (var s in Split(fixture.Pci.Bytes))
        {
            var file = (byte[])fixture.Pci.Bytes.Clone();
            file[s.Offset + 4] ^= 1;
            var e = DecodeRefused(file, $"{s.Tag} CRC");
            Assert.Contains($"section {s.Tag} at byte {s.Offset}", e.Message);
            Assert.Contains("CRC", e.Message);
        }
    }

    [KvmFact]
    public void D_each_sections_length_field_is_bounded()
    {
        foreach (var s in Split(fixture.Pci.Bytes))
        {
            foreach (long delta in new long[] { 1, -1, 1L << 32, int.MaxValue, 0xffff_fffeL })
            {
                var file = (byte[])fixture.Pci.Bytes.Clone();
                uint length = delta >= int.MaxValue ? (uint)delta : (uint)(s.Payload.Length + delta);
                if (length == s.Payload.Length)
                {
                    continue;
                }
                BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(s.Offset + 8), length);
                var e = DecodeRefused(file, $"{s.Tag} length {length}");
                Assert.Contains($"at byte {s.Offset}", e.Message);
            }
        }
    }

    [KvmFact]
    public void E_sections_out_of_order_duplicated_unknown_missing_or_followed_are_refused()
    {
        var sections = Split(fixture.Pci.Bytes);
        int conf = 1, vmst = 2, devs = sections.Count - 2, end = sections.Count - 1;
        void Refuse(List<Section> list, string expected, string why) =>
            Assert.Contains(expected, DecodeRefused(Join(list), why).Message);

        var swapped = new List<Section>(sections);
        (swapped[0], swapped[conf]) = (swapped[conf], swapped[0]);
        Refuse(swapped, "CONF at byte 12 where LAYO was expected", "LAYO and CONF swapped");
        swapped = new List<Section>(sections);
        (swapped[vmst], swapped[vmst + 1]) = (swapped[vmst + 1], swapped[vmst]);
        Refuse(swapped, "where VMST was expected", "VMST and VCPU swapped");
        swapped = new List<Section>(sections);
        (swapped[devs], swapped[devs - 1]) = (swapped[devs - 1], swapped[devs]);
        Refuse(swapped, "VCPU at byte", "DEVS before the last VCPU");

        foreach (int i in new[] { 0, conf, vmst, devs })
        {
            var twice = new List<Section>(sections);
            twice.Insert(i + 1, sections[i]);
            Refuse(twice, "out of order", $"{sections[i].Tag} twice");
        }
        var endTwice = new List<Section>(sections) { sections[end] };
        Refuse(endTwice, "follow the END section", "END twice");
        Refuse([.. sections.Where(s => s.Tag != "VCPU")], "DEVS at byte", "no vCPU");
        Refuse([.. sections.Where(s => s.Tag != "CONF")], "where CONF was expected", "no CONF");
        Refuse([.. sections.Take(end)], "truncated", "no END");
        var unknown = new List<Section>(sections);
        unknown.Insert(conf, new Section("XTRA", 0, [1, 2, 3]));
        Refuse(unknown, "XTRA", "an unknown section");
        unknown[conf] = new Section("\u0001\u00ff\u0000\n", 0, []);
        Refuse(unknown, "unreadable tag", "an unprintable tag");

        var trailing = fixture.Pci.Bytes.Concat(new byte[] { 0 }).ToArray();
        Assert.Contains("1 bytes follow the END section", DecodeRefused(trailing, "one trailing byte").Message);
        var endPayload = Replace(fixture.Pci.Bytes, end, [0]);
        Assert.Contains($"section END at byte {sections[end].Offset} holds 1 bytes", DecodeRefused(endPayload, "END with a payload").Message);
    }

    [KvmFact]
    public void F_the_layout_must_be_a_vms_layout()
    {
        var file = fixture.Pci.Bytes;
        var layo = Split(file)[0].Payload;
        byte[] Edit(Action<byte[]> edit)
        {
            var p = (byte[])layo.Clone();
            edit(p);
            return Replace(file, 0, p);
        }
        void Refuse(byte[] f, string expected, string why) => Assert.Contains(expected, DecodeRefused(f, why).Message);

        Refuse(Edit(p => BinaryPrimitives.WriteUInt32LittleEndian(p, 7)), "snapshot kind 7", "kind 7");
        Refuse(Edit(p => BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(4), 2)), "2 regions", "2 regions");
        Refuse(Edit(p => BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(4), uint.MaxValue)), "4294967295 regions", "2^32-1 regions");
        Refuse(Edit(p => BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(4), 0)), "0 regions", "no region");
        Refuse(Replace(file, 0, layo[..8]), "8 bytes; the layout needs at least 16", "a short layout");
        Refuse(Replace(file, 0, [.. layo, .. new byte[24]]), "regions in", "a region too many in the bytes");
        foreach (ulong ram in new ulong[] { 0, 1, 4095, (16 << 20) - 4096, (128 << 20) + 1, 2UL << 40, ulong.MaxValue })
        {
            Refuse(Edit(p => BinaryPrimitives.WriteUInt64LittleEndian(p.AsSpan(8), ram)), $"{ram} bytes of RAM is not a size", $"RAM {ram}");
        }
        Refuse(Edit(p => BinaryPrimitives.WriteUInt64LittleEndian(p.AsSpan(16), 0x1000)), "region 0 is", "region at 0x1000");
        Refuse(Edit(p => BinaryPrimitives.WriteUInt64LittleEndian(p.AsSpan(24), 64 << 20)), "region 0 is 67108864 bytes", "a short region");
        Refuse(Edit(p => BinaryPrimitives.WriteUInt64LittleEndian(p.AsSpan(24), ulong.MaxValue)), "region 0 is", "a region of 2^64-1 bytes");
        Refuse(Edit(p => BinaryPrimitives.WriteUInt64LittleEndian(p.AsSpan(32), 4096)), "file offset 4096", "a region at file offset 4096");

        // A layout of another size, well formed: the config says 128 MiB.
        Refuse(Edit(p => BinaryPrimitives.WriteUInt64LittleEndian(p.AsSpan(8), 256 << 20)), "region 0 is 134217728 bytes", "256 MiB with a 128 MiB region");
        var big = SnapshotFile.Encode(fixture.Pci.State, new SnapshotFile.Layout(SnapshotKind.Full, 256 << 20, [new(0, 256 << 20, 0)]));
        Refuse(big, "memory is 134217728 bytes; the layout says 268435456", "a 256 MiB layout for 128 MiB");
        var split = MemoryLayout.RamRegions(4UL << 30).Select((r, i) => new SnapshotFile.Region(r.Start.Value, r.Size, i == 0 ? 0 : r.Size)).ToArray();
        var hole = SnapshotFile.Encode(fixture.Pci.State, new SnapshotFile.Layout(SnapshotKind.Full, 4UL << 30, [split[0], split[1] with { FileOffset = 0 }]));
        Refuse(hole, "region 1 is", "a second region over the first in the file");
        LoadRefused(big, "a 256 MiB layout");
    }

    // ---- the binary sections ----

    private static int OffsetOfMsrCount(VcpuState v) =>
        4 + Unsafe.SizeOf<kvm_regs>() + Unsafe.SizeOf<kvm_sregs>() + 4 + v.Xsave.Length + 4 + 12 * v.Xcrs.Length
        + Unsafe.SizeOf<kvm_debugregs>() + 4 + (v.Lapic?.Length ?? 0);

    [KvmFact]
    public void G_absurd_counts_and_lengths_in_binary_sections_are_refused()
    {
        var file = fixture.Pci.Bytes;
        int vcpu = IndexOf(file, "VCPU"), vmst = IndexOf(file, "VMST");
        var v = fixture.Pci.State.Vcpus[0];
        var payload = Split(file)[vcpu].Payload;
        int xsaveAt = 4 + Unsafe.SizeOf<kvm_regs>() + Unsafe.SizeOf<kvm_sregs>();
        int xcrsAt = xsaveAt + 4 + v.Xsave.Length;
        int lapicAt = xcrsAt + 4 + 12 * v.Xcrs.Length + Unsafe.SizeOf<kvm_debugregs>();
        int msrsAt = OffsetOfMsrCount(v);
        int cpuidAt = msrsAt + 4 + 12 * v.Msrs.Length + Unsafe.SizeOf<kvm_vcpu_events>() + 8;
        Assert.Equal((uint)v.Msrs.Length, BinaryPrimitives.ReadUInt32LittleEndian(payload.AsSpan(msrsAt)));
        Assert.Equal((uint)v.Cpuid.Length, BinaryPrimitives.ReadUInt32LittleEndian(payload.AsSpan(cpuidAt)));

        void Refuse(int section, byte[] p, int at, uint value, string? expected)
        {
            p = (byte[])p.Clone();
            BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(at), value);
            var e = DecodeRefused(Replace(file, section, p), expected ?? $"0x{at:x} = {value}");
            Assert.Contains(expected ?? "", e.Message);
            Assert.Contains($"at byte {Split(file)[section].Offset}", e.Message);
        }
        Refuse(vcpu, payload, msrsAt, 1u << 31, "msrs: 2147483648 entries");
        Refuse(vcpu, payload, msrsAt, uint.MaxValue, "msrs: 4294967295 entries");
        Refuse(vcpu, payload, msrsAt, (uint)v.Msrs.Length + 1, null);
        Refuse(vcpu, payload, xsaveAt, uint.MaxValue - 1, "xsave: 4294967294 bytes");
        Refuse(vcpu, payload, xsaveAt, (uint)v.Xsave.Length + 1, null);
        Refuse(vcpu, payload, xcrsAt, 1u << 31, "xcrs: 2147483648 entries");
        Refuse(vcpu, payload, lapicAt, uint.MaxValue - 1, "lapic: 4294967294 bytes");
        Refuse(vcpu, payload, cpuidAt, 100_000, "cpuid: 100000 entries");
        Refuse(vcpu, payload, cpuidAt, (uint)v.Cpuid.Length + 1, null);
        Assert.Contains("bytes follow its last field", DecodeRefused(Replace(file, vcpu, [.. payload, 0]), "a byte after the vCPU").Message);
        Assert.Contains("needs", DecodeRefused(Replace(file, vcpu, payload[..100]), "a vCPU cut short").Message);
        Assert.Contains("needs 4 bytes", DecodeRefused(Replace(file, vcpu, []), "an empty vCPU").Message);

        var vm = Split(file)[vmst].Payload;
        int picAt = Unsafe.SizeOf<kvm_clock_data>();
        Refuse(vmst, vm, picAt, uint.MaxValue - 1, "PIC master: 4294967294 bytes");
        Refuse(vmst, vm, picAt, 4097, "PIC master: 4097 bytes");
        int pitAt = picAt + 3 * (4 + KvmAbi.IrqchipPayloadSize);
        Refuse(vmst, vm, pitAt, 7, "PIT present is 7");
        Assert.Contains("bytes follow its last field", DecodeRefused(Replace(file, vmst, [.. vm, 1, 2]), "bytes after the VM").Message);
    }

    // ---- payloads corrupted with their CRC made right: the parsers themselves ----

    [KvmTheory]
    [InlineData(VirtioTransportKind.Pci)]
    [InlineData(VirtioTransportKind.Mmio)]
    public void H_random_flips_in_every_section_are_refused_or_read_never_thrown(VirtioTransportKind kind)
    {
        var file = fixture.Of(kind).Bytes;
        var sections = Split(file);
        var rng = new Random(20261202 + (int)kind);
        var clock = Stopwatch.StartNew();
        for (int index = 0; index < sections.Count - 1; index++)
        {
            var s = sections[index];
            int refused = 0, read = 0, loaded = 0;
            for (int iteration = 0; iteration < 300; iteration++)
            {
                var p = (byte[])s.Payload.Clone();
                int flips = rng.Next(1, 5);
                for (int f = 0; f < flips; f++)
                {
                    p[rng.Next(p.Length)] ^= (byte)(1 << rng.Next(8));
                }
                var mutated = Replace(file, index, p);
                string why = $"{s.Tag} #{index} iteration {iteration}";
                try
                {
                    var (state, _) = SnapshotFile.Decode(mutated);
                    read++;
                    foreach (var v in state.Vcpus)
                    {
                        _ = v.Problem(); // a validator never throws
                    }
                    _ = state.Vm.Problem();
                }
                catch (SnapshotException e)
                {
                    AssertWords(e.Message);
                    Assert.Contains($"section {s.Tag} at byte {s.Offset}", e.Message);
                    refused++;
                    continue;
                }
                catch (Exception e)
                {
                    Assert.Fail($"{why}: {e.GetType().Name} escaped the reader: {e}");
                }
                // Read but perhaps nonsense: the restore must refuse it in words or build it. A few per section (each builds a VM).
                if (loaded < 4)
                {
                    loaded++;
                    TryLoad(mutated, kind, why);
                }
            }
            log.WriteLine($"{kind} {s.Tag} #{index}: {refused} refused, {read} read, {loaded} loaded");
        }
        log.WriteLine($"{clock.ElapsedMilliseconds} ms");
    }

    /// <summary>A load that may succeed (a flipped register is still a register) but must not throw anything but a SnapshotException, nor hang.</summary>
    private void TryLoad(byte[] file, VirtioTransportKind kind, string why)
    {
        string path = Write(file);
        var load = Task.Run(() =>
        {
            var (machine, files) = Snapshots.Load(path, fixture.Of(kind).MemPath, _ => { }, resume: false);
            machine.Dispose();
            files.Dispose();
        });
        Assert.True(((IAsyncResult)load).AsyncWaitHandle.WaitOne(TimeSpan.FromSeconds(20)), $"{why}: the load hangs");
        if (load.Exception?.InnerException is { } e)
        {
            Assert.True(e is SnapshotException, $"{why}: {e.GetType().Name} escaped the load: {e}");
            AssertWords(e.Message);
        }
        File.Delete(path);
    }

    // ---- well formed, but not a machine this config builds ----

    private static MachineState WithSlot(MachineState s, int index, Func<VirtioSlotState, VirtioSlotState> edit)
    {
        var slots = (VirtioSlotState[])s.Devices.Virtio.Clone();
        slots[index] = edit(slots[index]);
        return s with { Devices = s.Devices with { Virtio = slots } };
    }

    private static int SlotOf(MachineState s, uint deviceType) => Array.FindIndex(s.Devices.Virtio, v => v.Device.DeviceType == deviceType);

    /// <summary>The rng running (DRIVER_OK) with its one queue as given, the transport's copy of it the same.</summary>
    private static MachineState RunningRng(MachineState s, QueueState queue, VirtioTransportKind kind, ulong acked = 0)
    {
        int rng = SlotOf(s, 4);
        return WithSlot(s, rng, slot => slot with
        {
            Device = slot.Device with { Activated = true, AckedFeatures = acked, Queues = [queue] },
            Pci = slot.Pci is null ? null : slot.Pci with { Status = 0xf, Queues = [queue], DriverFeatures = acked },
            Mmio = slot.Mmio is null ? null : slot.Mmio with { Status = 0xf, Queues = [queue], DriverFeatures = acked },
        });
    }

    private static readonly QueueState GoodQueue = new(256, true, 0x100000, 0x101000, 0x102000, 0, 0, false, false);

    [KvmTheory]
    [InlineData(VirtioTransportKind.Pci)]
    [InlineData(VirtioTransportKind.Mmio)]
    public void J_virtio_queues_and_features_that_do_not_fit_the_device_are_refused(VirtioTransportKind kind)
    {
        var s = fixture.Of(kind).State;
        void Refuse(MachineState state, string expected, string why)
        {
            var e = LoadRefused(state, why, kind);
            log.WriteLine($"{why}: {e.Message}");
            Assert.Contains(expected, e.Message);
        }
        var cases = new (QueueState Queue, string Expected)[]
        {
            (GoodQueue with { DescTable = 0x7fff_0000_0000 }, "queue 0: its rings (descriptors at 0x7fff00000000"),
            (GoodQueue with { AvailRing = MemoryLayout.PciHoleStart + 0x1000 }, "available ring at 0xc0001000, used ring at 0x102000) are not all inside guest RAM"),
            (GoodQueue with { UsedRing = (128 << 20) - 0x100 }, "used ring at 0x7ffff00) are not all inside guest RAM"),
            (GoodQueue with { DescTable = ulong.MaxValue - 15 }, "are not all inside guest RAM"),
            (GoodQueue with { Size = 0 }, "queue 0: size 0 is not a power of two"),
            (GoodQueue with { Size = 3 }, "queue 0: size 3 is not a power of two"),
            (GoodQueue with { Size = 512 }, "larger than this device's 256"),
            (GoodQueue with { Size = 65535 }, "larger than this device's 256"),
            (GoodQueue with { DescTable = 0x100008 }, "queue 0: a ring is misaligned"),
            (GoodQueue with { EventIdx = true }, "event-index"),
        };
        foreach (var (queue, expected) in cases)
        {
            var e = LoadRefused(RunningRng(s, queue, kind), queue.ToString());
            Assert.Contains("'rng'", e.Message);
            Assert.Contains(expected, e.Message);
        }
        int rng = SlotOf(s, 4), blk = SlotOf(s, 2);
        Refuse(WithSlot(s, rng, v => v with { Device = v.Device with { AckedFeatures = 1UL << 62 } }), "include some this device does not offer", "acked, not offered");
        Refuse(WithSlot(s, rng, v => v with { Device = v.Device with { Activated = true } }), "'rng'", "running without DRIVER_OK");
        Refuse(WithSlot(s, rng, v => v with { Device = v.Device with { PendingInput = [1, 2] } }), "input", "input held by an rng");
        Refuse(WithSlot(s, rng, v => v with { Id = "rng9" }), "'rng9' in the snapshot, 'rng' here", "another id");
        Refuse(WithSlot(s, rng, v => v with { Device = s.Devices.Virtio[blk].Device }), "type 2, this one is of type 4", "a block device's state for the rng");
        Refuse(s with { Devices = s.Devices with { Virtio = s.Devices.Virtio[..^1] } }, "2 virtio devices saved; this machine has 3", "a device short");
        Refuse(s with { Devices = s.Devices with { Virtio = [.. s.Devices.Virtio, s.Devices.Virtio[0]] } }, "4 virtio devices saved", "a device more");
        Refuse(WithSlot(s, rng, v => v with { Pci = null, Mmio = null }), "transport's state is missing", "no transport");
        int console = SlotOf(s, 3);
        Refuse(WithSlot(s, console, v => v with { Device = v.Device with { PendingInput = new byte[1 << 20] } }), "the console takes at most", "a megabyte of console input");
        Refuse(s with { Devices = s.Devices with { Serial = s.Devices.Serial with { Rx = new byte[100_000] } } }, "device 'com1': rx holds 100000 bytes", "a UART holding 100 KB");
        Refuse(s with { Devices = s.Devices with { Rtc = s.Devices.Rtc with { Index = 200 } } }, "device 'rtc': index 200 is past", "a CMOS index past its RAM");
        Refuse(s with { Devices = s.Devices with { Rtc = s.Devices.Rtc with { Ram = new byte[4096] } } }, "device 'rtc': ram is 4096 bytes", "a CMOS of 4 KiB");
        if (kind == VirtioTransportKind.Pci)
        {
            var pci = s.Devices.Virtio[rng].Pci!;
            Refuse(WithSlot(s, rng, v => v with { Pci = null, Mmio = new(0, 0, 0, 0, 0, 0, [default]) }), "other transport", "MMIO state on PCI");
            Refuse(WithSlot(s, rng, v => v with { Pci = pci with { QueueVectors = [200] } }), "MSI-X vector 200 is past the table", "queue vector past the table");
            Refuse(WithSlot(s, rng, v => v with { Pci = pci with { ConfigVector = 2 } }), "configuration vector 2 is past", "config vector past the table");
            Refuse(WithSlot(s, rng, v => v with { Pci = pci with { Config = new byte[255] } }), "configuration space is 255 bytes", "a short config space");
            Refuse(WithSlot(s, rng, v => v with { Pci = pci with { MsixAddress = new ulong[64] } }), "MSI-X table is not", "a long MSI-X table");
        }
        else
        {
            Refuse(WithSlot(s, rng, v => v with { Mmio = null, Pci = fixture.Pci.State.Devices.Virtio[SlotOf(fixture.Pci.State, 4)].Pci }), "other transport", "PCI state on MMIO");
            Refuse(WithSlot(s, rng, v => v with { Mmio = v.Mmio! with { Queues = [] } }), "0 queues", "MMIO with no queue");
        }
    }

    [KvmFact]
    public void M_pci_registers_a_guest_could_write_are_taken_or_refused_but_never_thrown()
    {
        var s = fixture.Pci.State;
        int rng = SlotOf(s, 4), blk = SlotOf(s, 2);
        var pci = s.Devices.Virtio[rng].Pci!;
        byte[] WithBar(ulong bar)
        {
            var config = (byte[])pci.Config.Clone();
            BinaryPrimitives.WriteUInt64LittleEndian(config.AsSpan(0x10), bar | 0x4);
            return config;
        }
        ulong otherBar = BinaryPrimitives.ReadUInt64LittleEndian(s.Devices.Virtio[blk].Pci!.Config.AsSpan(0x10)) & ~0xfUL;
        var cases = new (string Why, PciTransportStateEdit Edit)[]
        {
            ("BAR over another device's", p => p with { Config = WithBar(otherBar) }),
            ("BAR in guest RAM", p => p with { Config = WithBar(0x1000) }),
            ("BAR just below the top of the address space", p => p with { Config = WithBar(0xffff_ffff_fffe_0000) }),
            ("BAR at 0", p => p with { Config = WithBar(0) }),
            ("MSI-X entries of garbage", p => p with { MsixAddress = [.. p.MsixAddress.Select(_ => 0xdead_beef_0000_0000UL)], MsixData = [.. p.MsixData.Select(_ => uint.MaxValue)] }),
            ("MSI-X entries in the interrupt window", p => p with { MsixAddress = [.. p.MsixAddress.Select(_ => 0xfee0_0000UL)], MsixData = [.. p.MsixData.Select(_ => 0xffffu)] }),
            ("a queue select past the queues", p => p with { QueueSelect = 60000 }),
            ("feature selects past the words", p => p with { DeviceFeatureSelect = uint.MaxValue, DriverFeatureSelect = uint.MaxValue }),
            ("an ISR of -1", p => p with { Isr = -1 }),
            ("a status with every bit but DRIVER_OK", p => p with { Status = 0xfb }),
        };
        foreach (var (why, edit) in cases)
        {
            TryLoad(SnapshotFile.Encode(WithSlot(s, rng, v => v with { Pci = edit(v.Pci!) }), fixture.Pci.Layout), VirtioTransportKind.Pci, why);
        }
        var top = LoadRefused(SnapshotFile.Encode(WithSlot(s, rng, v => v with { Pci = v.Pci! with { Config = WithBar(0xffff_ffff_ffff_0000) } }), fixture.Pci.Layout), "a BAR whose window wraps");
        Assert.Contains("device 'rng': its BAR at 0xffffffffffff0000 would run past the top", top.Message);
        var mmio = fixture.Mmio.State;
        int mrng = SlotOf(mmio, 4);
        TryLoad(SnapshotFile.Encode(WithSlot(mmio, mrng, v => v with { Mmio = v.Mmio! with { QueueSel = uint.MaxValue, DeviceFeaturesSel = 7, InterruptStatus = uint.MaxValue } }), fixture.Mmio.Layout),
            VirtioTransportKind.Mmio, "MMIO selects past everything");
    }

    private delegate Virtio.Transport.PciTransportState PciTransportStateEdit(Virtio.Transport.PciTransportState state);

    [KvmFact]
    public void K_vcpus_the_vm_and_the_config_that_do_not_fit_are_refused()
    {
        var s = fixture.Pci.State;
        void Refuse(MachineState state, string expected, string why)
        {
            var e = LoadRefused(state, why);
            log.WriteLine($"{why}: {e.Message}");
            Assert.Contains(expected, e.Message);
            Assert.DoesNotContain("vm: vm:", e.Message);
        }
        var v0 = s.Vcpus[0];
        var layout = fixture.Pci.Layout;
        Refuse(s with { Vcpus = [] }, "DEVS at byte", "no vCPU");
        Refuse(s with { Vcpus = [v0] }, "vcpus: 1 saved for a VM of 2", "a vCPU short");
        Refuse(s with { Vcpus = [.. s.Vcpus, s.Vcpus[1] with { Id = 2 }] }, "vcpus: 3 saved for a VM of 2", "a vCPU more");
        Refuse(s with { Vcpus = [s.Vcpus[1], v0] }, "vcpu 0: saved as vCPU 1", "vCPUs swapped");
        Refuse(s with { Vcpus = [v0, v0] }, "vcpu 1: saved as vCPU 0", "vCPU 0 twice");
        Refuse(s with { Vcpus = [v0, s.Vcpus[1] with { Id = -1 }] }, "vcpu -1: the id is outside", "a negative id");
        Refuse(s with { Vcpus = [v0 with { Lapic = new byte[512] }, s.Vcpus[1]] }, "lapic is 512 bytes", "a short LAPIC");
        Refuse(s with { Vcpus = [v0 with { Xsave = new byte[4098] }, s.Vcpus[1]] }, "XSAVE area is 4098 bytes", "an odd XSAVE area");
        Refuse(s with { Vcpus = [v0 with { TscKhz = 0 }, s.Vcpus[1]] }, "TSC frequency is 0 kHz", "no TSC");
        Refuse(s with { Vcpus = [v0 with { MpState = 99 }, s.Vcpus[1]] }, "mp_state is 99", "an mp_state KVM lacks");
        Refuse(s with { Vcpus = [v0 with { Msrs = [v0.Msrs[0], v0.Msrs[0]] }, s.Vcpus[1]] }, "appears twice", "an MSR twice");
        Refuse(s with { Vcpus = [v0 with { Sregs = v0.Sregs with { cr4 = ulong.MaxValue } }, s.Vcpus[1]] }, "vcpu 0: KVM refused the saved state", "CR4 all ones");
        // KVM itself is the judge of a register's bits; what it takes is its business, but nothing may escape as another exception.
        TryLoad(SnapshotFile.Encode(s with { Vcpus = [v0 with { Sregs = v0.Sregs with { efer = ulong.MaxValue } }, s.Vcpus[1]] }, layout), VirtioTransportKind.Pci, "EFER all ones");
        Refuse(s with { Vcpus = [v0 with { Msrs = [.. v0.Msrs, new MsrValue(0xdead_beef, 1)] }, s.Vcpus[1]] }, "vcpu 0", "an MSR no CPU has");
        Refuse(s with { Vcpus = [v0 with { Xcrs = [new XcrValue(0, 0)] }, s.Vcpus[1]] }, "XCR0 is 0x0", "XCR0 without x87");
        Refuse(s with { Vcpus = [v0 with { Xcrs = [new XcrValue(0, ulong.MaxValue)] }, s.Vcpus[1]] }, "vcpu 0: KVM refused the saved state", "XCR0 all ones");
        Refuse(s with { Vcpus = [v0 with { Events = v0.Events with { flags = 0x8000_0000 } }, s.Vcpus[1]] }, "vcpu events flags", "undefined event flags");
        Refuse(s with { Vcpus = [v0 with { Cpuid = [.. v0.Cpuid, v0.Cpuid[0]] }, s.Vcpus[1]] }, "appears twice", "a CPUID leaf twice");
        var leaf1 = Array.FindIndex(v0.Cpuid, e => e.function == 1);
        var allFeatures = (kvm_cpuid_entry2[])v0.Cpuid.Clone();
        allFeatures[leaf1].ecx = allFeatures[leaf1].edx = uint.MaxValue;
        Refuse(s with { Vcpus = [v0 with { Cpuid = allFeatures }, s.Vcpus[1]] }, "which this host does not offer", "every CPUID feature");
        var pit = s.Vm.Pit!.Value;
        Refuse(s with { Vm = s.Vm with { Pit = pit with { channel1 = pit.channel1 with { mode = 9 } } } }, "vm: PIT channel 1: mode 9", "a PIT mode that is not");
        Refuse(s with { Vm = s.Vm with { Clock = s.Vm.Clock with { flags = 0x8000 } } }, "vm: clock flags", "undefined clock flags");
        Refuse(s with { Vm = s.Vm with { Ioapic = null } }, "vm: the irqchip state has some", "no IOAPIC");
        Refuse(s with { Vm = s.Vm with { PicMaster = new byte[12] } }, "master PIC state is 12 bytes", "a short PIC");

        Refuse(s with { Config = s.Config with { MemoryBytes = 1 } }, "memory is 1 bytes; the layout says", "memory 1 byte");
        Refuse(s with { Config = s.Config with { MemoryBytes = 2UL << 40 } }, "memory is 2199023255552 bytes", "memory 2 TiB");
        var tiny = new SnapshotFile.Layout(SnapshotKind.Full, 1, [new(0, 1, 0)]);
        Assert.Contains("1 bytes of RAM is not a size", LoadRefused(SnapshotFile.Encode(s with { Config = s.Config with { MemoryBytes = 1 } }, tiny), "a 1-byte layout").Message);
        Refuse(s with { Config = s.Config with { Vcpus = 0 } }, "vcpus: 0 is outside", "vcpus 0 in the config");
        Refuse(s with { Config = s.Config with { Vcpus = 100_000 } }, "vcpus: 100000 is outside", "vcpus 100000 in the config");
        Refuse(s with { Config = s.Config with { Transport = VirtioTransportKind.Mmio } }, "pci-root", "PCI state under an MMIO config");
        Refuse(s with { Config = s.Config with { Rng = false } }, "virtio devices saved; this machine has 2", "a device the config lacks");
        Refuse(s with { Config = s.Config with { Acpi = false } }, "acpi-pm", "ACPI state without ACPI");
        var e = LoadRefused(s with { Config = s.Config with { Disks = [new BlockConfig(Path.Combine(fixture.Dir, "gone.img"))] } }, "a disk that is gone");
        Assert.StartsWith("config: disk:", e.Message);
        Assert.Contains("gone.img", e.Message);
        Assert.Equal(layout, fixture.Pci.Layout);
    }

    [KvmFact]
    public void L_a_memory_file_that_is_not_this_snapshots_ram_is_refused_and_a_fifo_does_not_block()
    {
        var t = fixture.Pci;
        string dir = Path.Combine(fixture.Dir, "memcases");
        Directory.CreateDirectory(dir);
        Assert.Contains("cannot open it", LoadRefused(t.StatePath, Path.Combine(dir, "missing.mem"), "a missing memory file").Message);
        Assert.Contains("not a regular file", LoadRefused(t.StatePath, dir, "a directory").Message);
        string shorter = Path.Combine(dir, "short.mem"), longer = Path.Combine(dir, "long.mem"), empty = Path.Combine(dir, "empty.mem");
        foreach (var (path, size) in new[] { (shorter, (128L << 20) - 4096), (longer, (128L << 20) + 1), (empty, 0L) })
        {
            using (var f = File.Create(path))
            {
                f.SetLength(size);
            }
            Assert.Contains($"is {size} bytes; the snapshot's RAM is 134217728 bytes", LoadRefused(t.StatePath, path, $"{size} bytes").Message);
        }
        string fifo = Path.Combine(dir, "fifo.mem");
        using (var mkfifo = Process.Start("mkfifo", fifo))
        {
            mkfifo.WaitForExit();
            Assert.Equal(0, mkfifo.ExitCode);
        }
        Assert.Contains("not a regular file", LoadRefused(t.StatePath, fifo, "a FIFO with no writer").Message);
        Assert.Contains("cannot open it", LoadRefused(t.StatePath, "/dev/null/x", "a path through a device").Message);
        Assert.Contains("not a regular file", LoadRefused(t.StatePath, "/dev/zero", "/dev/zero").Message);
        // The state file itself: a directory, a FIFO, /dev/zero (endless), a missing one, one past the size limit.
        string big = Path.Combine(dir, "big.snap");
        using (var f = File.Create(big))
        {
            f.SetLength(SnapshotFile.MaxSize + 1);
        }
        Assert.Contains($"is {SnapshotFile.MaxSize + 1} bytes; a snapshot is a regular file of at most 64 MiB", LoadRefused(big, t.MemPath, "a state file past the limit").Message);
        Assert.Contains("not a regular file", LoadRefused(dir, t.MemPath, "a directory for a state file").Message);
        Assert.Contains("not a regular file", LoadRefused("/dev/zero", t.MemPath, "/dev/zero for a state file").Message);
        Assert.Contains("a FIFO, not a regular file", LoadRefused(fifo, t.MemPath, "a FIFO for a state file").Message);
        Assert.Contains("missing.snap", LoadRefused(Path.Combine(dir, "missing.snap"), t.MemPath, "a missing state file").Message);
    }

    [KvmTheory]
    [InlineData(VirtioTransportKind.Pci)]
    [InlineData(VirtioTransportKind.Mmio)]
    public void Z_after_every_refusal_the_pristine_snapshot_loads_and_its_guest_answers(VirtioTransportKind kind)
    {
        var t = fixture.Of(kind);
        var output = new StringBuilder();
        var (machine, files) = Snapshots.Load(t.StatePath, t.MemPath, b =>
        {
            lock (output)
            {
                output.Append((char)b);
            }
        }, resume: true);
        using (machine)
        using (files)
        {
            var run = Task.Factory.StartNew(() => machine.Run(TimeSpan.FromSeconds(60)), TaskCreationOptions.LongRunning);
            machine.Serial.Enqueue("c\n"u8);
            WaitFor(output, "count=2", run);
            machine.Serial.Enqueue("q\n"u8);
            Assert.True(run.Wait(TimeSpan.FromSeconds(30)));
            Assert.Equal(StopReason.DebugExit, run.Result.Reason);
        }
    }

    // ---- the JSON sections ----

    private byte[] EditJson(string tag, Action<JsonNode> edit, VirtioTransportKind kind = VirtioTransportKind.Pci)
    {
        var file = fixture.Of(kind).Bytes;
        int index = IndexOf(file, tag);
        var node = JsonNode.Parse(Split(file)[index].Payload)!;
        edit(node);
        return Replace(file, index, Encoding.UTF8.GetBytes(node.ToJsonString()));
    }

    private byte[] EditJson(string tag, string path, string value)
    {
        if (path != "")
        {
            return EditJson(tag, root => Apply(root, path, value));
        }
        var file = fixture.Pci.Bytes;
        return Replace(file, IndexOf(file, tag), Encoding.UTF8.GetBytes(value));
    }

    public static TheoryData<string, string, string> JsonCases => new()
    {
        // tag, JSON path to edit (a.b.0.c; "+name" adds a member), the value as JSON (or "-" to remove the member)
        { "CONF", "+Bogus", "1" },
        { "CONF", "KernelPath", "-" },
        { "CONF", "MemoryBytes", "-" },
        { "CONF", "KernelPath", "null" },
        { "CONF", "Cmdline", "null" },
        { "CONF", "MemoryBytes", "\"lots\"" },
        { "CONF", "MemoryBytes", "-1" },
        { "CONF", "MemoryBytes", "1.5" },
        { "CONF", "MemoryBytes", "123456789012345678901234567890" },
        { "CONF", "Vcpus", "true" },
        { "CONF", "Vcpus", "null" },
        { "CONF", "Transport", "\"Carrier pigeon\"" },
        { "CONF", "Transport", "99" },
        { "CONF", "Disks", "null" },
        { "CONF", "Disks", "{}" },
        { "CONF", "Disks", "[null]" },
        { "CONF", "Disks", "[{}]" },
        { "CONF", "Disks.0.Path", "null" },
        { "CONF", "Disks.0.Path", "-" },
        { "CONF", "Disks.0.Queues", "\"one\"" },
        { "CONF", "Disks.0.+Extra", "{}" },
        { "CONF", "Nets", "[null]" },
        { "CONF", "Disks.0.Queues", "0" },
        { "CONF", "Disks.0.Queues", "-1" },
        { "CONF", "Disks.0.Queues", "1000" },
        { "CONF", "Disks.0.Path", "\"/dev/zero\"" },
        { "CONF", "Disks.0.Path", "\"/tmp\"" },
        { "CONF", "Disks.0.Path", "\"\"" },
        { "CONF", "Disks.0.Id", "\"rng\"" },
        { "CONF", "Nets", "[{\"Tap\": null, \"UnixPath\": null, \"UnixPeer\": null, \"Mac\": \"AAAA\"}]" },
        { "CONF", "Nets", "[{\"Tap\": null, \"UnixPath\": \"/nonexistent/n.sock\", \"UnixPeer\": null, \"Mac\": \"AAAAAAAA\"}]" },
        { "CONF", "Vsock", "{\"Cid\": 3, \"SocketPath\": \"/nonexistent/v.sock\"}" },
        { "CONF", "Nets", "[{\"Tap\": null, \"UnixPath\": \"/tmp/a\", \"UnixPeer\": \"\", \"Mac\": \"AAAAAAAA\"}]" },
        { "CONF", "Nets", "[{\"Tap\": \"tap0\", \"UnixPath\": \"/tmp/a\", \"UnixPeer\": \"/tmp/b\", \"Mac\": \"AAAAAAAA\"}]" },
        { "CONF", "Vsock", "{\"Cid\": 0, \"SocketPath\": \"\"}" },
        { "CONF", "Vsock", "{\"Cid\": 3, \"SocketPath\": \"\"}" },
        { "CONF", "Vsock", "{\"Cid\": 4294967296, \"SocketPath\": \"/tmp/v\"}" },
        { "CONF", "Vsock", "{}" },
        { "CONF", "Vsock", "{\"Cid\": null}" },
        { "CONF", "", "[]" },
        { "CONF", "", "null" },
        { "CONF", "", "\"a string\"" },
        { "CONF", "", "42" },
        { "CONF", "Cmdline", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]" },
        { "DEVS", "+Bogus", "1" },
        { "DEVS", "Serial", "-" },
        { "DEVS", "Serial", "null" },
        { "DEVS", "Serial.Rx", "null" },
        { "DEVS", "Serial.Rx", "\"not base64!\"" },
        { "DEVS", "Serial.Rx", "[1,2,3]" },
        { "DEVS", "Serial.Ier", "256" },
        { "DEVS", "Serial.Ier", "-1" },
        { "DEVS", "I8042", "null" },
        { "DEVS", "Rtc", "null" },
        { "DEVS", "Rtc.Ram", "null" },
        { "DEVS", "Rtc.Ram", "\"AAAA\"" },
        { "DEVS", "Virtio", "null" },
        { "DEVS", "Virtio", "[]" },
        { "DEVS", "Virtio", "[null, null, null]" },
        { "DEVS", "Virtio.0", "null" },
        { "DEVS", "Virtio.0.Id", "null" },
        { "DEVS", "Virtio.0.Id", "-" },
        { "DEVS", "Virtio.0.Id", "\"nonesuch\"" },
        { "DEVS", "Virtio.0.Device", "null" },
        { "DEVS", "Virtio.0.Device.Queues", "null" },
        { "DEVS", "Virtio.0.Device.Queues", "[null]" },
        { "DEVS", "Virtio.0.Device.DeviceType", "99" },
        { "DEVS", "Virtio.0.Device.AckedFeatures", "18446744073709551615" },
        { "DEVS", "Virtio.0.Device.PendingInput", "\"AAAA\"" },
        { "DEVS", "Virtio.0.Device.+Bogus", "0" },
        { "DEVS", "Virtio.0.Pci", "null" },
        { "DEVS", "Virtio.0.Pci.Config", "null" },
        { "DEVS", "Virtio.0.Pci.Config", "\"AAAA\"" },
        { "DEVS", "Virtio.0.Pci.Queues", "null" },
        { "DEVS", "Virtio.0.Pci.Queues", "[]" },
        { "DEVS", "Virtio.0.Pci.Queues.0", "null" },
        { "DEVS", "Virtio.0.Pci.Queues.0.Size", "65536" },
        { "DEVS", "Virtio.0.Pci.QueueVectors", "null" },
        { "DEVS", "Virtio.0.Pci.MsixAddress", "null" },
        { "DEVS", "Virtio.0.Pci.MsixData", "[]" },
        { "DEVS", "Virtio.0.Pci.MsixMasked", "[0]" },
        { "DEVS", "Virtio.0.Pci.MsixPending", "huge" },
        { "DEVS", "Virtio.0.Pci.Status", "\"DRIVER_OK\"" },
        { "DEVS", "Virtio.0.Pci.Isr", "null" },
        { "DEVS", "Virtio.1.Pci.MsixAddress", "huge" },
        { "DEVS", "Virtio", "huge" },
        { "DEVS", "", "[]" },
        { "DEVS", "", "null" },
    };

    [KvmTheory]
    [MemberData(nameof(JsonCases))]
    public void I_json_sections_with_unknown_missing_mistyped_null_or_huge_members_are_refused(string tag, string path, string value)
    {
        var mutated = EditJson(tag, path, value);
        var file = fixture.Pci.Bytes;
        var offset = Split(file)[IndexOf(file, tag)].Offset;
        SnapshotException e;
        try
        {
            SnapshotFile.Decode(mutated);
            e = LoadRefused(mutated, $"{tag} {path}={value}"); // read, but the restore must see what is wrong
        }
        catch (SnapshotException decode)
        {
            e = decode;
            Assert.Contains($"section {tag} at byte {offset}", e.Message);
            if (tag == "DEVS")
            {
                // A restore decodes the devices' section beside building the VM (ReadWithDevicesAside): the same refusal, the VM it built released.
                Assert.Equal(e.Message, LoadRefused(mutated, $"{tag} {path}={value}").Message);
            }
        }
        catch (Exception other)
        {
            Assert.Fail($"{tag} {path}={value}: {other.GetType().Name} escaped the reader: {other}");
            return;
        }
        log.WriteLine(e.Message);
        AssertWords(e.Message);
    }

    /// <summary>Edits <paramref name="root"/> at <paramref name="path"/> ("a.0.b"; a last part "+x" adds x).</summary>
    private static void Apply(JsonNode root, string path, string value)
    {
        var parts = path.Split('.');
        JsonNode node = root;
        foreach (var part in parts[..^1])
        {
            node = int.TryParse(part, out int i) ? node[i]! : node[part]!;
        }
        string last = parts[^1];
        JsonNode? NewValue(JsonNode? old) => value == "huge" ? Huge(old) : JsonNode.Parse(value);
        if (node is JsonArray array && int.TryParse(last, out int at))
        {
            array[at] = NewValue(array[at]);
        }
        else if (value == "-")
        {
            Assert.True(node.AsObject().Remove(last), $"no member {last} to remove");
        }
        else
        {
            string name = last.TrimStart('+');
            Assert.True(last.StartsWith('+') || node.AsObject().ContainsKey(name), $"no member {name} in {node.ToJsonString()[..Math.Min(200, node.ToJsonString().Length)]}");
            node[name] = NewValue(node[name]);
        }
    }

    /// <summary>An array of a million copies of its first element (or of zeros): far more than any device has, well under the file's limit.</summary>
    private static JsonNode Huge(JsonNode? old)
    {
        var element = old is JsonArray { Count: > 0 } a ? a[0]! : JsonValue.Create(0);
        int count = element is JsonValue ? 1_000_000 : 5_000;
        var array = new JsonArray();
        for (int i = 0; i < count; i++)
        {
            array.Add(element.DeepClone());
        }
        return array;
    }
}
