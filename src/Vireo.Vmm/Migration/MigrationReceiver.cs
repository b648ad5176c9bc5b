using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Vireo.Interop;
using Vireo.Memory;
using Vireo.Vmm.Snapshot;

namespace Vireo.Vmm.Migration;

/// <summary>
/// The destination's side: takes one connection, reads the stream as untrusted input (every
/// frame in its place, every length bounded, every page inside RAM, the state validated as a
/// snapshot's is) and builds the machine it describes, which runs only once the source has
/// committed. Anything wrong is answered with FAIL and its reason, and nothing is left open.
/// </summary>
public sealed class MigrationReceiver(Action<byte> serialOut)
{
    private volatile MigrationStatus _status = MigrationStatus.Idle with { State = MigrationStatus.Receiving };
    private long _received;
    private NoCollection? _noCollection; // from the machine's preparation to the commit: the pause lies between

    /// <summary>What a destination may allocate between its preparation and the commit without a collection: frame headers, status, the state.</summary>
    private const long PrepareToCommitAllocation = 16 << 20;

    public MigrationStatus Status => _status with { BytesSent = Interlocked.Read(ref _received) };

    /// <summary>
    /// Waits on <paramref name="listener"/> for the source, receives the VM and returns it built
    /// and committed, not yet running (the caller runs it). Throws <see cref="MigrationException"/>.
    /// </summary>
    public (Machine Machine, VmFiles Files) Receive(Socket listener)
    {
        Socket socket;
        try
        {
            socket = listener.Accept();
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            throw new MigrationException($"no migration arrived: {e.Message}");
        }
        using (socket)
        {
            if (socket.AddressFamily != System.Net.Sockets.AddressFamily.Unix)
            {
                socket.NoDelay = true; // as the source's: OKAY and the last word go out as they are written
            }
            socket.ReceiveTimeout = socket.SendTimeout = 60_000; // a source that stalls mid-stream fails the migration
            using var stream = new NetworkStream(socket, ownsSocket: false);
            var reader = new WireReader(stream);
            var writer = new WireWriter(stream);
            try
            {
                return Read(socket, reader, writer);
            }
            catch (Exception e) when (e is MigrationException or SnapshotException or VmConfigException or SysError or IOException or ArgumentException or Kvm.KvmUnavailableException)
            {
                string reason = e is MigrationException ? e.Message : $"byte {reader.Offset}: {e.Message}";
                _status = _status with { State = MigrationStatus.Failed, Error = reason };
                try
                {
                    writer.Frame(MigrationWire.Fail, Encoding.UTF8.GetBytes(reason.Length > 1000 ? reason[..1000] : reason));
                }
                catch (Exception)
                {
                    // the source may be gone already: it learns from the closed connection
                }
                throw new MigrationException(reason);
            }
            finally
            {
                _noCollection?.Dispose(); // the pause is over, whichever way
                _noCollection = null;
            }
        }
    }

    private (Machine, VmFiles) Read(Socket socket, WireReader reader, WireWriter writer)
    {
        reader.Start();
        var (tag, length) = reader.Next();
        bool local = tag == MigrationWire.Local;
        if (local)
        {
            (tag, length) = reader.Next();
        }
        long configAt = reader.Offset - MigrationWire.FrameHeaderSize;
        if (tag != MigrationWire.Config)
        {
            throw new MigrationException($"byte {configAt}: the stream must begin with the VM's config (CONF), not {tag}");
        }
        byte[] configBytes = reader.Payload(length, "the config");
        VmConfig config;
        VmFiles? files = null;
        GuestMemory? memory = null; // owned here until a prepared machine owns it
        GuestMemory? ram = null;    // the guest's RAM, whoever owns it
        MachineBuilder.PreparedRestore? prepared = null;
        int nextTap = 0; // the next interface whose TAP a local migration hands over
        bool copied = false, handed = false, stopping = false;
        try
        {
            config = configBytes.Length == 0 ? throw new SnapshotException("CONF: empty") : SnapshotFile.Json(configBytes, SnapshotJson.Default.VmConfig, "CONF");
            // The disks both hosts reach, the TAPs, /dev/kvm; it validates the config. A local
            // migration's TAPs come from the source, which holds them until it ends.
            files = VmFiles.OpenForRestore(config, tapsHandedOver: local);
            if (!local)
            {
                // The VM is built now, while its RAM arrives: the guest's pause is left with applying the state.
                ram = config.ResolvedMemoryBacking == MemoryBacking.Memfd ? GuestMemory.Create(config.MemoryBytes) : GuestMemory.CreateAnonymous(config.MemoryBytes);
                prepared = MachineBuilder.Prepare(config, files, ram, serialOut);
                // Its vCPU threads too, parked: after the commit only a wake-up stands between the guest and its next instruction.
                prepared.StartVcpusParked();
                prepared.WarmUpDecoding();
            }
            SnapshotFile.WarmUp(); // the state's decoding is left with its bytes, not its metadata, during the guest's pause
            if (!local)
            {
                _noCollection = NoCollection.Begin(PrepareToCommitAllocation); // and no collection in it: one may come now
            }
        }
        catch (Exception e) when (e is SnapshotException or VmConfigException or ArgumentException or SysError or Kvm.KvmUnavailableException)
        {
            files?.Dispose();
            // Named by the frame's first byte, not the reader's place past its payload.
            string reason = e.Message.StartsWith("CONF:", StringComparison.Ordinal) ? e.Message : $"CONF: {e.Message}";
            throw new MigrationException($"byte {configAt}: {reason}");
        }
        try
        {
            writer.Frame(MigrationWire.Okay, []);
            _status = _status with { PagesTotal = (long)(config.MemoryBytes / 4096) };
            while (true)
            {
                long at = reader.Offset;
                if (stopping)
                {
                    PauseWait.UntilReadable(socket, PauseWait.StopSpin); // the guest is paused: read what comes as it comes
                }
                (tag, length) = reader.Next();
                switch (tag)
                {
                    case MigrationWire.Pages:
                        if (handed || local)
                        {
                            throw new MigrationException($"byte {at}: pages in a local migration, whose memory is handed over");
                        }
                        copied = true;
                        ReadPages(reader, ram!, length, at);
                        break;
                    case MigrationWire.TapFd:
                        while (nextTap < config.Nets.Count && config.Nets[nextTap].Tap is null)
                        {
                            nextTap++;
                        }
                        if (!local || !handed || length != 1 || nextTap >= config.Nets.Count)
                        {
                            throw new MigrationException($"byte {at}: a TAP handed over {(!local ? "in a migration that is not local" : !handed ? "before the memory" : length != 1 ? $"in a frame of {length} bytes" : "beyond the config's TAPs")}");
                        }
                        files.AdoptTap(nextTap, ReceiveTap(socket, reader, nextTap, at));
                        nextTap++;
                        PrepareWhenHandedOver();
                        writer.Frame(MigrationWire.Okay, []);
                        break;
                    case MigrationWire.MemoryFd:
                        if (!local)
                        {
                            throw new MigrationException($"byte {at}: the memory handed over in a migration that is not local");
                        }
                        if (length != 1)
                        {
                            throw new MigrationException($"byte {at}: a MEMF frame of {length} bytes; it carries one byte with the descriptor");
                        }
                        if (handed || copied)
                        {
                            throw new MigrationException($"byte {at}: {(copied ? "the memory was handed over after pages were sent" : "a second MEMF frame: the memory was handed over already")}");
                        }
                        ram = memory = ReceiveMemory(socket, reader, config, at);
                        handed = true;
                        PrepareWhenHandedOver();
                        writer.Frame(MigrationWire.Okay, []);
                        break;
                    case MigrationWire.Stopping:
                        if (stopping)
                        {
                            throw new MigrationException($"byte {at}: a second STOP");
                        }
                        stopping = true; // the source pauses the guest once it has this answer
                        writer.Frame(MigrationWire.Okay, []);
                        writer.Flush();
                        break;
                    case MigrationWire.State:
                        if (local && (!handed || config.Nets.Skip(nextTap).Any(n => n.Tap is not null)))
                        {
                            throw new MigrationException($"byte {at}: the state came before the local migration handed over {(handed ? "every TAP" : "the memory")}");
                        }
                        var toApply = prepared!;
                        prepared = null; // Restore owns it now, and disposes it if it refuses
                        toApply.Hurry(Libc.GetTid()); // the guest is paused from here until it runs here
                        return Restore(socket, reader, writer, new SnapshotFile.KnownConfig(config, configBytes), files, toApply, ram!, length, at);
                    default:
                        throw new MigrationException($"byte {at}: a {tag} frame where pages or the machine's state belong");
                }
            }
        }
        catch
        {
            prepared?.Dispose(); // the machine, and the RAM it owns
            memory?.Dispose();   // RAM no machine owns yet
            files?.Dispose();
            throw;
        }

        // A local migration's machine is built once its RAM and every TAP are in hand.
        void PrepareWhenHandedOver()
        {
            if (handed && prepared is null && !config.Nets.Skip(nextTap).Any(n => n.Tap is not null))
            {
                try
                {
                    prepared = MachineBuilder.Prepare(config, files!, memory!, serialOut);
                }
                finally
                {
                    memory = null; // Prepare owns it, and disposed it if it failed
                }
                prepared.StartVcpusParked();
                prepared.WarmUpDecoding();
                _noCollection = NoCollection.Begin(PrepareToCommitAllocation);
            }
        }
    }

    private void ReadPages(WireReader reader, GuestMemory memory, int length, long at)
    {
        ReadPagesInto(reader, memory, length, at);
        Interlocked.Add(ref _received, length);
    }

    /// <summary>A PAGE frame's payload (a guest address, then whole pages) into guest memory; refused when it lies outside it.</summary>
    internal static void ReadPagesInto(WireReader reader, GuestMemory memory, int length, long at)
    {
        if (length < 8 + 4096 || (length - 8) % 4096 != 0)
        {
            throw new MigrationException($"byte {at}: a PAGE frame of {length} bytes; it holds a guest address and whole 4 KiB pages");
        }
        Span<byte> address = stackalloc byte[8];
        reader.Read(address, "a page address");
        ulong gpa = BinaryPrimitives.ReadUInt64LittleEndian(address);
        ulong bytes = (ulong)(length - 8);
        if (gpa % 4096 != 0 || !memory.TryGetSpan(new GuestAddress(gpa), bytes, out var span))
        {
            throw new MigrationException($"byte {at}: pages at 0x{gpa:x} (+0x{bytes:x}) are not within the guest's {memory.Size >> 20} MiB of RAM");
        }
        reader.Read(span, "a run of pages");
    }

    private static FileDescriptor ReceiveTap(Socket socket, WireReader reader, int index, long at)
    {
        var (_, fd) = FdPassing.ReceiveFd((int)socket.Handle);
        reader.Skipped(1);
        if (fd < 0)
        {
            throw new MigrationException($"byte {at}: the TAP of net {index} came without a file descriptor");
        }
        var tap = new FileDescriptor(fd);
        if (Libc.StatOf(fd).Kind != FileKind.CharacterDevice)
        {
            tap.Dispose();
            throw new MigrationException($"byte {at}: what was handed over as the TAP of net {index} is not a TAP device");
        }
        return tap;
    }

    private GuestMemory ReceiveMemory(Socket socket, WireReader reader, VmConfig config, long at)
    {
        int fd;
        try
        {
            (_, fd) = FdPassing.ReceiveFd((int)socket.Handle);
        }
        catch (SysError e)
        {
            throw new MigrationException(e.Errno == Libc.EPIPE
                ? $"byte {reader.Offset}: the stream ended in the middle of the memory frame"
                : $"byte {reader.Offset}: the connection failed while reading the memory frame: {Libc.StrError(e.Errno)}");
        }
        if (fd < 0)
        {
            throw new MigrationException($"byte {at}: the memory frame came without a file descriptor (a local migration needs a unix: socket on this host)");
        }
        reader.Skipped(1);
        var file = new FileDescriptor(fd);
        var stat = Libc.StatOf(fd);
        if (stat.Kind != FileKind.Regular || (ulong)stat.Size != config.MemoryBytes)
        {
            file.Dispose();
            throw new MigrationException($"byte {at}: the memory handed over is {(stat.Kind == FileKind.Regular ? $"{stat.Size} bytes" : stat.Described)}; the VM's RAM is {config.MemoryBytes} bytes");
        }
        try
        {
            return GuestMemory.FromFile(file, config.MemoryBytes, shared: true);
        }
        catch (Exception e) when (e is SysError or ArgumentException)
        {
            file.Dispose(); // the memory owns the descriptor only once it is made
            throw new MigrationException($"byte {at}: the memory handed over cannot be mapped as the guest's RAM: {(e is SysError s ? Libc.StrError(s.Errno) : e.Message)}");
        }
    }

    private (Machine, VmFiles) Restore(Socket socket, WireReader reader, WireWriter writer, SnapshotFile.KnownConfig config, VmFiles files, MachineBuilder.PreparedRestore prepared, GuestMemory memory, int length, long at)
    {
        MachineState state;
        SnapshotFile.Layout layout;
        try
        {
            (state, layout) = SnapshotFile.Decode(reader.Payload(length, "the machine's state"), config); // the stream's config is not decoded again
        }
        catch (SnapshotException e)
        {
            prepared.Dispose();
            // Named by the frame's first byte; the snapshot's own offsets count from the payload's.
            throw new MigrationException($"byte {at}: the machine's state (STAT): {e.Message}");
        }
        catch
        {
            prepared.Dispose();
            throw;
        }
        try
        {
            CheckState(state, layout, config, memory, at);
        }
        catch
        {
            prepared.Dispose();
            throw;
        }
        // The state is whole and fits: the source may commit, and its commit travels while KVM takes the state.
        try
        {
            writer.Frame(MigrationWire.Okay, []);
            writer.Flush();
            // The source spins for this answer; on a small host it may be on this very CPU, behind
            // this thread, and the apply below would keep it from the answer until done (0.2 ms).
            Thread.Yield();
        }
        catch
        {
            prepared.Dispose();
            throw;
        }
        // The restore owns the memory from here: it disposes it if it refuses.
        Machine? machine = null;
        string? refused = null;
        try
        {
            machine = prepared.Apply(state, resume: true);
        }
        catch (SnapshotException e)
        {
            refused = $"byte {at}: the machine's state (STAT): {e.Message}"; // said after the commit, which the source then takes back
        }
        return Commit(socket, reader, writer, machine, refused, files);
    }

    private static void CheckState(MachineState state, SnapshotFile.Layout layout, SnapshotFile.KnownConfig config, GuestMemory memory, long at)
    {
        if (layout.Kind != SnapshotKind.Full)
        {
            throw new MigrationException($"byte {at}: the state is a {layout.Kind.ToString().ToLowerInvariant()} snapshot's; a migration carries a full one");
        }
        if (layout.RamBytes != memory.Size)
        {
            throw new MigrationException($"byte {at}: the state describes {layout.RamBytes} bytes of RAM; the config said {memory.Size}");
        }
        // The decoder gave the stream's own config object back for the very same bytes: anything else differs.
        if (!ReferenceEquals(state.Config, config.Config) && !JsonSerializer.SerializeToUtf8Bytes(state.Config, SnapshotJson.Default.VmConfig).AsSpan().SequenceEqual(config.Bytes))
        {
            throw new MigrationException($"byte {at}: the state's config is not the config the stream began with");
        }
    }

    /// <summary>
    /// Reads the source's commit and says the last word: OKAY, the VM is this one's now; or FAIL with
    /// <paramref name="refused"/> when KVM did not take the state, and the VM goes on at the source.
    /// </summary>
    private (Machine, VmFiles) Commit(Socket socket, WireReader reader, WireWriter writer, Machine? machine, string? refused, VmFiles files)
    {
        try
        {
            PauseWait.UntilReadable(socket);
            long commitAt = reader.Offset;
            var (tag, _) = reader.Next();
            if (tag != MigrationWire.Commit)
            {
                throw new MigrationException($"byte {commitAt}: a {tag} frame where the commit belongs");
            }
            if (refused is not null)
            {
                throw new MigrationException(refused);
            }
            writer.Frame(MigrationWire.Okay, []);
            writer.Flush();
            _status = _status with { State = MigrationStatus.Completed };
            return (machine!, files);
        }
        catch
        {
            machine?.Dispose();
            throw;
        }
    }
}
