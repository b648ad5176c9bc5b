using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Vireo.Interop;
using Vireo.Memory;
using Vireo.Vmm.Snapshot;

namespace Vireo.Vmm.Migration;

/// <summary>How a migration may go: the pause the guest can bear, how long it may take, and what then.</summary>
public sealed record MigrationOptions(TimeSpan Downtime, TimeSpan Timeout, bool ForceOnTimeout, bool Local)
{
    public static readonly TimeSpan DefaultDowntime = TimeSpan.FromMilliseconds(300); // QEMU's and Cloud Hypervisor's
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromHours(1);
}

/// <summary>Where a migration is, readable while it runs.</summary>
public sealed record MigrationStatus(
    string State, string? Url, int Round, long PagesTotal, long PagesLeft, long BytesSent, double RateMibS,
    double ExpectedDowntimeMs, double? DowntimeMs, double ElapsedMs, string? Error)
{
    public const string None = "None", Connecting = "Connecting", Copying = "Copying", StopAndCopy = "StopAndCopy",
        Completed = "Completed", Failed = "Failed", Receiving = "Receiving";

    public static readonly MigrationStatus Idle = new(None, null, 0, 0, 0, 0, 0, 0, null, 0, null);
}

/// <summary>
/// Sends a running machine to a destination vireo-vmm: pre-copy (all of RAM, then rounds of the
/// pages written meanwhile, from KVM's dirty log and the devices' marks) until what is left fits
/// the downtime budget at the rate measured, then stop-and-copy (pause, quiesce, the last pages
/// and the machine's state), and once the destination says it is ready, commit. Until the commit
/// any failure — a cut connection, a destination that refuses or dies, the timeout with strategy
/// cancel — resumes the machine here as it was. After it, the machine belongs to the destination:
/// its devices stay quiet and the caller stops it.
/// Local (a unix: destination on this host, RAM on a memfd): the memfd itself is handed over,
/// nothing is copied, and only the state crosses.
/// </summary>
public sealed class MigrationSender(Machine machine, MigrationUrl url, MigrationOptions options, Func<int, int>? tapFd = null)
{
    private const int Page = 4096;

    /// <summary>What the pause may allocate without a collection: the state, its encoding, the last dirty bitmaps (a few hundred KiB for 1 GiB).</summary>
    private const long PauseAllocation = 4 << 20;
    private readonly Stopwatch _clock = new();
    private volatile MigrationStatus _status = MigrationStatus.Idle with { State = MigrationStatus.Connecting, Url = url.Text };

    public MigrationStatus Status => _status with { ElapsedMs = _clock.Elapsed.TotalMilliseconds };

    private readonly Stopwatch _sending = new(); // time spent in the socket's writes: the rate is theirs, not the scan's

    /// <summary>Runs the migration to its end; throws <see cref="MigrationException"/> (the machine running here again) when it did not happen.</summary>
    public void Run()
    {
        _clock.Start();
        if (options.Local && !(url.IsUnix && machine.Memory.IsShared))
        {
            throw Failed(new MigrationException(!url.IsUnix
                ? "local: a local migration goes to a unix: destination on this host"
                : "local: the VM's RAM is not on a memfd (memory backing Memfd), so it cannot be handed over; migrate without local"));
        }
        machine.PrepareToSave();
        long pagesTotal = (long)(machine.Memory.Size / Page);
        _status = _status with { PagesTotal = pagesTotal, PagesLeft = pagesTotal };
        DirtyTracker? tracker = null;
        bool ownTracker = false;
        try
        {
            using var socket = url.Connect(TimeSpan.FromSeconds(10));
            socket.SendTimeout = socket.ReceiveTimeout = 30_000; // a destination that stops reading fails the migration, not the VM
            using var stream = new NetworkStream(socket, ownsSocket: false);
            var writer = new WireWriter(stream);
            var reader = new WireReader(stream);
            try
            {
                writer.Start();
                if (options.Local)
                {
                    writer.Frame(MigrationWire.Local, []);
                }
                var config = new SnapshotFile.KnownConfig(machine.Config, JsonSerializer.SerializeToUtf8Bytes(machine.Config, SnapshotJson.Default.VmConfig));
                writer.Frame(MigrationWire.Config, config.Bytes);
                Expect(reader, "the config");
                if (options.Local)
                {
                    writer.FrameHeader(MigrationWire.MemoryFd, 1);
                    FdPassing.SendFd((int)socket.Handle, machine.Memory.Backing!.Fd, 0);
                    Expect(reader, "the guest's memory");
                    for (int i = 0; i < machine.Config.Nets.Count; i++)
                    {
                        if (machine.Config.Nets[i].Tap is not null)
                        {
                            int fd = tapFd?.Invoke(i) ?? -1;
                            if (fd < 0)
                            {
                                throw new MigrationException($"local: the TAP of net {i} is not open here to hand over");
                            }
                            writer.FrameHeader(MigrationWire.TapFd, 1);
                            FdPassing.SendFd((int)socket.Handle, fd, (byte)i);
                            Expect(reader, $"the TAP of net {i}");
                        }
                    }
                }
                else
                {
                    tracker = machine.TrackWrites(out ownTracker);
                    tracker.Collect(); // what was written before now is in the first pass
                    tracker.Commit();
                    _status = _status with { State = MigrationStatus.Copying, Round = 1 };
                    SendAll(writer);
                    double rate = Rate(writer.BytesWritten, _sending.Elapsed);
                    var deadline = options.Timeout;
                    while (true)
                    {
                        var dirty = tracker.Collect();
                        long left = (long)tracker.PendingPages;
                        double expected = left * (double)Page / rate * 1000;
                        _status = _status with { PagesLeft = left, ExpectedDowntimeMs = expected, RateMibS = rate / (1 << 20) };
                        if (expected <= options.Downtime.TotalMilliseconds)
                        {
                            break;
                        }
                        if (_clock.Elapsed > deadline)
                        {
                            if (options.ForceOnTimeout)
                            {
                                break;
                            }
                            throw new MigrationException($"timeout_s: it did not converge in {options.Timeout.TotalSeconds:0} s ({left} pages still dirty, {expected:0} ms of downtime expected against downtime_ms {options.Downtime.TotalMilliseconds:0}); the VM goes on here (timeout_strategy cancel)");
                        }
                        _status = _status with { Round = _status.Round + 1 };
                        long before = writer.BytesWritten;
                        var sendingBefore = _sending.Elapsed;
                        SendDirty(writer, dirty);
                        tracker.Commit();
                        rate = Math.Max(Rate(writer.BytesWritten - before, _sending.Elapsed - sendingBefore), rate / 4);
                    }
                }
                StopAndCopy(socket, writer, reader, tracker, config);
            }
            catch (IOException) when (PeerReason(socket, reader) is { } refused)
            {
                throw refused; // the destination said why before it hung up on us
            }
            _clock.Stop();
            _status = _status with { State = MigrationStatus.Completed, PagesLeft = 0 };
        }
        catch (Exception e) when (e is MigrationException or IOException or SocketException or SysError or SnapshotException or ObjectDisposedException)
        {
            if (!ownTracker)
            {
                tracker?.MarkAll(); // the machine's own tracker gave its pages to a destination that is gone: the next Diff writes all
            }
            throw Failed(e is MigrationException m ? m : new MigrationException($"{url}: {(e.InnerException ?? e).Message}"));
        }
        finally
        {
            if (ownTracker)
            {
                tracker?.Dispose();
            }
        }
    }

    private MigrationException Failed(MigrationException e)
    {
        _clock.Stop();
        _status = _status with { State = MigrationStatus.Failed, Error = e.Message };
        return e;
    }

    private static double Rate(long bytes, TimeSpan took) => Math.Max(bytes, Page) / Math.Max(took.TotalSeconds, 1e-4);

    private void StopAndCopy(Socket socket, WireWriter writer, WireReader reader, DirtyTracker? tracker, SnapshotFile.KnownConfig config)
    {
        _status = _status with { State = MigrationStatus.StopAndCopy };
        using var urgent = Urgency.Raise(machine.VcpuThreadIds.Append(Libc.GetTid()));
        using var noCollection = NoCollection.Begin(PauseAllocation); // any collection it needs is made now, with the guest still running
        // The destination watches for the pause's frames from its answer on, instead of sleeping on
        // them: its wake-up, which this host made late by up to 16 ms, comes before the pause.
        writer.Frame(MigrationWire.Stopping, []);
        writer.Flush();
        Expect(reader, "the stop");
        var downtime = Stopwatch.StartNew(); // the pause starts here
        machine.Pause();
        try
        {
            machine.HandOver(state =>
            {
                if (tracker is not null)
                {
                    SendDirty(writer, tracker.Collect()); // quiet now: the last pages, vCPUs' and devices' alike
                }
                writer.Frame(MigrationWire.State, SnapshotFile.Encode(state, SnapshotFile.LayoutOf(machine.Memory, SnapshotKind.Full), config)); // the config as sent at the start, not encoded again
                writer.Flush();
                PauseWait.UntilReadable(socket); // the answer is read as it comes: the guest waits for it
                Expect(reader, "the machine's state");
                writer.Frame(MigrationWire.Commit, []);
                writer.Flush();
                _status = _status with { DowntimeMs = downtime.Elapsed.TotalMilliseconds };
                LastWord(socket, reader);
            });
        }
        catch
        {
            machine.Resume(); // nothing was committed: the VM is still this one's
            throw;
        }
    }

    /// <summary>
    /// After a write failed: the FAIL the destination sent before it closed, if it sent one (a
    /// destination refuses as soon as it reads what is wrong, while the source may still be writing).
    /// </summary>
    private static MigrationException? PeerReason(Socket socket, WireReader reader)
    {
        try
        {
            socket.ReceiveTimeout = 1000;
            for (int i = 0; i < 8; i++)
            {
                var (tag, length) = reader.Next();
                if (tag == MigrationWire.Fail)
                {
                    return new MigrationException($"the destination refused the migration: {Encoding.UTF8.GetString(reader.Payload(length, "its reason"))}");
                }
                if (tag != MigrationWire.Okay)
                {
                    return null;
                }
            }
        }
        catch (Exception e) when (e is MigrationException or IOException or SocketException or ObjectDisposedException)
        {
            // nothing more to read: the write's own error stands
        }
        return null;
    }

    /// <summary>
    /// After the commit, the destination's last word: OKAY, it runs the VM; FAIL, KVM refused the
    /// state there, so the VM goes on here (the exception resumes it). No word at all (the
    /// connection cut, the destination gone) leaves the VM the destination's: it may run there, and
    /// two of it must never run.
    /// </summary>
    private static void LastWord(Socket socket, WireReader reader)
    {
        string tag;
        int length;
        try
        {
            socket.ReceiveTimeout = 5000;
            (tag, length) = reader.Next();
        }
        catch (Exception e) when (e is MigrationException or IOException or SocketException or ObjectDisposedException)
        {
            return;
        }
        if (tag == MigrationWire.Fail)
        {
            string reason;
            try
            {
                reason = Encoding.UTF8.GetString(reader.Payload(length, "its reason"));
            }
            catch (Exception e) when (e is MigrationException or IOException or SocketException or ObjectDisposedException)
            {
                reason = "(its reason was cut off)";
            }
            throw new MigrationException($"the destination could not run the machine after the commit: {reason}; the VM goes on here");
        }
    }

    /// <summary>Waits for OKAY; a FAIL carries the destination's reason.</summary>
    private static void Expect(WireReader reader, string what)
    {
        var (tag, length) = reader.Next();
        if (tag == MigrationWire.Okay)
        {
            return;
        }
        if (tag == MigrationWire.Fail)
        {
            throw new MigrationException($"the destination refused {what}: {Encoding.UTF8.GetString(reader.Payload(length, "its reason"))}");
        }
        throw new MigrationException($"the destination answered {what} with a {tag} frame");
    }

    /// <summary>The first pass: every page that holds anything (never-touched memfd ranges and zero pages are skipped: the destination's RAM starts zeroed).</summary>
    private void SendAll(WireWriter writer)
    {
        var memory = machine.Memory;
        const ulong Chunk = 2UL << 20;
        foreach (var region in memory.Regions)
        {
            for (ulong at = 0; at < region.Size; at += Chunk)
            {
                ulong length = Math.Min(Chunk, region.Size - at);
                if (!memory.MayHoldData(region, at, length))
                {
                    _status = _status with { PagesLeft = _status.PagesLeft - (long)(length / Page) };
                    continue;
                }
                var span = memory.GetSpan(region.Start.Add(at), length);
                int from = 0;
                while (ZeroPages.NextNonZeroRun(span, ref from, out int start, out int run))
                {
                    SendRun(writer, region.Start.Add(at + (ulong)start), span.Slice(start, run));
                }
                _status = _status with { PagesLeft = _status.PagesLeft - (long)(length / Page), BytesSent = writer.BytesWritten };
            }
        }
    }

    /// <summary>The pages <paramref name="dirty"/> marks, zero or not (the destination holds an older copy of each).</summary>
    private void SendDirty(WireWriter writer, IReadOnlyList<ulong[]> dirty)
    {
        var memory = machine.Memory;
        for (int i = 0; i < memory.Regions.Count; i++)
        {
            var region = memory.Regions[i];
            var bits = dirty[i];
            ulong page = 0;
            while (DirtyBitmap.NextRun(bits, region.Size / Page, ref page, MigrationWire.MaxPageBytes / Page, out ulong run, out ulong count))
            {
                var start = region.Start.Add(run * Page);
                SendRun(writer, start, memory.GetSpan(start, count * Page));
            }
        }
        _status = _status with { BytesSent = writer.BytesWritten };
    }

    private void SendRun(WireWriter writer, GuestAddress start, ReadOnlySpan<byte> pages)
    {
        Span<byte> address = stackalloc byte[8];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(address, start.Value);
        _sending.Start();
        writer.FrameHeader(MigrationWire.Pages, 8 + pages.Length);
        writer.Write(address);
        writer.Write(pages);
        _sending.Stop();
    }
}
