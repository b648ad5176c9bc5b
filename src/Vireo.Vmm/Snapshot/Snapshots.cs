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
        if (kind == SnapshotKind.Diff)
        {
            throw new SnapshotException("snapshot_type Diff is not supported yet: take a Full snapshot");
        }
        var clock = Stopwatch.StartNew();
        string memTemp = memPath + ".part", stateTemp = snapshotPath + ".part";
        long written = 0;
        try
        {
            var state = machine.SaveState(() => written = MemoryFile.WriteFull(machine.Memory, memTemp));
            var bytes = SnapshotFile.Encode(state, SnapshotFile.LayoutOf(machine.Memory, kind));
            File.WriteAllBytes(stateTemp, bytes);
            File.Move(memTemp, memPath, overwrite: true);
            File.Move(stateTemp, snapshotPath, overwrite: true);
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
    public static (Machine Machine, VmFiles Files) Load(string snapshotPath, string memPath, Action<byte> serialOut, bool resume)
    {
        var (state, layout) = SnapshotFile.Read(snapshotPath);
        var memFile = MemoryFile.OpenForRestore(memPath, layout.RamBytes);
        VmFiles? files = null;
        GuestMemory memory;
        try
        {
            files = VmFiles.OpenForRestore(state.Config);
            memory = GuestMemory.FromFile(memFile, layout.RamBytes, shared: false);
            memFile = null; // the memory owns it now, and the restore owns the memory (it disposes it if it fails)
            var machine = MachineBuilder.Restore(state, files, memory, serialOut, resume);
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
