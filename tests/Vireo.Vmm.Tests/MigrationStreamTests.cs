using System.Buffers.Binary;
using System.IO.Hashing;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Runtime.InteropServices;
using Vireo.Interop;
using Vireo.Tests;
using Vireo.Vmm.Migration;
using Vireo.Vmm.Snapshot;
using Xunit.Abstractions;
using Running = Vireo.Vmm.Tests.SnapshotTests.Running;

namespace Vireo.Vmm.Tests;

/// <summary>Alone, so that the process's descriptors and mappings are this class's to count.</summary>
[CollectionDefinition(nameof(MigrationStreamCollection), DisableParallelization = true)]
public sealed class MigrationStreamCollection;

/// <summary>
/// The valid pieces of a migration, taken once from a real machine: its config as CONF carries
/// it, its RAM's non-zero pages, and its state as STAT carries it.
/// </summary>
public sealed class MigrationStreamFixture : IDisposable
{
    public VmConfig Config { get; } = new()
    {
        KernelPath = TestEnvironment.Guest("snapshot"), MemoryBytes = 128 << 20, Vcpus = 1, DebugExit = true, MemoryBacking = MemoryBacking.Anonymous,
    };

    public string Dir { get; } = TempDirectory.Create("vireo-migstream");
    public byte[] ConfigBytes { get; }
    public MachineState State { get; }
    public byte[] StateBytes { get; }

    /// <summary>The RAM's non-zero pages, in runs of at most 4 MiB: what a first pre-copy round sends.</summary>
    public List<(ulong Gpa, byte[] Bytes)> Pages { get; } = [];

    public MigrationStreamFixture()
    {
        ConfigBytes = JsonSerializer.SerializeToUtf8Bytes(Config, SnapshotJson.Default.VmConfig);
        using var source = new Running(o => Machine.Create(Config, o));
        source.WaitFor("snapshot: up");
        source.Type("c\n");
        source.WaitFor("count=1");
        source.Machine.Pause();
        State = source.Machine.SaveState();
        StateBytes = SnapshotFile.Encode(State, SnapshotFile.LayoutOf(source.Machine.Memory, SnapshotKind.Full));
        foreach (var region in source.Machine.Memory.Regions)
        {
            var ram = source.Machine.Memory.GetSpan(region.Start, region.Size);
            int run = -1;
            for (int page = 0; page <= ram.Length / 4096; page++)
            {
                bool data = page < ram.Length / 4096 && ram.Slice(page * 4096, 4096).ContainsAnyExcept((byte)0);
                if (run >= 0 && (!data || page - run == MigrationWire.MaxPageBytes / 4096))
                {
                    Pages.Add((region.Start.Value + (ulong)run * 4096, ram[(run * 4096)..(page * 4096)].ToArray()));
                    run = -1;
                }
                if (data && run < 0)
                {
                    run = page;
                }
            }
        }
    }

    public void Dispose()
    {
    }
}

/// <summary>
/// Hostile migration streams: each fed over a real Unix socket to <see cref="MigrationReceiver.Receive"/>,
/// which must refuse it with a <see cref="MigrationException"/> naming the byte or the field in a
/// user's words, answer the source with FAIL and that reason, and leave nothing behind (no VM, no
/// vCPU, no RAM, no descriptor). The Z_ tests then receive whole valid streams and run their guests:
/// the harness can pass, and the refusals left the process whole.
/// </summary>
[Collection(nameof(MigrationStreamCollection))]
[TestCaseOrderer("Vireo.Vmm.Tests.ByNameOrderer", "Vireo.Vmm.Tests")]
public class MigrationStreamTests(MigrationStreamFixture fixture, ITestOutputHelper log) : IClassFixture<MigrationStreamFixture>
{
    private MigrationStreamFixture F => fixture;

    // ---- a stream, piece by piece ----

    /// <summary>Bytes to write, and descriptors to pass along (each on one byte of its own, as SCM_RIGHTS carries them).</summary>
    public sealed class Wire
    {
        private readonly List<object> _parts = [];
        private readonly MemoryStream _pending = new();

        public long Length { get; private set; }

        public Wire Bytes(ReadOnlySpan<byte> bytes)
        {
            _pending.Write(bytes);
            Length += bytes.Length;
            return this;
        }

        public Wire Header(string magic = "VIREOMIG", uint version = MigrationWire.Version)
        {
            var h = new byte[12];
            Encoding.ASCII.GetBytes(magic).AsSpan(0, Math.Min(8, magic.Length)).CopyTo(h);
            BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(8), version);
            return Bytes(h);
        }

        public Wire FrameHeader(string tag, uint length)
        {
            var h = new byte[8];
            Encoding.Latin1.GetBytes(tag, h);
            BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(4), length);
            return Bytes(h);
        }

        public Wire Frame(string tag, ReadOnlySpan<byte> payload) => FrameHeader(tag, (uint)payload.Length).Bytes(payload);

        public Wire Page(ulong gpa, ReadOnlySpan<byte> pages)
        {
            FrameHeader(MigrationWire.Pages, (uint)(8 + pages.Length));
            Span<byte> a = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(a, gpa);
            return Bytes(a).Bytes(pages);
        }

        /// <summary>One byte with the descriptor <paramref name="open"/> gives attached; the writer closes it once sent.</summary>
        public Wire Fd(Func<SafeHandle> open, byte tag = 1)
        {
            Flush();
            _parts.Add(open);
            _parts.Add(new[] { tag });
            Length++;
            return this;
        }

        private void Flush()
        {
            if (_pending.Length > 0)
            {
                _parts.Add(_pending.ToArray());
                _pending.SetLength(0);
            }
        }

        /// <summary>Writes it all, stopping quietly where the receiver has gone; returns what stopped it, if anything.</summary>
        public string? WriteTo(Socket socket)
        {
            Flush();
            try
            {
                for (int i = 0; i < _parts.Count; i++)
                {
                    if (_parts[i] is Func<SafeHandle> open)
                    {
                        using var fd = open();
                        FdPassing.SendFd((int)socket.Handle, (int)fd.DangerousGetHandle(), ((byte[])_parts[++i])[0]);
                    }
                    else
                    {
                        socket.Send((byte[])_parts[i]);
                    }
                }
                return null;
            }
            catch (Exception e) when (e is SocketException or SysError)
            {
                return e.Message; // the receiver refused before reading it all, and closed
            }
        }
    }

    /// <summary>A hostile stream, what its refusal must say, and how many OKAYs the receiver sends before its FAIL (-1: one or two).</summary>
    public sealed record Case(Wire Wire, string[] Expect, int Okays = 0);

    private static Case Refused(Wire wire, int okays, params string[] expect) => new(wire, expect, okays);

    // ---- the valid pieces ----

    private static Wire Start() => new Wire().Header();

    /// <summary>The header and the valid CONF: the receiver answers OKAY.</summary>
    private Wire Configured() => Start().Frame(MigrationWire.Config, fixture.ConfigBytes);

    /// <summary>A local migration's start: LOCL, then the config; the memory comes by descriptor.</summary>
    private Wire LocallyConfigured() => Start().Frame(MigrationWire.Local, []).Frame(MigrationWire.Config, fixture.ConfigBytes);

    private Wire WithPages(Wire w)
    {
        foreach (var (gpa, bytes) in fixture.Pages)
        {
            w.Page(gpa, bytes);
        }
        return w;
    }

    private byte[] Conf(Action<JsonObject> edit)
    {
        var node = JsonNode.Parse(fixture.ConfigBytes)!.AsObject();
        edit(node);
        return Encoding.UTF8.GetBytes(node.ToJsonString());
    }

    private byte[] Stat(MachineState state, SnapshotFile.Layout layout) => SnapshotFile.Encode(state, layout);

    private static SnapshotFile.Layout FullLayout(ulong ram) => new(SnapshotKind.Full, ram, [new(0, ram, 0)]);

    private static byte[] Flipped(byte[] bytes, int at, byte mask = 0x10)
    {
        var copy = (byte[])bytes.Clone();
        copy[at] ^= mask;
        return copy;
    }

    /// <summary>Where each section of a snapshot starts: tag, header offset, payload length.</summary>
    private static List<(string Tag, int Offset, int Length)> Sections(byte[] snapshot)
    {
        var list = new List<(string, int, int)>();
        for (int at = 12; at < snapshot.Length;)
        {
            int length = (int)BinaryPrimitives.ReadUInt32LittleEndian(snapshot.AsSpan(at + 8));
            list.Add((Encoding.ASCII.GetString(snapshot, at, 4), at, length));
            at += 12 + length;
        }
        return list;
    }

    private string NewPath(string name) => Path.Combine(fixture.Dir, $"{name}-{Guid.NewGuid():N}");

    /// <summary>A sparse regular file of <paramref name="size"/> bytes, opened read-write or read-only.</summary>
    private static Func<SafeHandle> FileOf(string path, long size, FileAccess access = FileAccess.ReadWrite) => () =>
    {
        using (var f = File.Create(path))
        {
            f.SetLength(size);
        }
        return File.OpenHandle(path, FileMode.Open, access);
    };

    private static Func<SafeHandle> MemfdOf(string name, long size) => () =>
    {
        var fd = new FileDescriptor(Check.Io(Libc.MemfdCreate(name, Libc.MFD_CLOEXEC), "memfd_create"));
        Check.Io(Libc.Ftruncate(fd.Fd, size), "ftruncate");
        return fd;
    };

    // ---- the table ----

    public static TheoryData<string> Names => [.. CaseTable.Keys];

    private static readonly Dictionary<string, Func<MigrationStreamTests, Case>> CaseTable = Table();

    private static Dictionary<string, Func<MigrationStreamTests, Case>> Table()
    {
        var table = Fixed;
        // A byte of the state changed and its section's CRC made right: the parsers and the restore
        // themselves must refuse it, or take it and fail at the commit that never comes.
        for (int seed = 0; seed < 24; seed++)
        {
            int s = seed;
            table[$"STAT with a CRC-correct flip, seed {s}"] = t => t.StatForged(s);
        }
        return table;
    }

    private static Dictionary<string, Func<MigrationStreamTests, Case>> Fixed => new()
    {
        // -- the stream's header --
        ["empty stream"] = t => Refused(new Wire(), 0, "byte 0", "ended in the middle of the stream's header"),
        ["5 bytes of magic"] = t => Refused(new Wire().Bytes("VIREO"u8), 0, "byte 5", "ended in the middle of the stream's header"),
        ["magic without a version"] = t => Refused(new Wire().Bytes("VIREOMIG\x01"u8), 0, "byte 9", "ended in the middle of the stream's header"),
        ["a snapshot's magic"] = t => Refused(new Wire().Header("VIREOSNP"), 0, "byte 0", "not a Vireo migration stream"),
        ["zeros for a header"] = t => Refused(new Wire().Bytes(new byte[64]), 0, "byte 0", "not a Vireo migration stream"),
        ["HTTP for a header"] = t => Refused(new Wire().Bytes("GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8), 0, "byte 0", "not a Vireo migration stream"),
        ["version 0"] = t => Refused(new Wire().Header(version: 0), 0, "byte 8", "version 0", "reads version 3"),
        ["version 1 (a destination's last word unknown to it)"] = t => Refused(new Wire().Header(version: 1), 0, "byte 8", "version 1"),
        ["version 2 (no STOP)"] = t => Refused(new Wire().Header(version: 2), 0, "byte 8", "version 2"),
        ["version 4"] = t => Refused(new Wire().Header(version: 4), 0, "byte 8", "version 4"),
        ["version 2^32-1"] = t => Refused(new Wire().Header(version: uint.MaxValue), 0, "byte 8", "version 4294967295"),
        ["a header and nothing"] = t => Refused(Start(), 0, "byte 12", "ended in the middle of a frame header"),
        ["half a frame header"] = t => Refused(Start().Bytes("CONF"u8), 0, "byte 16", "ended in the middle of a frame header"),

        // -- frames of unknown kind, and lengths past each kind's bound --
        ["unknown tag XXXX"] = t => Refused(Start().Frame("XXXX", [1, 2, 3]), 0, "byte 12", "unknown kind 'XXXX'"),
        ["lower-case conf"] = t => Refused(Start().Frame("conf", t.F.ConfigBytes), 0, "byte 12", "unknown kind 'conf'"),
        ["unprintable tag"] = t => Refused(Start().FrameHeader("\u0001\u00ff\u0000\n", 0), 0, "byte 12", "unreadable tag"),
        ["a second header as a frame"] = t => Refused(Start().Header(), 0, "byte 12", "unknown kind 'VIRE'"),
        ["unknown tag after CONF"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Frame("PAGX", new byte[16]), 1, $"byte {at}", "unknown kind 'PAGX'"); },
        ["CONF of 1 MiB + 1"] = t => Refused(Start().FrameHeader("CONF", MigrationWire.MaxConfig + 1).Bytes(new byte[4096]), 0, "byte 12", "CONF frame of 1048577 bytes", "at most 1048576"),
        ["CONF of 2^32-1"] = t => Refused(Start().FrameHeader("CONF", uint.MaxValue), 0, "byte 12", "CONF frame of 4294967295 bytes"),
        ["PAGE of 4 MiB + 9"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.FrameHeader("PAGE", MigrationWire.MaxPageBytes + 9).Bytes(new byte[4096]), 1, $"byte {at}", "PAGE frame of 4194313 bytes", "at most 4194312"); },
        ["PAGE of 2^32-1"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.FrameHeader("PAGE", uint.MaxValue), 1, $"byte {at}", "PAGE frame of 4294967295 bytes"); },
        ["STAT past the snapshot limit"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.FrameHeader("STAT", (uint)SnapshotFile.MaxSize + 1), 1, $"byte {at}", $"STAT frame of {SnapshotFile.MaxSize + 1} bytes", $"at most {SnapshotFile.MaxSize}"); },
        ["STAT of 2^31"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.FrameHeader("STAT", 1u << 31), 1, $"byte {at}", "STAT frame of 2147483648 bytes"); },
        ["STOP with a payload"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Frame("STOP", [0]), 1, $"byte {at}", "STOP frame of 1 bytes", "at most 0"); },
        ["STOP twice"] = t => { var w = t.Configured().Frame("STOP", []); long at = w.Length; return Refused(w.Frame("STOP", []), 2, $"byte {at}", "a second STOP"); },
        ["STOP, answered, and then the connection cut"] = t => Refused(t.Configured().Frame("STOP", []), 2, "ended in the middle of a frame header"),
        ["OKAY with a payload"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Frame("OKAY", [0]), 1, $"byte {at}", "OKAY frame of 1 bytes", "at most 0"); },
        ["CMIT with a payload"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Frame("CMIT", "now"u8), 1, $"byte {at}", "CMIT frame of 3 bytes", "at most 0"); },
        ["FAIL of 4097 bytes"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Frame("FAIL", new byte[4097]), 1, $"byte {at}", "FAIL frame of 4097 bytes", "at most 4096"); },
        ["MEMF of 2 bytes"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Frame("MEMF", [1, 1]), 1, $"byte {at}", "MEMF frame of 2 bytes", "at most 1"); },

        // -- frames out of their place --
        ["PAGE before CONF"] = t => Refused(Start().Page(0, new byte[4096]), 0, "byte 12", "must begin with the VM's config (CONF), not PAGE"),
        ["STAT before CONF"] = t => Refused(Start().Frame("STAT", t.F.StateBytes), 0, "byte 12", "not STAT"),
        ["MEMF before CONF"] = t => Refused(Start().Frame("MEMF", [1]), 0, "byte 12", "not MEMF"),
        ["CMIT before CONF"] = t => Refused(Start().Frame("CMIT", []), 0, "byte 12", "not CMIT"),
        ["OKAY before CONF"] = t => Refused(Start().Frame("OKAY", []), 0, "byte 12", "not OKAY"),
        ["CONF twice"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Frame("CONF", t.F.ConfigBytes), 1, $"byte {at}", "a CONF frame where pages or the machine's state belong"); },
        ["CMIT before STAT"] = t => { var w = t.WithPages(t.Configured()); long at = w.Length; return Refused(w.Frame("CMIT", []), 1, $"byte {at}", "a CMIT frame where pages or the machine's state belong"); },
        ["FAIL from the source"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Frame("FAIL", "gave up"u8), 1, $"byte {at}", "a FAIL frame where"); },
        ["OKAY from the source"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Frame("OKAY", []), 1, $"byte {at}", "OKAY frame where pages"); },

        // -- CONF that is not a config this host can take --
        ["CONF of no bytes"] = t => Refused(Start().Frame("CONF", []), 0, "byte 12", "CONF", "empty"),
        ["CONF not JSON"] = t => Refused(Start().Frame("CONF", "kernel=/boot/vmlinuz mem=128M"u8), 0, "byte 12", "CONF", "not the JSON"),
        ["CONF binary garbage"] = t => Refused(Start().Frame("CONF", new byte[] { 0xff, 0xfe, 0, 1, 2, 0x80 }), 0, "byte 12", "CONF"),
        ["CONF JSON null"] = t => Refused(Start().Frame("CONF", "null"u8), 0, "byte 12", "CONF", "empty"),
        ["CONF JSON array"] = t => Refused(Start().Frame("CONF", "[]"u8), 0, "byte 12", "CONF", "not the JSON"),
        ["CONF JSON string"] = t => Refused(Start().Frame("CONF", "\"a VM\""u8), 0, "byte 12", "CONF", "not the JSON"),
        ["CONF cut in half"] = t => Refused(Start().Frame("CONF", t.F.ConfigBytes[..(t.F.ConfigBytes.Length / 2)]), 0, "byte 12", "CONF", "not the JSON"),
        ["CONF with bytes after the JSON"] = t => Refused(Start().Frame("CONF", [.. t.F.ConfigBytes, .. "{}"u8]), 0, "byte 12", "CONF", "not the JSON"),
        ["CONF nested 10000 deep"] = t => Refused(Start().Frame("CONF", Encoding.ASCII.GetBytes("{\"Cmdline\":" + new string('[', 10000) + new string(']', 10000) + "}")), 0, "byte 12", "CONF", "Cmdline"),
        ["CONF with an unknown field"] = t => Refused(Start().Frame("CONF", t.Conf(c => c["Bogus"] = 1)), 0, "byte 12", "CONF", "Bogus"),
        ["CONF without KernelPath"] = t => Refused(Start().Frame("CONF", t.Conf(c => c.Remove("KernelPath"))), 0, "byte 12", "CONF", "KernelPath"),
        ["CONF KernelPath null"] = t => Refused(Start().Frame("CONF", t.Conf(c => c["KernelPath"] = null)), 0, "byte 12", "CONF", "KernelPath"),
        ["CONF MemoryBytes a string"] = t => Refused(Start().Frame("CONF", t.Conf(c => c["MemoryBytes"] = "lots")), 0, "byte 12", "CONF", "MemoryBytes"),
        ["CONF MemoryBytes -1"] = t => Refused(Start().Frame("CONF", t.Conf(c => c["MemoryBytes"] = -1)), 0, "byte 12", "CONF", "MemoryBytes"),
        ["CONF MemoryBytes 1.5"] = t => Refused(Start().Frame("CONF", t.Conf(c => c["MemoryBytes"] = 1.5)), 0, "byte 12", "CONF", "MemoryBytes"),
        ["CONF Vcpus true"] = t => Refused(Start().Frame("CONF", t.Conf(c => c["Vcpus"] = true)), 0, "byte 12", "CONF", "Vcpus"),
        ["CONF Transport unknown"] = t => Refused(Start().Frame("CONF", t.Conf(c => c["Transport"] = "Carrier pigeon")), 0, "byte 12", "CONF", "Transport"),
        ["CONF Disks an object"] = t => Refused(Start().Frame("CONF", t.Conf(c => c["Disks"] = new JsonObject())), 0, "byte 12", "CONF", "Disks"),
        ["CONF memory 0"] = t => Refused(Start().Frame("CONF", t.Conf(c => c["MemoryBytes"] = 0)), 0, "byte 12", "memory", "outside"),
        ["CONF memory 4 KiB"] = t => Refused(Start().Frame("CONF", t.Conf(c => c["MemoryBytes"] = 4096)), 0, "byte 12", "memory", "outside"),
        ["CONF memory 128 MiB + 1"] = t => Refused(Start().Frame("CONF", t.Conf(c => c["MemoryBytes"] = (128 << 20) + 1)), 0, "byte 12", "memory", "multiple of 4 KiB"),
        ["CONF memory 2^50"] = t => Refused(Start().Frame("CONF", t.Conf(c => c["MemoryBytes"] = 1UL << 50)), 0, "byte 12", "memory", "outside"),
        ["CONF memory 2^64-4096"] = t => Refused(Start().Frame("CONF", t.Conf(c => c["MemoryBytes"] = ulong.MaxValue - 4095)), 0, "byte 12", "memory", "outside"),
        ["CONF memory 1 TiB"] = t => Refused(Start().Frame("CONF", t.Conf(c => c["MemoryBytes"] = 1UL << 40)), 0, "byte 12", "memory", "this host's RAM"),
        ["CONF vcpus 0"] = t => Refused(Start().Frame("CONF", t.Conf(c => c["Vcpus"] = 0)), 0, "byte 12", "vcpus: 0 is outside"),
        ["CONF vcpus -1"] = t => Refused(Start().Frame("CONF", t.Conf(c => c["Vcpus"] = -1)), 0, "byte 12", "vcpus: -1 is outside"),
        ["CONF vcpus 255"] = t => Refused(Start().Frame("CONF", t.Conf(c => c["Vcpus"] = 255)), 0, "byte 12", "vcpus: 255 is outside"),
        ["CONF vcpus 2^31-1"] = t => Refused(Start().Frame("CONF", t.Conf(c => c["Vcpus"] = int.MaxValue)), 0, "byte 12", "vcpus: 2147483647 is outside"),
        ["CONF 17 virtio devices"] = t => Refused(Start().Frame("CONF", t.Conf(c => c["Disks"] = new JsonArray([.. Enumerable.Range(0, 17).Select(i => JsonNode.Parse($"{{\"Path\":\"/dev/null\",\"Id\":\"d{i}\"}}"))]))), 0, "byte 12", "virtio devices"),
        ["CONF a disk that does not exist"] = t => Refused(Start().Frame("CONF", t.Conf(c => c["Disks"] = JsonNode.Parse("[{\"Path\":\"/nonexistent/disk.img\"}]"))), 0, "byte 12", "disk", "/nonexistent/disk.img"),
        ["CONF a disk that is a directory"] = t => Refused(Start().Frame("CONF", t.Conf(c => c["Disks"] = JsonNode.Parse("[{\"Path\":\"/tmp\"}]"))), 0, "byte 12", "disk", "/tmp"),
        ["CONF a read-only disk that is a FIFO"] = t =>
        {
            string fifo = t.NewPath("fifo");
            Assert.Equal(0, MakeFifo(fifo, 0x180)); // not a mkfifo process: its pipes would outlive the case until a GC
            return Refused(Start().Frame("CONF", t.Conf(c => c["Disks"] = JsonNode.Parse($"[{{\"Path\":\"{fifo}\",\"ReadOnly\":true}}]"))), 0, "byte 12", "disk", "FIFO");
        },
        // The kernel is in the RAM the stream brings: a destination without the file takes the config
        // (as a restore does) and the stream then fails where it lies, here at a state that says otherwise.
        ["CONF a kernel that does not exist"] = t =>
        {
            var w = Start().Frame("CONF", t.Conf(c => c["KernelPath"] = "/nonexistent/vmlinux"));
            return Refused(t.WithPages(w).Frame("STAT", t.F.StateBytes), 1, "the state's config is not the config the stream began with");
        },

        // -- PAGE frames that are not whole pages inside RAM --
        ["PAGE of 0 bytes"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.FrameHeader("PAGE", 0), 1, $"byte {at}", "PAGE frame of 0 bytes", "whole 4 KiB pages"); },
        ["PAGE of an address only"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Frame("PAGE", new byte[8]), 1, $"byte {at}", "PAGE frame of 8 bytes"); },
        ["PAGE of one page without an address"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Frame("PAGE", new byte[4096]), 1, $"byte {at}", "PAGE frame of 4096 bytes"); },
        ["PAGE of 8 + 4095"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Frame("PAGE", new byte[8 + 4095]), 1, $"byte {at}", "PAGE frame of 4103 bytes"); },
        ["PAGE of 8 + 4097"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Frame("PAGE", new byte[8 + 4097]), 1, $"byte {at}", "PAGE frame of 4105 bytes"); },
        ["PAGE at 0x1001"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Page(0x1001, new byte[4096]), 1, $"byte {at}", "pages at 0x1001"); },
        ["PAGE at 0x800"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Page(0x800, new byte[4096]), 1, $"byte {at}", "pages at 0x800"); },
        ["PAGE just past RAM"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Page(128 << 20, new byte[4096]), 1, $"byte {at}", "pages at 0x8000000 (+0x1000)", "128 MiB of RAM"); },
        ["PAGE straddling RAM's end"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Page((128 << 20) - 4096, new byte[8192]), 1, $"byte {at}", "pages at 0x7fff000 (+0x2000)"); },
        ["PAGE in the PCI hole"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Page(3UL << 30, new byte[4096]), 1, $"byte {at}", "pages at 0xc0000000"); },
        ["PAGE at the top of the PCI hole"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Page((4UL << 30) - 4096, new byte[4096]), 1, $"byte {at}", "pages at 0xfffff000"); },
        ["PAGE at 4 GiB"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Page(4UL << 30, new byte[4096]), 1, $"byte {at}", "pages at 0x100000000"); },
        ["PAGE at 2^63"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Page(1UL << 63, new byte[4096]), 1, $"byte {at}", "pages at 0x8000000000000000"); },
        ["PAGE at 2^64-4096"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Page(ulong.MaxValue - 4095, new byte[4096]), 1, $"byte {at}", "pages at 0xfffffffffffff000"); },
        ["PAGE wrapping past 2^64"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Page(ulong.MaxValue - 4095, new byte[3 * 4096]), 1, $"byte {at}", "pages at 0xfffffffffffff000 (+0x3000)"); },
        ["PAGE cut in its address"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.FrameHeader("PAGE", 8 + 4096).Bytes([0, 0, 0]), 1, $"byte {at + 11}", "ended in the middle of a page address"); },
        ["PAGE cut mid-page"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.FrameHeader("PAGE", 8 + 8192).Bytes(new byte[8]).Bytes(new byte[5000]), 1, $"byte {at + 16 + 5000}", "ended in the middle of a run of pages"); },
        ["pages then a cut mid-page"] = t => { var w = t.WithPages(t.Configured()); long at = w.Length; return Refused(w.FrameHeader("PAGE", 8 + 4096).Bytes(new byte[8]).Bytes(new byte[1]), 1, $"byte {at + 17}", "ended in the middle of a run of pages"); },
        ["pages then EOF"] = t => { var w = t.WithPages(t.Configured()); long at = w.Length; return Refused(w, 1, $"byte {at}", "ended in the middle of a frame header"); },

        // -- STAT that is not this VM's state --
        ["STAT of no bytes"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Frame("STAT", []), 1, $"byte {at}", "STAT", "not a Vireo snapshot"); },
        ["STAT garbage"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Frame("STAT", Enumerable.Range(0, 3000).Select(i => (byte)(i * 7)).ToArray()), 1, $"byte {at}", "STAT", "not a Vireo snapshot"); },
        ["STAT a snapshot's header only"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Frame("STAT", t.F.StateBytes[..12]), 1, $"byte {at}", "STAT", "truncated"); },
        ["STAT cut in half"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Frame("STAT", t.F.StateBytes[..(t.F.StateBytes.Length / 2)]), 1, $"byte {at}", "STAT", "truncated"); },
        ["STAT with a byte after END"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Frame("STAT", [.. t.F.StateBytes, 0]), 1, $"byte {at}", "STAT", "follow the END section"); },
        ["STAT version 2"] = t => { var w = t.Configured(); long at = w.Length; var s = (byte[])t.F.StateBytes.Clone(); s[8] = 2; return Refused(w.Frame("STAT", s), 1, $"byte {at}", "STAT", "version 2"); },
        ["STAT longer than the stream"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.FrameHeader("STAT", (uint)t.F.StateBytes.Length + 1).Bytes(t.F.StateBytes), 1, $"byte {at + 8 + t.F.StateBytes.Length}", "ended in the middle of the machine's state"); },
        // KVM refuses a state that decodes and fits (CR4 all ones): the STAT was answered OKAY before it
        // was applied, so the refusal is the last word after the commit, and the source takes its VM back.
        ["STAT that KVM refuses, committed"] = t =>
        {
            var w = t.WithPages(t.Configured());
            long at = w.Length;
            var v0 = t.F.State.Vcpus[0];
            var refused = t.F.State with { Vcpus = [v0 with { Sregs = v0.Sregs with { cr4 = ulong.MaxValue } }, .. t.F.State.Vcpus[1..]] };
            return Refused(w.Frame("STAT", t.Stat(refused, FullLayout(128 << 20))).Frame("CMIT", []), 2, $"byte {at}", "vcpu 0: KVM refused the saved state");
        },
        ["STAT of 256 MiB for a CONF of 128 MiB"] = t =>
        {
            var w = t.Configured();
            long at = w.Length;
            var big = t.F.State with { Config = t.F.Config with { MemoryBytes = 256 << 20 } };
            return Refused(w.Frame("STAT", t.Stat(big, FullLayout(256 << 20))), 1, $"byte {at}", "268435456 bytes of RAM", "134217728");
        },
        ["STAT of 128 MiB for a CONF of 64 MiB"] = t =>
        {
            var w = Start().Frame("CONF", t.Conf(c => c["MemoryBytes"] = 64 << 20));
            long at = w.Length;
            return Refused(w.Frame("STAT", t.F.StateBytes), 1, $"byte {at}", "134217728 bytes of RAM", "67108864");
        },
        ["STAT whose layout lies about its config's RAM"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Frame("STAT", t.Stat(t.F.State, FullLayout(256 << 20))), 1, $"byte {at}", "STAT", "268435456"); },
        ["STAT of a diff snapshot"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Frame("STAT", t.Stat(t.F.State, FullLayout(128 << 20) with { Kind = SnapshotKind.Diff })), 1, $"byte {at}", "a diff snapshot's", "full one"); },
        ["STAT whose config has another cmdline"] = t =>
        {
            var w = t.WithPages(t.Configured());
            long at = w.Length;
            var other = t.F.State with { Config = t.F.Config with { Cmdline = "console=ttyS0 init=/bin/sh" } };
            return Refused(w.Frame("STAT", t.Stat(other, FullLayout(128 << 20))), 1, $"byte {at}", "the state's config is not the config the stream began with");
        },
        ["STAT whose config has no debug exit"] = t =>
        {
            var w = t.Configured();
            long at = w.Length;
            var other = t.F.State with { Config = t.F.Config with { DebugExit = false } };
            return Refused(w.Frame("STAT", t.Stat(other, FullLayout(128 << 20))), 1, $"byte {at}", "the state's config is not the config");
        },
        ["STAT for a CONF with a field reordered"] = t =>
        {
            // The same config in other words: the state must carry the bytes the stream began with.
            var w = Start().Frame("CONF", t.Conf(c => { var k = c["KernelPath"]; c.Remove("KernelPath"); c["KernelPath"] = k; }));
            long at = w.Length;
            return Refused(w.Frame("STAT", t.F.StateBytes), 1, $"byte {at}", "the state's config is not the config");
        },
        ["STAT flipped in its magic"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.Frame("STAT", Flipped(t.F.StateBytes, 3)), 1, $"byte {at}", "STAT", "not a Vireo snapshot"); },
        ["STAT flipped in section 0's payload"] = t => t.StatFlip(0, payload: true),
        ["STAT flipped in section 1's payload"] = t => t.StatFlip(1, payload: true),
        ["STAT flipped in section 2's payload"] = t => t.StatFlip(2, payload: true),
        ["STAT flipped in section 3's payload"] = t => t.StatFlip(3, payload: true),
        ["STAT flipped in section 4's payload"] = t => t.StatFlip(4, payload: true),
        ["STAT flipped in the last byte of section 3"] = t => t.StatFlip(3, payload: true, last: true),
        ["STAT flipped in section 0's CRC"] = t => t.StatFlip(0, payload: false),
        ["STAT flipped in section 5's CRC"] = t => t.StatFlip(5, payload: false),
        ["STAT flipped in section 2's length"] = t =>
        {
            var w = t.Configured();
            long at = w.Length;
            var s = Sections(t.F.StateBytes)[2];
            return Refused(w.Frame("STAT", Flipped(t.F.StateBytes, s.Offset + 9, 0x01)), 1, $"byte {at}", "STAT", $"at byte {s.Offset}");
        },

        // -- MEMF: the memory handed over by descriptor --
        ["MEMF without a descriptor"] = t => { var w = t.LocallyConfigured(); long at = w.Length; return Refused(w.Frame("MEMF", [1]), 1, $"byte {at}", "without a file descriptor"); },
        ["MEMF of 0 bytes"] = t => { var w = t.LocallyConfigured(); long at = w.Length; return Refused(w.FrameHeader("MEMF", 0).Fd(MemfdOf("mig-memf0", 128 << 20)), 1, $"byte {at}", "MEMF frame of 0 bytes", "one byte"); },
        ["MEMF then EOF"] = t => { var w = t.LocallyConfigured(); long at = w.Length; return Refused(w.FrameHeader("MEMF", 1), 1, $"byte {at + 8}", "ended in the middle of the memory frame"); },
        ["MEMF of a file too small"] = t => { var w = t.LocallyConfigured(); long at = w.Length; return Refused(w.FrameHeader("MEMF", 1).Fd(FileOf(t.NewPath("small"), 4096)), 1, $"byte {at}", "4096 bytes", "134217728 bytes"); },
        ["MEMF of a file too large"] = t => { var w = t.LocallyConfigured(); long at = w.Length; return Refused(w.FrameHeader("MEMF", 1).Fd(FileOf(t.NewPath("large"), 256 << 20)), 1, $"byte {at}", "268435456 bytes", "134217728 bytes"); },
        ["MEMF of an empty memfd"] = t => { var w = t.LocallyConfigured(); long at = w.Length; return Refused(w.FrameHeader("MEMF", 1).Fd(MemfdOf("mig-empty", 0)), 1, $"byte {at}", "is 0 bytes"); },
        ["MEMF of /dev/null"] = t => { var w = t.LocallyConfigured(); long at = w.Length; return Refused(w.FrameHeader("MEMF", 1).Fd(() => File.OpenHandle("/dev/null")), 1, $"byte {at}", "a character device"); },
        ["MEMF of a directory"] = t => { var w = t.LocallyConfigured(); long at = w.Length; return Refused(w.FrameHeader("MEMF", 1).Fd(() => new FileDescriptor(Check.Io(Libc.Open(t.F.Dir, Libc.O_RDONLY | Libc.O_CLOEXEC, 0), "open"))), 1, $"byte {at}", "a directory"); },
        ["MEMF of a read-only file of the right size"] = t => { var w = t.LocallyConfigured(); long at = w.Length; return Refused(w.FrameHeader("MEMF", 1).Fd(FileOf(t.NewPath("readonly"), 128 << 20, FileAccess.Read)), 1, $"byte {at}", "the memory handed over cannot be mapped"); },
        ["PAGE in a local migration"] = t => { var w = t.LocallyConfigured(); long at = w.Length; return Refused(w.Page(0, new byte[4096]), 1, $"byte {at}", "pages in a local migration"); },
        ["MEMF in a migration that is not local"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.FrameHeader("MEMF", 1).Fd(MemfdOf("mig-not-local", 128 << 20)), 1, $"byte {at}", "not local"); },
        ["TAPF in a migration that is not local"] = t => { var w = t.Configured(); long at = w.Length; return Refused(w.FrameHeader("TAPF", 1).Fd(MemfdOf("mig-tap-not-local", 4096)), 1, $"byte {at}", "not local"); },
        ["TAPF before the memory"] = t => { var w = t.LocallyConfigured(); long at = w.Length; return Refused(w.FrameHeader("TAPF", 1).Fd(MemfdOf("mig-tap-first", 4096)), 1, $"byte {at}", "before the memory"); },
        ["TAPF beyond the config's TAPs"] = t => { var w = t.LocallyConfigured().FrameHeader("MEMF", 1).Fd(MemfdOf("mig-tap-beyond", 128 << 20)); long at = w.Length; return Refused(w.FrameHeader("TAPF", 1).Fd(MemfdOf("mig-tap-beyond2", 4096)), 2, $"byte {at}", "beyond the config's TAPs"); },
        ["MEMF twice"] = t => { var w = t.LocallyConfigured().FrameHeader("MEMF", 1).Fd(MemfdOf("mig-first", 128 << 20)); long at = w.Length; return Refused(w.FrameHeader("MEMF", 1).Fd(MemfdOf("mig-second", 128 << 20)), 2, $"byte {at}", "a second MEMF frame"); },
        ["PAGE after MEMF"] = t => { var w = t.LocallyConfigured().FrameHeader("MEMF", 1).Fd(MemfdOf("mig-then-page", 128 << 20)); long at = w.Length; return Refused(w.Page(0, new byte[4096]), 2, $"byte {at}", "pages in a local migration"); },
        ["MEMF then EOF before STAT"] = t => { var w = t.LocallyConfigured().FrameHeader("MEMF", 1).Fd(MemfdOf("mig-then-eof", 128 << 20)); long at = w.Length; return Refused(w, 2, $"byte {at}", "ended in the middle of a frame header"); },
        ["a descriptor on the stream's first byte"] = t =>
        {
            // Read as a plain byte, what came with it is dropped by the kernel, never kept.
            var w = new Wire().Fd(FileOf(t.NewPath("stray"), 128 << 20), (byte)'V').Bytes("IREOMIG"u8).Bytes([3, 0, 0, 0]).Frame("CONF", t.F.ConfigBytes);
            long at = w.Length;
            return Refused(w.Frame("????", []), 1, $"byte {at}", "unknown kind '????'");
        },

        // -- a valid stream that does not commit --
        ["STAT then EOF"] = t => { var w = t.WithPages(t.Configured()).Frame("STAT", t.F.StateBytes); long at = w.Length; return Refused(w, 2, $"byte {at}", "ended in the middle of a frame header"); },
        ["STAT then half a CMIT"] = t => { var w = t.WithPages(t.Configured()).Frame("STAT", t.F.StateBytes); long at = w.Length; return Refused(w.Bytes("CMIT"u8), 2, $"byte {at + 4}", "ended in the middle of a frame header"); },
        ["STAT then PAGE"] = t => { var w = t.WithPages(t.Configured()).Frame("STAT", t.F.StateBytes); long at = w.Length; return Refused(w.Page(0, new byte[4096]), 2, $"byte {at}", "a PAGE frame where the commit belongs"); },
        ["STAT then STAT"] = t => { var w = t.WithPages(t.Configured()).Frame("STAT", t.F.StateBytes); long at = w.Length; return Refused(w.Frame("STAT", t.F.StateBytes), 2, $"byte {at}", "a STAT frame where the commit belongs"); },
        ["STAT then FAIL"] = t => { var w = t.WithPages(t.Configured()).Frame("STAT", t.F.StateBytes); long at = w.Length; return Refused(w.Frame("FAIL", "source gave up"u8), 2, $"byte {at}", "FAIL frame where the commit belongs"); },
        ["STAT then an unknown tag"] = t => { var w = t.WithPages(t.Configured()).Frame("STAT", t.F.StateBytes); long at = w.Length; return Refused(w.Frame("CMIX", []), 2, $"byte {at}", "unknown kind 'CMIX'"); },
        ["STAT then CMIT with a payload"] = t => { var w = t.WithPages(t.Configured()).Frame("STAT", t.F.StateBytes); long at = w.Length; return Refused(w.Frame("CMIT", [1]), 2, $"byte {at}", "CMIT frame of 1 bytes"); },
        ["STAT over a handed-over memfd then EOF"] = t =>
        {
            var w = t.LocallyConfigured().FrameHeader("MEMF", 1).Fd(MemfdOf("mig-stat-eof", 128 << 20)).Frame("STAT", t.F.StateBytes);
            long at = w.Length;
            return Refused(w, 3, $"byte {at}", "ended in the middle of a frame header");
        },
    };

    private Case StatForged(int seed)
    {
        var rng = new Random(20261203 + seed);
        var bytes = (byte[])fixture.StateBytes.Clone();
        var sections = Sections(bytes).Where(x => x.Length > 0).ToList();
        var (_, offset, length) = sections[rng.Next(sections.Count)];
        bytes[offset + 12 + rng.Next(length)] ^= (byte)(1 << rng.Next(8));
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(offset + 4), Crc32.HashToUInt32(bytes.AsSpan(offset + 12, length)));
        var w = WithPages(Configured());
        return Refused(w.Frame("STAT", bytes), -1, "byte ");
    }

    private Case StatFlip(int section, bool payload, bool last = false)
    {
        var w = Configured();
        long at = w.Length;
        var s = Sections(fixture.StateBytes)[section];
        int offset = payload ? s.Offset + 12 + (last ? s.Length - 1 : s.Length / 2) : s.Offset + 4;
        return Refused(w.Frame("STAT", Flipped(fixture.StateBytes, offset)), 1, $"byte {at}", "STAT", $"section {s.Tag} at byte {s.Offset}", "CRC");
    }

    // ---- the harness ----

    /// <summary>
    /// <see cref="Held"/> once it stops moving (or has come to <paramref name="expected"/>), 2 s at most:
    /// a scratch VM that found the saveable MSRs is closed on a thread of its own, 15-25 ms after
    /// the save that made it, and its two KVM descriptors must not be counted to one side only.
    /// </summary>
    private (int Kvm, int Memfds, int RamMaps) Settled((int, int, int)? expected = null)
    {
        var deadline = DateTime.UtcNow.AddSeconds(2);
        var now = Held();
        while (DateTime.UtcNow < deadline && now != expected)
        {
            Thread.Sleep(50);
            var next = Held();
            if (next == now && expected is null)
            {
                break;
            }
            now = next;
        }
        return now;
    }

    /// <summary>What must come back to where it was after each stream: KVM's descriptors, memfds, and mappings the size of the guest's RAM.</summary>
    private (int Kvm, int Memfds, int RamMaps) Held()
    {
        int kvm = 0, memfds = 0;
        foreach (var target in Descriptors())
        {
            if (target.StartsWith("anon_inode:kvm", StringComparison.Ordinal) || target == "/dev/kvm")
            {
                kvm++;
            }
            else if (target.StartsWith("/memfd:", StringComparison.Ordinal))
            {
                memfds++;
            }
        }
        int maps = 0;
        foreach (var line in File.ReadLines("/proc/self/maps"))
        {
            var range = line[..line.IndexOf(' ')].Split('-');
            if (Convert.ToUInt64(range[1], 16) - Convert.ToUInt64(range[0], 16) == fixture.Config.MemoryBytes)
            {
                maps++;
            }
        }
        return (kvm, memfds, maps);
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "mkfifo", SetLastError = true)]
    private static extern int MakeFifo(string path, uint mode);

    private static List<string> Descriptors()
    {
        var list = new List<string>();
        foreach (var fd in Directory.GetFiles("/proc/self/fd"))
        {
            try
            {
                // The runtime's assemblies and symbols are mapped once a process, when first needed: not the receiver's.
                if (new FileInfo(fd).LinkTarget is { } target && !target.EndsWith(".dll", StringComparison.Ordinal) && !target.EndsWith(".pdb", StringComparison.Ordinal))
                {
                    list.Add(target);
                }
                // else closed while we looked (the enumeration's own, or another thread's)
            }
            catch (IOException)
            {
                // closed while we looked
            }
        }
        return list;
    }

    /// <summary>A listener, a receiver on a thread of its own, and a raw client writing <paramref name="wire"/> then closing its side.</summary>
    private static (Task<(Machine, VmFiles)> Received, List<(string Tag, byte[] Payload)> Replies, string? WriteStopped) Feed(
        Wire wire, string dir, Action<byte> serialOut, Func<Task<(Machine, VmFiles)>, bool>? keepRunning = null)
    {
        string path = Path.Combine(dir, "m.sock");
        using var listener = MigrationUrl.Parse("u", "unix:" + path).Listen();
        var received = Task.Factory.StartNew(() => new MigrationReceiver(serialOut).Receive(listener), TaskCreationOptions.LongRunning);
        var replies = new List<(string, byte[])>();
        string? stopped;
        using (var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            client.Connect(new UnixDomainSocketEndPoint(path));
            client.ReceiveTimeout = client.SendTimeout = 30_000; // a receiver that neither reads nor closes fails the case, not the run
            var reading = Task.Factory.StartNew(() => ReadReplies(client, replies), TaskCreationOptions.LongRunning);
            stopped = wire.WriteTo(client);
            try
            {
                client.Shutdown(SocketShutdown.Send); // the end of the stream: the receiver sees EOF, never waits 60 s
            }
            catch (SocketException)
            {
                // already gone
            }
            Assert.True(((IAsyncResult)received).AsyncWaitHandle.WaitOne(TimeSpan.FromSeconds(30)), "the receiver hangs on this stream");
            Assert.True(reading.Wait(TimeSpan.FromSeconds(30)), "the receiver never closed the connection");
        }
        return (received, replies, stopped);
    }

    private static void ReadReplies(Socket s, List<(string, byte[])> replies)
    {
        try
        {
            while (true)
            {
                var header = new byte[8];
                if (!ReadFully(s, header))
                {
                    return;
                }
                var payload = new byte[Math.Min(BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(4)), 1u << 16)];
                if (!ReadFully(s, payload))
                {
                    replies.Add(("(cut)", payload));
                    return;
                }
                lock (replies)
                {
                    replies.Add((Encoding.Latin1.GetString(header, 0, 4), payload));
                }
            }
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
        {
            // the receiver closed with our bytes unread: what it sent before is read already
        }
    }

    private static bool ReadFully(Socket s, byte[] into)
    {
        for (int n = 0; n < into.Length;)
        {
            int got = s.Receive(into, n, into.Length - n, SocketFlags.None);
            if (got == 0)
            {
                return false;
            }
            n += got;
        }
        return true;
    }

    /// <summary>A message for a user: no exception type, no .NET type name, no stack, no deserializer's internals.</summary>
    private static void AssertWords(string message)
    {
        Assert.False(string.IsNullOrWhiteSpace(message));
        foreach (var internals in new[] { "System.", "Vireo.", "Exception", "   at ", "JsonTypeInfo", "$.", "isFinalBlock" })
        {
            Assert.DoesNotContain(internals, message, StringComparison.Ordinal);
        }
    }

    [KvmTheory]
    [MemberData(nameof(Names))]
    public void A_a_hostile_stream_is_refused_by_its_byte_and_reason_and_leaves_nothing(string name)
    {
        var c = CaseTable[name](this);
        var before = Settled();
        var descriptors = Descriptors();
        var (received, replies, stopped) = Feed(c.Wire, TempDirectory.Create("vireo-migcase"), _ => { });
        if (received.IsCompletedSuccessfully)
        {
            var (m, f) = received.Result;
            m.Dispose();
            f.Dispose();
            Assert.Fail($"{name}: the receiver took it");
        }
        var e = received.Exception!.InnerException!;
        if (e is not MigrationException)
        {
            Assert.Fail($"{name}: {e.GetType().Name} escaped the receiver: {e}"); // formatted only then: a stack trace loads symbols, descriptors the check below counts
        }
        log.WriteLine(e.Message);
        if (stopped is not null)
        {
            log.WriteLine($"(the write stopped: {stopped})");
        }
        AssertWords(e.Message);
        foreach (var expected in c.Expect)
        {
            Assert.Contains(expected, e.Message, StringComparison.Ordinal);
        }

        // The source hears why: OKAY for each step taken, then FAIL and the same reason.
        var tags = replies.Select(r => r.Tag).ToList();
        int okays = c.Okays >= 0 ? c.Okays : Math.Clamp(tags.Count - 1, 1, 2);
        Assert.Equal([.. Enumerable.Repeat("OKAY", okays), "FAIL"], tags);
        Assert.All(replies.SkipLast(1), r => Assert.Empty(r.Payload));
        Assert.Equal(e.Message, Encoding.UTF8.GetString(replies[^1].Payload));

        Assert.Equal(before, Settled(before));
        var kept = Descriptors().Where(d => d.StartsWith(fixture.Dir, StringComparison.Ordinal) || d.StartsWith("/memfd:mig-", StringComparison.Ordinal)).ToList();
        Assert.True(kept.Count == 0, $"{name}: the receiver kept what the stream passed it: {string.Join(", ", kept)}");
        var after = Descriptors();
        var more = after.GroupBy(d => d).Select(g => (g.Key, Count: g.Count() - descriptors.Count(d => d == g.Key))).Where(g => g.Count > 0).ToList();
        Assert.True(more.Count == 0, $"{name}: more descriptors open after it than before: {string.Join(", ", more.Select(m => $"{m.Count} x '{m.Key}'"))}");
    }

    /// <summary>Receives <paramref name="wire"/>, which must succeed, runs the guest and talks to it.</summary>
    private void ReceiveAndRun(Wire wire)
    {
        var output = new StringBuilder();
        var (received, replies, stopped) = Feed(wire, TempDirectory.Create("vireo-migok"), b =>
        {
            lock (output)
            {
                output.Append((char)b);
            }
        });
        if (!received.IsCompletedSuccessfully)
        {
            Assert.Fail($"the valid stream was refused: {received.Exception?.InnerException}");
        }
        Assert.Null(stopped);
        var (machine, files) = received.Result;
        using (files)
        using (machine)
        {
            Assert.All(replies, r => Assert.Equal("OKAY", r.Tag));
            var run = Task.Factory.StartNew(() => machine.Run(TimeSpan.FromSeconds(60)), TaskCreationOptions.LongRunning);
            machine.EnqueueConsoleInput("c\n"u8);
            SnapshotFileTests.WaitFor(output, "count=2", run); // the counter the source had, carried over
            machine.EnqueueConsoleInput("q\n"u8);
            Assert.True(run.Wait(TimeSpan.FromSeconds(30)), "the received guest does not stop");
            Assert.Equal(StopReason.DebugExit, run.Result.Reason);
        }
    }

    [KvmFact]
    public void Z1_a_valid_stream_of_pages_is_received_and_its_guest_answers()
    {
        ReceiveAndRun(WithPages(Configured()).Frame("STAT", fixture.StateBytes).Frame("CMIT", []));
    }

    [KvmFact]
    public void Z2_a_valid_stream_handing_over_a_memfd_is_received_and_its_guest_answers()
    {
        var pages = fixture.Pages;
        Func<SafeHandle> ram = () =>
        {
            var fd = (FileDescriptor)MemfdOf("mig-valid", (long)fixture.Config.MemoryBytes)();
            foreach (var (gpa, bytes) in pages)
            {
                Libc.PwriteFully(fd.Fd, bytes, (long)gpa); // one region below 3 GiB: guest address = file offset
            }
            return fd;
        };
        ReceiveAndRun(LocallyConfigured().FrameHeader("MEMF", 1).Fd(ram).Frame("STAT", fixture.StateBytes).Frame("CMIT", []));
    }

    [KvmFact]
    public void Z3_after_the_whole_table_the_process_holds_no_more_descriptors_than_before_it()
    {
        // A pass over the table must not leave one descriptor more than it found. A leaked handle
        // closes only when the GC finalizes it: what earlier tests left is finalized first, and none is
        // forced during the pass.
        // Two passes, counted after each: what this process opens once (the runtime's signal
        // pipe on a first machine's run, a debug symbols file for a first stack trace, a helper
        // process's pipes until the GC finalizes it) is there after the first; a leak grows with
        // every pass. None is forced closed during a pass.
        int Pass()
        {
            foreach (var name in CaseTable.Keys)
            {
                var c = CaseTable[name](this);
                var (received, _, _) = Feed(c.Wire, TempDirectory.Create("vireo-migcase"), _ => { });
                Assert.False(received.IsCompletedSuccessfully, name);
            }
            ReceiveAndRun(WithPages(Configured()).Frame("STAT", fixture.StateBytes).Frame("CMIT", []));
            return Descriptors().Count;
        }
        GC.Collect();
        GC.WaitForPendingFinalizers();
        int first = Pass();
        GC.Collect();
        GC.WaitForPendingFinalizers();
        var before = Descriptors();
        first = Math.Min(first, before.Count);
        int second = Pass();
        // What other threads close on their own (a scratch VM torn down off the save path) is given a moment.
        for (int i = 0; i < 20 && second > first; i++)
        {
            Thread.Sleep(100);
            second = Descriptors().Count;
        }
        var after = Descriptors();
        foreach (var d in before)
        {
            after.Remove(d);
        }
        Assert.True(second <= first, $"{first} descriptors after a pass over the table, {second} after another; new: {string.Join(", ", after)}");
    }
}
