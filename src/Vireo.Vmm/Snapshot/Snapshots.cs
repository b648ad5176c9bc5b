using System.Diagnostics;
using Vireo.Memory;

namespace Vireo.Vmm.Snapshot;

/// <summary>What a snapshot took: its files, the bytes of RAM written and how long the VM was held.</summary>
public sealed record SnapshotResult(string SnapshotPath, string MemFilePath, long MemoryBytesWritten, TimeSpan Took);

/// <summary>Taking a machine's snapshot to two files, and building a machine again from them.</summary>
public static class Snapshots
{
    /// <summary>
    /// Saves a paused machine: its state to <paramref name="snapshotPath"/> and its RAM to
    /// <paramref name="memPath"/>, each written beside itself first and renamed into place, so a
    /// snapshot that fails half-way leaves the one before it whole.
    /// </summary>
    public static SnapshotResult Create(Machine machine, SnapshotKind kind, string snapshotPath, string memPath)
    {
        var tracker = machine.Dirty;
        if (kind == SnapshotKind.Diff && tracker is null)
        {
            throw new SnapshotException("snapshot_type Diff: this VM does not track dirty pages; set track_dirty_pages in machine-config before it starts (or in snapshot/load)");
        }
        // A Diff onto the previous snapshot's memory file makes that file all of RAM as of now;
        // a Diff to a new file is a layer holding only the pages written since.
        bool onto = kind == SnapshotKind.Diff && File.Exists(memPath);
        var clock = Stopwatch.StartNew();
        string memTemp = memPath + ".part", stateTemp = snapshotPath + ".part";
        long written = 0;
        try
        {
            var state = machine.SaveState(() =>
            {
                var dirty = tracker?.Collect(); // for a Full one: what it writes is the new base
                written = kind == SnapshotKind.Full
                    ? MemoryFile.WriteFull(machine.Memory, memTemp)
                    : MemoryFile.WriteDirty(machine.Memory, dirty!, onto ? memPath : memTemp, existing: onto);
            });
            var bytes = SnapshotFile.Encode(state, SnapshotFile.LayoutOf(machine.Memory, onto ? SnapshotKind.Full : kind));
            File.WriteAllBytes(stateTemp, bytes);
            if (!onto)
            {
                File.Move(memTemp, memPath, overwrite: true);
            }
            File.Move(stateTemp, snapshotPath, overwrite: true);
            tracker?.Commit(); // only now: a snapshot that failed leaves its pages for the next one
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SnapshotException($"snapshot_path {snapshotPath}: {e.Message}");
        }
        finally
        {
            File.Delete(memTemp);
            File.Delete(stateTemp);
        }
        return new SnapshotResult(snapshotPath, memPath, written, clock.Elapsed);
    }

    /// <summary>
    /// Builds the machine a snapshot describes, its RAM mapped copy-on-write from the memory file
    /// (lazy: pages are read when the guest first touches them). Throws <see cref="SnapshotException"/>
    /// naming what is wrong; nothing is left open then. The caller owns the returned files.
    /// </summary>
    public static (Machine Machine, VmFiles Files) Load(string snapshotPath, string memPath, Action<byte> serialOut, bool resume, bool? trackDirtyPages = null)
    {
        var (state, layout, devices) = SnapshotFile.ReadWithDevicesAside(snapshotPath);
        if (layout.Kind == SnapshotKind.Diff)
        {
            throw new SnapshotException($"snapshot_path {snapshotPath} is a Diff snapshot whose memory file holds only the pages written since the snapshot before it; load a Full one, or a Diff taken onto the previous snapshot's memory file");
        }
        if (trackDirtyPages is { } track)
        {
            state = state with { Config = state.Config with { TrackDirtyPages = track } };
        }
        var memFile = MemoryFile.OpenForRestore(memPath, layout.RamBytes);
        VmFiles? files = null;
        GuestMemory memory;
        try
        {
            files = VmFiles.OpenForRestore(state.Config);
            memory = GuestMemory.FromFile(memFile, layout.RamBytes, shared: false);
            memFile = null; // the memory owns it now, and the restore owns the memory (it disposes it if it fails)
            // The VM is built while the devices' section is still being decoded (ReadWithDevicesAside).
            var prepared = MachineBuilder.Prepare(state.Config, files, memory, serialOut);
            DevicesState decoded;
            try
            {
                // Its threads too, parked, while the devices' section may still be decoding: Run then only lets them go.
                prepared.StartVcpusParked();
                decoded = devices();
            }
            catch
            {
                prepared.Dispose();
                throw;
            }
            var machine = prepared.Apply(state with { Devices = decoded }, resume);
            return (machine, files);
        }
        catch (Exception e)
        {
            memFile?.Dispose();
            files?.Dispose();
            if (e is VmConfigException)
            {
                // The config is the snapshot's: a disk that is gone or a vCPU count past this host's KVM is the snapshot's problem.
                throw new SnapshotException($"config: {e.Message}");
            }
            throw;
        }
    }
}
