using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Win32.SafeHandles;
using Vireo.Interop;
using Vireo.Memory;

namespace Vireo.Vmm.Snapshot;

/// <summary>Full: all of RAM in the memory file. Diff: only the pages dirtied since the last snapshot.</summary>
public enum SnapshotKind
{
    Full,
    Diff,
}

/// <summary>
/// The snapshot file: a magic and a format version, then sections, each a four-letter tag, a
/// CRC-32 of its payload and its length. In order: LAYO (the RAM layout: its size and each region's
/// guest address, size and place in the memory file), CONF (the VM's config, JSON), VMST (KVM's
/// clock, irqchips and PIT), one VCPU per vCPU, DEVS (every device, JSON), END. Guest RAM goes to
/// its own file, laid out as LAYO says. The same format is what a migration stream carries.
/// Reading trusts nothing: sizes are bounded before anything is allocated, each CRC is checked
/// before a section is parsed, and every error names the section and the byte offset.
/// </summary>
public static class SnapshotFile
{
    public static ReadOnlySpan<byte> Magic => "VIREOSNP"u8;
    public const uint Version = 1;

    /// <summary>No machine's state comes near this (a vCPU is ~8 KiB); a larger file is refused unread.</summary>
    public const long MaxSize = 64L << 20;
    private const int HeaderSize = 12, SectionHeaderSize = 12;

    /// <summary>One run of RAM: where the guest sees it, and where its bytes sit in the memory file.</summary>
    public readonly record struct Region(ulong GuestAddress, ulong Size, ulong FileOffset);

    /// <summary>What LAYO says.</summary>
    public sealed record Layout(SnapshotKind Kind, ulong RamBytes, Region[] Regions);

    public static Layout LayoutOf(GuestMemory memory, SnapshotKind kind) =>
        new(kind, memory.Size, [.. memory.Regions.Select(r => new Region(r.Start.Value, r.Size, r.FileOffset))]);

    /// <summary>
    /// Builds the JSON sections' serializer metadata now (System.Text.Json configures each type on
    /// its first use, with reflection over its attributes: about 3 ms a process here). A migration
    /// pays it before the guest's pause, at both ends, not during it.
    /// </summary>
    public static void WarmUp()
    {
        SnapshotJson.Default.Options.GetTypeInfo(typeof(VmConfig));
        SnapshotJson.Default.Options.GetTypeInfo(typeof(DevicesState));
    }

    public static byte[] Encode(MachineState state, Layout layout) => Encode(state, layout, known: null);

    /// <param name="known">
    /// A config and its encoding, made before: when it is the state's config (the very object),
    /// its bytes go in the CONF section unencoded again (a migration's source sent them at its
    /// start, and encodes the state in the guest's pause).
    /// </param>
    public static byte[] Encode(MachineState state, Layout layout, KnownConfig? known)
    {
        var sections = new List<(string Tag, byte[] Payload)>
        {
            ("LAYO", EncodeLayout(layout)),
            ("CONF", known is not null && ReferenceEquals(known.Config, state.Config)
                ? known.Bytes
                : JsonSerializer.SerializeToUtf8Bytes(state.Config, SnapshotJson.Default.VmConfig)),
            ("VMST", StateCodec.Encode(state.Vm)),
        };
        foreach (var v in state.Vcpus)
        {
            sections.Add(("VCPU", StateCodec.Encode(v)));
        }
        sections.Add(("DEVS", JsonSerializer.SerializeToUtf8Bytes(state.Devices, SnapshotJson.Default.DevicesState)));
        sections.Add(("END ", []));
        var s = new MemoryStream();
        Span<byte> header = stackalloc byte[HeaderSize];
        Magic.CopyTo(header);
        BinaryPrimitives.WriteUInt32LittleEndian(header[8..], Version);
        s.Write(header);
        Span<byte> sh = stackalloc byte[SectionHeaderSize];
        foreach (var (tag, payload) in sections)
        {
            Encoding.ASCII.GetBytes(tag, sh);
            BinaryPrimitives.WriteUInt32LittleEndian(sh[4..], Crc32.HashToUInt32(payload));
            BinaryPrimitives.WriteUInt32LittleEndian(sh[8..], (uint)payload.Length);
            s.Write(sh);
            s.Write(payload);
        }
        return s.ToArray();
    }

    /// <summary>Reads a snapshot from <paramref name="path"/>; throws <see cref="SnapshotException"/> naming what is wrong.</summary>
    public static (MachineState State, Layout Layout) Read(string path) => Decode(ReadBytes(path));

    /// <summary>
    /// <see cref="Read"/>, with the devices' section decoded on a thread of its own while the caller
    /// goes on (a restore builds its VM meanwhile: the section's JSON costs about a millisecond in a
    /// fresh process, most of it the serializer's metadata). The state comes back with no devices;
    /// <c>Devices</c> waits for them, and throws the section's <see cref="SnapshotException"/> if it
    /// is wrong. Everything else is checked before this returns, as by <see cref="Read"/>.
    /// </summary>
    public static (MachineState State, Layout Layout, Func<DevicesState> Devices) ReadWithDevicesAside(string path)
    {
        DevicesState? devices = null;
        Exception? failed = null;
        Thread? decoding = null;
        var (state, layout) = Decode(ReadBytes(path), devicesAside: (payload, where) =>
        {
            decoding = new Thread(() =>
            {
                try
                {
                    devices = Json<DevicesState>(payload, SnapshotJson.Default.DevicesState, where);
                }
                catch (Exception e)
                {
                    failed = e;
                }
            }) { Name = "snapshot-devices", IsBackground = true };
            decoding.Start();
        }, known: null);
        return (state, layout, () =>
        {
            decoding!.Join();
            if (failed is not null)
            {
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failed);
            }
            return devices!;
        });
    }

    private static byte[] ReadBytes(string path)
    {
        // Opened O_NONBLOCK, as the memory file is: a FIFO put in a snapshot's place must not hang the open.
        int fd = VmFiles.OpenToRead(path, Libc.O_CLOEXEC | Libc.O_NONBLOCK | Libc.O_NOCTTY, out int errno);
        if (fd < 0)
        {
            throw new SnapshotException(errno == Libc.ENOENT ? $"snapshot_path {path}: no such file" : $"snapshot_path {path}: cannot open it: {Libc.StrError(errno)}");
        }
        byte[] data;
        using (var file = new SafeFileHandle(fd, ownsHandle: true))
        {
            var stat = Libc.StatOf(fd);
            if (stat.Kind != FileKind.Regular || stat.Size > MaxSize)
            {
                throw new SnapshotException($"snapshot_path {path} is {(stat.Kind == FileKind.Regular ? $"{stat.Size} bytes" : $"{stat.Described}, not a regular file")}; a snapshot is a regular file of at most {MaxSize >> 20} MiB");
            }
            data = new byte[stat.Size];
            try
            {
                int read = 0, n;
                while (read < data.Length && (n = RandomAccess.Read(file, data.AsSpan(read), read)) > 0)
                {
                    read += n;
                }
                data = data[..read]; // shorter if it shrank under us: then it reads as truncated
            }
            catch (IOException e)
            {
                throw new SnapshotException($"snapshot_path {path}: {e.Message}");
            }
        }
        return data;
    }

    public static (MachineState State, Layout Layout) Decode(ReadOnlySpan<byte> data) => Decode(data, devicesAside: null, known: null);

    /// <summary>
    /// <see cref="Decode(ReadOnlySpan{byte})"/>, where a CONF section of exactly <paramref name="known"/>'s
    /// bytes is taken to be its config, that very object, not decoded again (a migration's destination
    /// decoded the stream's config at its start, and decodes the state in the guest's pause). It is
    /// checked all the same.
    /// </summary>
    public static (MachineState State, Layout Layout) Decode(ReadOnlySpan<byte> data, KnownConfig known) => Decode(data, devicesAside: null, known);

    /// <summary>A config and the CONF bytes it was decoded from, or encoded to.</summary>
    public sealed record KnownConfig(VmConfig Config, byte[] Bytes);

    /// <param name="devicesAside">Given the DEVS section's payload (its CRC checked), decodes it elsewhere; the state then has no devices.</param>
    private static (MachineState State, Layout Layout) Decode(ReadOnlySpan<byte> data, Action<byte[], string>? devicesAside, KnownConfig? known)
    {
        if (data.Length < HeaderSize || !data[..8].SequenceEqual(Magic))
        {
            throw new SnapshotException("this is not a Vireo snapshot: it does not start with VIREOSNP");
        }
        uint version = BinaryPrimitives.ReadUInt32LittleEndian(data[8..]);
        if (version != Version)
        {
            throw new SnapshotException($"the snapshot's format is version {version}; this Vireo reads version {Version}");
        }
        int at = HeaderSize;
        Layout? layout = null;
        VmConfig? config = null;
        Kvm.KvmVmState? vm = null;
        var vcpus = new List<Kvm.VcpuState>();
        DevicesState? devices = null;
        string expect = "LAYO";
        while (true)
        {
            if (data.Length - at < SectionHeaderSize)
            {
                throw new SnapshotException($"the file ends at byte {data.Length}, inside or before the header of a {expect} section: it is truncated");
            }
            string tag = Encoding.ASCII.GetString(data.Slice(at, 4));
            uint crc = BinaryPrimitives.ReadUInt32LittleEndian(data[(at + 4)..]);
            uint length = BinaryPrimitives.ReadUInt32LittleEndian(data[(at + 8)..]);
            int start = at + SectionHeaderSize;
            if (length > (uint)(data.Length - start))
            {
                throw new SnapshotException($"section {Printable(tag)} at byte {at} claims {length} bytes but only {data.Length - start} follow: the file is truncated");
            }
            bool fits = tag == expect || (expect == "VCPU+" && tag is "VCPU" or "DEVS");
            if (!fits)
            {
                throw new SnapshotException($"section {Printable(tag)} at byte {at} where {expect.TrimEnd('+')} was expected: the sections are out of order");
            }
            var payload = data.Slice(start, (int)length);
            uint actual = Crc32.HashToUInt32(payload);
            if (actual != crc)
            {
                throw new SnapshotException($"section {tag} at byte {at}: its CRC is 0x{actual:x8}, the file says 0x{crc:x8}: the file is corrupted");
            }
            string where = $"section {tag} at byte {at}";
            switch (tag)
            {
                case "LAYO":
                    layout = DecodeLayout(payload, where);
                    expect = "CONF";
                    break;
                case "CONF":
                    config = known is not null && payload.SequenceEqual(known.Bytes) ? known.Config : Json(payload, SnapshotJson.Default.VmConfig, where);
                    if (ConfigProblem(config) is { } problem)
                    {
                        throw new SnapshotException($"{where}: {problem}");
                    }
                    if (config.MemoryBytes != layout!.RamBytes)
                    {
                        throw new SnapshotException($"{where}: memory is {config.MemoryBytes} bytes; the layout says {layout.RamBytes}");
                    }
                    expect = "VMST";
                    break;
                case "VMST":
                    vm = StateCodec.DecodeVm(payload, where);
                    expect = "VCPU";
                    break;
                case "VCPU":
                    if (vcpus.Count >= VmConfig.MaxVcpus)
                    {
                        throw new SnapshotException($"{where}: more than {VmConfig.MaxVcpus} vCPUs");
                    }
                    vcpus.Add(StateCodec.DecodeVcpu(payload, where));
                    expect = "VCPU+";
                    break;
                case "DEVS":
                    if (devicesAside is null)
                    {
                        devices = Json(payload, SnapshotJson.Default.DevicesState, where);
                    }
                    else
                    {
                        devicesAside(payload.ToArray(), where);
                    }
                    expect = "END ";
                    break;
                case "END ":
                    if (length != 0)
                    {
                        throw new SnapshotException($"section END at byte {at} holds {length} bytes; it holds none");
                    }
                    if (start != data.Length)
                    {
                        throw new SnapshotException($"{data.Length - start} bytes follow the END section");
                    }
                    return (new MachineState(config!, vm!, [.. vcpus], devices!), layout!);
            }
            at = start + (int)length;
        }
    }

    /// <summary>
    /// What the JSON reader lets through but no config can be: a null in a list (nullability is not
    /// checked inside collections) and an enum given as a number it does not name.
    /// </summary>
    private static string? ConfigProblem(VmConfig c)
    {
        if (!Enum.IsDefined(c.Transport))
        {
            return $"Transport {(int)c.Transport} is neither Pci nor Mmio";
        }
        if (!Enum.IsDefined(c.MemoryBacking))
        {
            return $"MemoryBacking {(int)c.MemoryBacking} is not one Vireo has";
        }
        for (int i = 0; i < c.Disks.Count; i++)
        {
            if (c.Disks[i] is not { } disk)
            {
                return $"Disks[{i}] is null";
            }
            if (disk.Queues is < 1 or > Virtio.Block.BlockConfig.MaxQueues)
            {
                return $"Disks[{i}].Queues is {disk.Queues}; a disk has 1 to {Virtio.Block.BlockConfig.MaxQueues}";
            }
        }
        for (int i = 0; i < c.Nets.Count; i++)
        {
            if (c.Nets[i] is not { } net)
            {
                return $"Nets[{i}] is null";
            }
            if (net.Mac is not { Length: 6 })
            {
                return $"Nets[{i}].Mac is {net.Mac?.Length ?? 0} bytes; a MAC address has 6";
            }
            if ((net.Tap is null) == (net.UnixPath is null) || (net.UnixPath is not null && net.UnixPeer is null))
            {
                string[] given = [.. new[] { ("Tap", net.Tap), ("UnixPath", net.UnixPath), ("UnixPeer", net.UnixPeer) }.Where(b => b.Item2 is not null).Select(b => b.Item1)];
                return $"Nets[{i}] gives {(given.Length == 0 ? "no backend" : string.Join(" and ", given))}; it needs a Tap, or a UnixPath and a UnixPeer";
            }
            foreach (var (name, path) in new[] { ("UnixPath", net.UnixPath), ("UnixPeer", net.UnixPeer) })
            {
                if (path is not null && (path.Length == 0 || !UnixSocket.PathFits(path)))
                {
                    return $"Nets[{i}].{name} '{path}' is not a Unix socket path (1 to {UnixSocket.MaxPathBytes} bytes)";
                }
            }
        }
        if (c.Vsock is { } vsock)
        {
            if (Virtio.Vsock.VsockConfig.CidProblem(vsock.Cid) is { } cid)
            {
                return $"Vsock.Cid {vsock.Cid} {cid}";
            }
            if (Virtio.Vsock.VsockConfig.SocketProblem(vsock.SocketPath) is { } socket)
            {
                return $"Vsock.SocketPath {socket}";
            }
        }
        return null;
    }

    private static string Printable(string tag) => tag.All(c => c is >= ' ' and <= '~') ? tag : "(unreadable tag)";

    internal static T Json<T>(ReadOnlySpan<byte> payload, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> type, string where)
    {
        try
        {
            return JsonSerializer.Deserialize(payload, type) ?? throw new SnapshotException($"{where}: empty");
        }
        catch (JsonException e)
        {
            // The member and position in the user's words, never the deserializer's .NET type names.
            string field = string.IsNullOrEmpty(e.Path) || e.Path == "$" ? "" : $" at {e.Path.TrimStart('$').TrimStart('.')}";
            throw new SnapshotException($"{where}: not the JSON this section holds{field} (byte {e.BytePositionInLine} of its payload): {JsonProblem(e.Message)}");
        }
    }

    private static readonly Dictionary<string, string> Kinds = new()
    {
        ["Boolean"] = "true or false",
        ["Byte"] = "a whole number from 0 to 255",
        ["UInt16"] = "a whole number from 0 to 65535",
        ["UInt32"] = "a whole number from 0 to 4294967295",
        ["UInt64"] = "a whole number from 0 to 18446744073709551615",
        ["Int32"] = "a whole number from -2147483648 to 2147483647",
        ["Int64"] = "a whole number that fits in 64 bits",
        ["String"] = "a string",
        ["Byte[]"] = "base64 text",
    };

    /// <summary>What System.Text.Json found wrong, said without its type names, path and line numbers.</summary>
    internal static string JsonProblem(string message)
    {
        string m = Regex.Replace(message, @"\s*(Path: |LineNumber: ).*$", "", RegexOptions.Singleline).Trim();
        if (Regex.Match(m, @"^The JSON property '([^']*)' could not be mapped") is { Success: true } unknown)
        {
            return $"'{unknown.Groups[1].Value}' is not a member it has";
        }
        if (Regex.Match(m, @"missing required properties including: (.*?)\.?$") is { Success: true } missing)
        {
            return $"it lacks {missing.Groups[1].Value}";
        }
        if (Regex.Match(m, @"'([^']*)' on type '[^']*' doesn't allow (getting |setting )?null") is { Success: true } nulled)
        {
            return $"'{nulled.Groups[1].Value}' must not be null";
        }
        if (Regex.Match(m, @"could not be converted to System\.(\w+)") is { Success: true } typed && Kinds.TryGetValue(typed.Groups[1].Value, out var kind))
        {
            return $"the value is not {kind}";
        }
        if (m.Contains("could not be converted to", StringComparison.Ordinal))
        {
            return "the value is of the wrong type, out of range, or null where a value is required";
        }
        // A reader's sentence ("'x' is an invalid start of a value"); any type name in it goes.
        return Regex.Replace(m, @"'?\b(System|Vireo)\.[\w.`\[\], ]*'?", "a value");
    }

    private static byte[] EncodeLayout(Layout layout)
    {
        var b = new byte[16 + 24 * layout.Regions.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(b, (uint)layout.Kind);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), (uint)layout.Regions.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8), layout.RamBytes);
        for (int i = 0; i < layout.Regions.Length; i++)
        {
            var r = layout.Regions[i];
            BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(16 + 24 * i), r.GuestAddress);
            BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(24 + 24 * i), r.Size);
            BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(32 + 24 * i), r.FileOffset);
        }
        return b;
    }

    /// <summary>The layout must be exactly the one Vireo gives a VM of that size: a restore maps nothing else.</summary>
    private static Layout DecodeLayout(ReadOnlySpan<byte> p, string where)
    {
        if (p.Length < 16)
        {
            throw new SnapshotException($"{where}: {p.Length} bytes; the layout needs at least 16");
        }
        uint kind = BinaryPrimitives.ReadUInt32LittleEndian(p);
        uint count = BinaryPrimitives.ReadUInt32LittleEndian(p[4..]);
        ulong ram = BinaryPrimitives.ReadUInt64LittleEndian(p[8..]);
        if (kind > (uint)SnapshotKind.Diff)
        {
            throw new SnapshotException($"{where}: snapshot kind {kind} is neither Full (0) nor Diff (1)");
        }
        if (ram < MemoryLayout.MinRam || ram > MemoryLayout.MaxRam || ram % 4096 != 0)
        {
            throw new SnapshotException($"{where}: {ram} bytes of RAM is not a size a VM can have");
        }
        var expected = MemoryLayout.RamRegions(ram);
        if (count != expected.Length || p.Length != 16 + 24 * (long)count)
        {
            throw new SnapshotException($"{where}: {count} regions in {p.Length} bytes; a VM of {ram >> 20} MiB has {expected.Length}");
        }
        var regions = new Region[count];
        ulong offset = 0;
        for (int i = 0; i < count; i++)
        {
            regions[i] = new Region(BinaryPrimitives.ReadUInt64LittleEndian(p[(16 + 24 * i)..]),
                BinaryPrimitives.ReadUInt64LittleEndian(p[(24 + 24 * i)..]), BinaryPrimitives.ReadUInt64LittleEndian(p[(32 + 24 * i)..]));
            if (regions[i].GuestAddress != expected[i].Start.Value || regions[i].Size != expected[i].Size || regions[i].FileOffset != offset)
            {
                throw new SnapshotException($"{where}: region {i} is {regions[i].Size} bytes at 0x{regions[i].GuestAddress:x} (file offset {regions[i].FileOffset}); Vireo lays it out as {expected[i].Size} bytes at 0x{expected[i].Start.Value:x} (file offset {offset})");
            }
            offset += regions[i].Size;
        }
        return new Layout((SnapshotKind)kind, ram, regions);
    }
}
