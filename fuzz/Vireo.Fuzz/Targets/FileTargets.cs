using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text;
using System.Text.Json;
using Vireo.Api;
using Vireo.Api.Definitions;
using Vireo.Boot;
using Vireo.Boot.Tests;
using Vireo.Cli.Import;
using Vireo.Memory;
using Vireo.Virtio.Block;
using Vireo.Virtio.Net;
using Vireo.Virtio.Vsock;
using Vireo.Vmm;
using Vireo.Vmm.Migration;
using Vireo.Vmm.Snapshot;

namespace Vireo.Fuzz.Targets;

/// <summary>A refusal, printed when replaying with VIREO_FUZZ_VERBOSE=1 (never while fuzzing: it would slow every run).</summary>
internal static class Refusal
{
    public static bool Verbose { get; set; } = Environment.GetEnvironmentVariable("VIREO_FUZZ_VERBOSE") == "1";

    public static void Note(Exception e)
    {
        if (Verbose)
        {
            Console.Error.WriteLine($"  refused: {e.Message}");
        }
    }
}

/// <summary>Where `vireo-fuzz seeds DIR` writes, so that a target can build its seeds from another's.</summary>
internal static class SeedDir
{
    public static string? Path { get; set; }
}

/// <summary>Kernels: the ELF loader (ELF64 and ELF32, PT_LOAD, the PVH note) and then the load into 32 MiB of guest memory.</summary>
internal sealed class ElfTarget : FuzzTarget
{
    public override string Name => "elf";
    public override string Covers => "ELF kernels: headers, program headers, the PVH note, the load into guest memory";

    [ThreadStatic]
    private static GuestMemory? _memory;

    internal static GuestMemory Ram => _memory ??= new GuestMemory([GuestRegion.Allocate(new GuestAddress(0), 32 << 20)]);

    internal static void Load(ReadOnlySpan<byte> input)
    {
        try
        {
            var image = KernelImage.Parse(input);
            byte[] kernel = input.ToArray();
            BootLoader.Load(Ram, image, new Vireo.Boot.BootSource(kernel, null, "console=ttyS0", 1));
        }
        catch (BootException e)
        {
            Refusal.Note(e); // refused, in words: what the loader is for
        }
    }

    public override void Run(ReadOnlySpan<byte> input) => Load(input);

    public override IEnumerable<(string, byte[])> Seeds()
    {
        yield return ("pvh64", ImageBuilder.SimplePvh());
        yield return ("elf32-pvh", ImageBuilder.Elf(false, 0x100000, [new(0x100000, ImageBuilder.Fill(0x1000, 0x90), 0x2000)], pvhEntry: 0x100000));
        yield return ("elf64-two-segments", ImageBuilder.Elf(true, 0x100000, [new(0x100000, ImageBuilder.Fill(0x800, 0x90), 0x1000), new(0x200000, ImageBuilder.Fill(0x100, 1), 0x4000)], pvhEntry: 0x100000));
    }
}

/// <summary>Linux bzImages: the setup header (boot protocol 2.x), then the load with its zero page and command line.</summary>
internal sealed class BzImageTarget : FuzzTarget
{
    public override string Name => "bzimage";
    public override string Covers => "Linux bzImage: the setup header, protocol versions, setup sectors, init size, the load";

    public override void Run(ReadOnlySpan<byte> input) => ElfTarget.Load(input);

    public override IEnumerable<(string, byte[])> Seeds()
    {
        yield return ("v2.15", ImageBuilder.BzImage(0x2000));
        yield return ("v2.06", ImageBuilder.BzImage(0x2000, version: 0x0206));
        yield return ("v2.12-32bit", ImageBuilder.BzImage(0x1000, version: 0x020c, kernel64: false));
    }
}

/// <summary>VM definitions in YAML and JSON: the parser, the schema, the reader's own checks.</summary>
internal sealed class DefinitionTarget : FuzzTarget
{
    public override string Name => "definition";
    public override string Covers => "VM definitions (YAML and JSON): YamlDotNet, the JSON Schema, the reader's checks";

    public override void Run(ReadOnlySpan<byte> input)
    {
        var result = DefinitionReader.Parse(Encoding.UTF8.GetString(input));
        if (result.Definition is not null)
        {
            // What the daemon writes back (vireo edit) must read again as the same definition.
            var again = DefinitionReader.Parse(DefinitionReader.ToYaml(result.Definition));
            if (again.Definition is null)
            {
                throw new InvalidOperationException($"a definition's own YAML does not read back: {again.ErrorText}");
            }
        }
    }

    public override IEnumerable<(string, byte[])> Seeds()
    {
        yield return ("minimal.yaml", "name: web\nkernel: /var/lib/vireo/images/vmlinuz\nmemory_mib: 256\n"u8.ToArray());
        yield return ("full.yaml", """
            name: db
            kernel: /images/vmlinuz
            initrd: /images/initrd.img
            cmdline: console=ttyS0 root=/dev/vda
            memory_mib: 1024
            vcpus: 2
            disks:
              - path: /images/db.ext4
                read_only: false
              - path: /images/seed.iso
                read_only: true
            nics:
              - tap: tap-db
                mac: 02:00:00:00:00:01
            vsock:
              cid: 5
            """u8.ToArray());
        yield return ("minimal.json", """{"name": "web", "kernel": "/images/vmlinuz", "memory_mib": 64, "vcpus": 1}"""u8.ToArray());
        yield return ("anchors.yaml", "name: &n web\nkernel: *n\nmemory_mib: 0x40\nvcpus: !!int 2\n"u8.ToArray());
    }
}

/// <summary>xl.cfg files (Xen's domain configuration) through `vireo import xl`.</summary>
internal sealed class XlTarget : FuzzTarget
{
    public override string Name => "xl-cfg";
    public override string Covers => "xl.cfg: Xen's configuration syntax (strings, numbers, lists, comments) and its conversion";

    public override void Run(ReadOnlySpan<byte> input) => XlImport.Convert(Encoding.UTF8.GetString(input), "/images");

    public override IEnumerable<(string, byte[])> Seeds()
    {
        yield return ("pv.cfg", """
            name = "db"
            memory = 512
            maxmem = 1024
            vcpus = 2
            kernel = "/images/vmlinuz"
            ramdisk = "/images/initrd.img"
            extra = "console=hvc0 root=/dev/xvda1"
            disk = [ 'format=raw, vdev=xvda, access=rw, target=/images/db.img', 'phy:/dev/vg/data,xvdb,r' ]
            vif = [ 'mac=00:16:3e:00:00:01,bridge=xenbr0' ]
            # a comment
            on_crash = 'restart'
            """u8.ToArray());
        yield return ("minimal.cfg", "name='a'\nmemory=64\nkernel='k'\n"u8.ToArray());
    }
}

/// <summary>Request bodies: the input's first byte picks the body's type, the rest is the body.</summary>
internal abstract class BodyTarget : FuzzTarget
{
    /// <summary>Each type's reader, as the API's handler calls it, and a valid body of that type.</summary>
    protected abstract (Func<byte[], string?> Read, string Example)[] Bodies { get; }

    public override void Run(ReadOnlySpan<byte> input)
    {
        if (input.Length > 0)
        {
            var bodies = Bodies;
            bodies[input[0] % bodies.Length].Read(input[1..].ToArray());
        }
    }

    public override IEnumerable<(string, byte[])> Seeds() =>
        Bodies.Select((b, i) => ($"body-{i}", (byte[])[(byte)i, .. Encoding.UTF8.GetBytes(b.Example)]));
}

/// <summary>vireo-vmm's request bodies (Firecracker's shapes).</summary>
internal sealed class VmmBodyTarget : BodyTarget
{
    private static readonly (Func<byte[], string?>, string)[] Known =
    [
        (b => BodyReader.TryRead(b, VmmJson.Default.BootSource, "boot-source", out _), """{"kernel_image_path": "/images/vmlinux", "boot_args": "console=ttyS0", "initrd_path": null}"""),
        (b => BodyReader.TryRead(b, VmmJson.Default.MachineConfig, "machine-config", out _), """{"vcpu_count": 2, "mem_size_mib": 256, "smt": false}"""),
        (b => BodyReader.TryRead(b, VmmJson.Default.Drive, "drive", out _), """{"drive_id": "rootfs", "path_on_host": "/images/disk.ext4", "is_read_only": false, "direct": false}"""),
        (b => BodyReader.TryRead(b, VmmJson.Default.NetworkInterface, "network-interface", out _), """{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "02:00:00:00:00:01"}"""),
        (b => BodyReader.TryRead(b, VmmJson.Default.Vsock, "vsock", out _), """{"guest_cid": 3, "uds_path": "/tmp/v.sock"}"""),
        (b => BodyReader.TryRead(b, VmmJson.Default.InstanceAction, "actions", out _), """{"action_type": "InstanceStart"}"""),
        (b => BodyReader.TryRead(b, VmmJson.Default.VmStatePatch, "vm", out _), """{"state": "Paused"}"""),
        (b => BodyReader.TryRead(b, VmmJson.Default.SnapshotCreateParams, "snapshot/create", out _), """{"snapshot_type": "Full", "snapshot_path": "/tmp/vm.snap", "mem_file_path": "/tmp/vm.mem"}"""),
        (b => BodyReader.TryRead(b, VmmJson.Default.SnapshotLoadParams, "snapshot/load", out _), """{"snapshot_path": "/tmp/vm.snap", "mem_backend": {"backend_type": "File", "backend_path": "/tmp/vm.mem"}, "resume_vm": true}"""),
        (b => BodyReader.TryRead(b, VmmJson.Default.MigrationReceiveParams, "migration/receive", out _), """{"receiver_url": "unix:/tmp/mig.sock"}"""),
        (b => BodyReader.TryRead(b, VmmJson.Default.MigrationSendParams, "migration/send", out _), """{"destination_url": "unix:/tmp/mig.sock", "downtime_ms": 300}"""),
    ];

    public override string Name => "vmm-api";
    public override string Covers => "vireo-vmm's API bodies: boot-source, machine-config, drives, network, vsock, actions, snapshots, migration";
    protected override (Func<byte[], string?> Read, string Example)[] Bodies => Known;
}

/// <summary>vireod's request bodies (all but a definition, which <see cref="DefinitionTarget"/> covers).</summary>
internal sealed class DaemonBodyTarget : BodyTarget
{
    private static readonly (Func<byte[], string?>, string)[] Known =
    [
        (b => BodyReader.TryRead(b, DaemonJson.Default.ShutdownRequest, "shutdown", out _), """{"timeout_seconds": 30}"""),
        (b => BodyReader.TryRead(b, DaemonJson.Default.RenameRequest, "rename", out _), """{"new_name": "web2"}"""),
        (b => BodyReader.TryRead(b, DaemonJson.Default.SaveRequest, "save", out _), """{"file": "/var/lib/vireo/images/web.save"}"""),
        (b => BodyReader.TryRead(b, DaemonJson.Default.SnapshotRequest, "snapshot", out _), """{"name": "before-upgrade"}"""),
        (b => BodyReader.TryRead(b, DaemonJson.Default.MigrateRequest, "migrate", out _), """{"destination": "unix:/run/vireo-b/vireod.sock", "downtime_ms": 300, "timeout_seconds": 60, "force": false}"""),
        (b => BodyReader.TryRead(b, DaemonJson.Default.IncomingMigration, "migrations/incoming", out _), """{"definition": {"name": "web", "kernel": "/k", "memory_mib": 64}, "tenant": "acme"}"""),
        (b => BodyReader.TryRead(b, DaemonJson.Default.TenantRequest, "tenants", out _), """{"name": "acme", "image_dirs": ["/srv/acme/images"]}"""),
        (b => BodyReader.TryRead(b, DaemonJson.Default.UserRequest, "users", out _), """{"name": "alice", "tenant": "acme", "role": "operator", "uid": 1001}"""),
    ];

    public override string Name => "daemon-api";
    public override string Covers => "vireod's API bodies: shutdown, rename, save, snapshot, migrate, incoming migration, tenants, users";
    protected override (Func<byte[], string?> Read, string Example)[] Bodies => Known;
}

/// <summary>The device options of `vireo run` and `vireo-vmm`: --disk, --net, --vsock, sizes.</summary>
internal sealed class DeviceOptionTarget : FuzzTarget
{
    public override string Name => "device-options";
    public override string Covers => "device options: --disk path=..,ro,direct,queues; --net tap=..|unix=..,mac=..; --vsock cid=..,socket=..; sizes";

    public override void Run(ReadOnlySpan<byte> input)
    {
        if (input.Length == 0)
        {
            return;
        }
        string text = Encoding.UTF8.GetString(input[1..]);
        try
        {
            switch (input[0] % 4)
            {
                case 0: BlockConfig.Parse(text); break;
                case 1: NetConfig.Parse(text, 0); break;
                case 2: VsockConfig.Parse(text); break;
                default: VmConfig.ParseSize(text); break;
            }
        }
        catch (Exception e) when (e is FormatException or VmConfigException)
        {
            Refusal.Note(e); // refused, naming the bad part
        }
    }

    public override IEnumerable<(string, byte[])> Seeds()
    {
        yield return ("disk", [0, .. "path=/images/disk.ext4,ro,direct,queues=2,id=root"u8]);
        yield return ("net", [1, .. "tap=tap0,mac=02:00:00:00:00:01"u8]);
        yield return ("net-unix", [1, .. "unix=/tmp/dev.sock,peer=/tmp/peer.sock"u8]);
        yield return ("vsock", [2, .. "cid=3,socket=/tmp/v.sock"u8]);
        yield return ("size", [3, .. "512M"u8]);
    }
}

/// <summary>
/// Snapshot files (vireo-vmm's snapshot/load, vireod's restore). The first byte chooses: even,
/// the rest is read as it is (so the CRCs stand in the way, as they do for a corrupted file);
/// odd, each section's CRC is made right first, so the fuzzer reaches the decoders behind them.
/// </summary>
internal sealed class SnapshotTarget : FuzzTarget
{
    public override string Name => "snapshot";
    public override string Covers => "snapshot files: header, sections and CRCs, layout, config, VM, vCPU and device state";
    public override int MaxLength => 256 * 1024;

    internal static byte[] WithRightCrcs(ReadOnlySpan<byte> file)
    {
        byte[] data = file.ToArray();
        int at = 12;
        while (data.Length - at >= 12)
        {
            int length = (int)Math.Min(BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(at + 8)), (uint)(data.Length - at - 12));
            BinaryPrimitives.WriteUInt32LittleEndian(data.AsSpan(at + 4), Crc32.HashToUInt32(data.AsSpan(at + 12, length)));
            at += 12 + length;
        }
        return data;
    }

    public override void Run(ReadOnlySpan<byte> input)
    {
        if (input.Length == 0)
        {
            return;
        }
        try
        {
            SnapshotFile.Decode((input[0] & 1) != 0 ? WithRightCrcs(input[1..]) : input[1..]);
        }
        catch (SnapshotException e)
        {
            Refusal.Note(e); // refused, naming the section and the byte
        }
    }

    /// <summary>Taken from a real VM (fuzz/run --capture): the seeds on disk are kept as they are.</summary>
    public override IEnumerable<(string, byte[])> Seeds() => [];
}

/// <summary>
/// Migration streams as a destination reads them: the header, frames and their bounds, the CONF
/// config, PAGE frames into 64 KiB of guest memory, the STAT state (decoded against the CONF, as the
/// destination does), the CMIT. Seeds are built from the snapshot target's (a real VM's state).
/// </summary>
internal sealed class MigrationTarget : FuzzTarget
{
    public override string Name => "migration";
    public override string Covers => "migration streams: header, frames, CONF, PAGE, STAT against its CONF, the order of frames";
    public override int MaxLength => 256 * 1024;

    public override void Run(ReadOnlySpan<byte> input)
    {
        var stream = new MemoryStream(input.ToArray(), writable: false);
        var reader = new WireReader(stream);
        try
        {
            reader.Start();
            var (tag, length) = reader.Next();
            if (tag == MigrationWire.Local)
            {
                (tag, length) = reader.Next();
            }
            if (tag != MigrationWire.Config)
            {
                return; // the destination refuses a stream that does not begin with its config
            }
            byte[] confBytes = Payload(reader, stream, length);
            var config = SnapshotFile.Json(confBytes, SnapshotJson.Default.VmConfig, "CONF");
            var known = new SnapshotFile.KnownConfig(config, confBytes);
            var memory = GuestImage.Load([]);
            while (true)
            {
                long at = reader.Offset;
                (tag, length) = reader.Next();
                switch (tag)
                {
                    case MigrationWire.Pages:
                        if (length > stream.Length - stream.Position)
                        {
                            return; // the stream ends inside it
                        }
                        MigrationReceiver.ReadPagesInto(reader, memory, length, at);
                        break;
                    case MigrationWire.State:
                        SnapshotFile.Decode(Payload(reader, stream, length), known);
                        break;
                    case MigrationWire.Commit:
                        return;
                    default:
                        Payload(reader, stream, length);
                        break;
                }
            }
        }
        catch (Exception e) when (e is MigrationException or SnapshotException or VmConfigException)
        {
            Refusal.Note(e); // refused, naming the byte
        }
    }

    /// <summary>A frame's payload; a stream that ends before its claimed length ends here (the destination's read would fail the same way).</summary>
    private static byte[] Payload(WireReader reader, MemoryStream stream, int length) =>
        length <= stream.Length - stream.Position ? reader.Payload(length, "a payload") : throw new MigrationException("the stream ends inside a frame");

    public override IEnumerable<(string, byte[])> Seeds()
    {
        if (SeedDir.Path is null || !Directory.Exists(System.IO.Path.Combine(SeedDir.Path, "snapshot")))
        {
            yield break;
        }
        foreach (var file in Directory.EnumerateFiles(System.IO.Path.Combine(SeedDir.Path, "snapshot")).Order(StringComparer.Ordinal))
        {
            byte[] snap = File.ReadAllBytes(file)[1..];
            MachineStateOrNull(snap, out var config);
            if (config is null)
            {
                continue;
            }
            byte[] conf = JsonSerializer.SerializeToUtf8Bytes(config, SnapshotJson.Default.VmConfig);
            var page = new byte[8 + 4096];
            page.AsSpan(8).Fill(0xcc);
            var s = new MemoryStream();
            s.Write(MigrationWire.Magic);
            Span<byte> v = stackalloc byte[4];
            BinaryPrimitives.WriteUInt32LittleEndian(v, MigrationWire.Version);
            s.Write(v);
            Frame(s, MigrationWire.Config, conf);
            Frame(s, MigrationWire.Pages, page);
            Frame(s, MigrationWire.Stopping, []);
            Frame(s, MigrationWire.State, snap);
            Frame(s, MigrationWire.Commit, []);
            yield return ($"from-{System.IO.Path.GetFileName(file)}", s.ToArray());
        }
    }

    private static void MachineStateOrNull(byte[] snapshot, out VmConfig? config)
    {
        try
        {
            config = SnapshotFile.Decode(snapshot).State.Config;
        }
        catch (SnapshotException e)
        {
            Console.Error.WriteLine($"vireo-fuzz seeds: a snapshot seed does not decode: {e.Message}");
            config = null;
        }
    }

    private static void Frame(MemoryStream s, string tag, ReadOnlySpan<byte> payload)
    {
        s.Write(Encoding.ASCII.GetBytes(tag));
        Span<byte> n = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(n, (uint)payload.Length);
        s.Write(n);
        s.Write(payload);
    }
}
