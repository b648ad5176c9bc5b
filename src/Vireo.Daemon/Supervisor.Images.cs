using System.Collections.Concurrent;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;
using Vireo.Api;
using Vireo.Interop;

namespace Vireo.Daemon;

/// <summary>
/// Save and restore (xl save, xl restore) and snapshots (virsh snapshot-create, -list, -revert,
/// -delete), each a PUT /snapshot/create or /snapshot/load to a VMM, under the VM's lock. A failed
/// save leaves the VM running; a failed restore leaves the file and the VM's state as they were.
/// </summary>
internal sealed partial class Supervisor
{
    private readonly ConcurrentDictionary<string, Job> _jobs = new();

    /// <summary>A snapshot being written: the VMM writes RAM to MEM.part, then renames it to MEM.</summary>
    private sealed record Job(string Operation, string MemPath, long Total);

    /// <summary>A refusal: the HTTP status and the reason, in the operator's words.</summary>
    public readonly record struct Refusal(int Status, string Why);

    [GeneratedRegex("^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")]
    private static partial Regex SnapshotName();

    /// <summary>What a snapshot name must be (it names two files in the VM's directory), or null when it is one.</summary>
    public static string? CheckSnapshotName(string name) => SnapshotName().IsMatch(name) ? null
        : $"'{name}' is not a snapshot name: 1 to 64 letters, digits, '.', '_' or '-', not starting with '.' or '-' (no '/')";

    public string? LatestSave(int vmId) => _store.LatestSave(vmId);

    /// <summary>The save or snapshot being written for the VM: bytes its RAM file holds so far (sparse: allocated blocks).</summary>
    public OperationProgress ProgressOf(string name)
    {
        if (MigrationProgressOf(name) is { } migrating)
        {
            return migrating;
        }
        if (!_jobs.TryGetValue(name, out var job))
        {
            return new OperationProgress(null, 0, 0);
        }
        long done = Libc.AllocatedBytesAt(job.MemPath + ".part") ?? Libc.AllocatedBytesAt(job.MemPath) ?? 0;
        return new OperationProgress(job.Operation, Math.Min(done, job.Total), job.Total);
    }

    /// <summary>xl save: pauses the VM, writes FILE and FILE.mem, and ends its VMM; the VM is then "saved".</summary>
    public Refusal? Save(string name, string file)
    {
        if (CheckNewSave(file) is { } bad)
        {
            return new Refusal(400, bad);
        }
        lock (LockFor(name))
        {
            if (Snapshotable(name, "saved") is { } refused)
            {
                return refused;
            }
            var vm = _store.Get(name)!;
            var a = _running[name];
            string mem = SaveRequest.MemoryFileOf(file);
            // A sandboxed VMM reaches only its own directory: it writes the save there, and vireod moves it out.
            string stateAt = file, memAt = mem;
            if (_sandboxFirstUid is not null)
            {
                string staging = Path.Combine(VmDir(name), "saving");
                VmDirEntries.Directory0700(staging);
                GiveToSandbox(name, staging);
                stateAt = Path.Combine(staging, "state");
                memAt = SaveRequest.MemoryFileOf(stateAt);
            }
            if (TakeSnapshot(name, a, vm, "save", stateAt, memAt, keepRunning: false) is { } error)
            {
                return new Refusal(409, $"'{name}' was not saved (it runs on): {error}");
            }
            string? notMoved = _sandboxFirstUid is null ? null
                : TakeOutSave(name, Path.GetDirectoryName(stateAt)!, (Path.GetFileName(memAt), mem), (Path.GetFileName(stateAt), file));
            string? sha = notMoved is null ? Sha256(file) : null;
            if (notMoved is not null || sha is null)
            {
                // The VMM wrote no save vireod can keep (a sandboxed one may have written anything): none is left, and the VM goes on.
                string why = notMoved ?? $"{file} is not a state file vireod can keep (a regular file of at most {StateFileLimit >> 20} MiB)";
                if (notMoved is null)
                {
                    File.Delete(file);
                    File.Delete(mem);
                }
                string? notResumed = vm.State == DomainState.Paused ? null : a.Api.Patch("vm", JsonSerializer.Serialize(new VmStatePatch(VmStatePatch.Resumed), VmmJson.Default.VmStatePatch));
                return new Refusal(409, $"'{name}' was not saved ({(notResumed is null ? "it runs on" : $"and it could not be resumed: {notResumed}")}): {why}");
            }
            _store.AddImage(ImageRecord.Save, vm, null, file, sha, vm.Run!, DateTime.UtcNow);
            Destroy(name, a, "saved", $"saved to {file}", DomainState.Saved);
            return null;
        }
    }

    /// <summary>xl restore: a fresh VMM loads FILE (and FILE.mem) and runs the VM it belongs to. Returns that VM's name.</summary>
    /// <param name="tenant">the caller's tenant, when it is not an admin: a save of another tenant's VM is refused as a file vireod does not know</param>
    public (string? Name, Refusal? Refused) Restore(string file, string? tenant = null)
    {
        if (!Path.IsPathFullyQualified(file))
        {
            return (null, new Refusal(400, $"file: '{file}' is not an absolute path"));
        }
        if (Directory.Exists(file))
        {
            return (null, new Refusal(400, $"file: {file} is a directory, not a save"));
        }
        if (!File.Exists(file))
        {
            return (null, new Refusal(400, $"file: {file}: no such file"));
        }
        var (sha, unreadable) = HashStateFile(file);
        if (sha is null)
        {
            return (null, new Refusal(400, $"file: {file} {unreadable}"));
        }
        if (_store.FindSave(sha) is not { } save || (tenant is not null && (save.VmId is not { } vmId || _store.ById(vmId)?.Tenant != tenant)))
        {
            return (null, new Refusal(400, $"file: {file} is not a save this vireod made, or it has been changed since (a save is known by its content)"));
        }
        if (_store.All().FirstOrDefault(v => v.Id == save.VmId) is not { } vm)
        {
            return (null, new Refusal(409, $"file: {file} is a save of '{save.VmName}', which has been undefined since"));
        }
        string mem = SaveRequest.MemoryFileOf(file);
        if (!File.Exists(mem))
        {
            return (null, new Refusal(400, $"file: {file}: its RAM file {mem} is missing (a save is FILE and FILE.mem beside it)"));
        }
        return (vm.Name, Load(vm.Name, save, file, mem, replace: null));
    }

    /// <summary>A snapshot of a running VM, kept in its directory; the VM runs on (a paused one stays paused).</summary>
    public (SnapshotInfo? Info, Refusal? Refused) CreateSnapshot(string name, string? snapshot)
    {
        if (snapshot is not null && CheckSnapshotName(snapshot) is { } bad)
        {
            return (null, new Refusal(400, $"name: {bad}"));
        }
        lock (LockFor(name))
        {
            if (Snapshotable(name, "snapshotted") is { } refused)
            {
                return (null, refused);
            }
            var vm = _store.Get(name)!;
            if (snapshot is null)
            {
                snapshot = DateTime.UtcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture);
                for (int n = 2; _store.Snapshot(vm.Id, snapshot) is not null; n++)
                {
                    snapshot = $"{DateTime.UtcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture)}-{n}";
                }
            }
            if (_store.Snapshot(vm.Id, snapshot) is not null)
            {
                return (null, new Refusal(409, $"name: '{name}' already has a snapshot named '{snapshot}'"));
            }
            var (state, mem) = SnapshotFiles(name, snapshot);
            VmDirEntries.Directory0700(Path.GetDirectoryName(state)!); // never a link a sandboxed VMM left in its directory
            GiveToSandbox(name, Path.GetDirectoryName(state)!); // its VMM writes there
            File.Delete(state); // left by a snapshot whose row never was written (a daemon killed while taking it)
            File.Delete(mem);
            if (TakeSnapshot(name, _running[name], vm, "snapshot", state, mem, keepRunning: true) is { } error)
            {
                return (null, new Refusal(409, $"'{name}': no snapshot taken: {error}"));
            }
            var now = DateTime.UtcNow;
            if (Sha256(state) is not { } sha)
            {
                File.Delete(state); // a sandboxed VMM may have written anything there
                File.Delete(mem);
                return (null, new Refusal(409, $"'{name}': no snapshot kept: its state file is not one vireod can keep (a regular file of at most {StateFileLimit >> 20} MiB)"));
            }
            _store.AddImage(ImageRecord.Snapshot, vm, snapshot, state, sha, vm.Run!, now);
            _events.Publish(name, "snapshot-created", _store.Get(name)?.State ?? DomainState.Running, $"snapshot '{snapshot}'");
            return (Info(name, _store.Snapshot(vm.Id, snapshot)!), null);
        }
    }

    /// <summary>The VM's snapshots, oldest first; null when there is no such VM.</summary>
    public SnapshotInfo[]? ListSnapshots(string name) =>
        _store.Get(name) is { } vm ? [.. _store.Snapshots(vm.Id).Select(s => Info(name, s))] : null;

    /// <summary>Ends the VM's VMM, if it runs, and runs the snapshot in a fresh one. The snapshot is checked first: a bad one ends nothing.</summary>
    public Refusal? RevertSnapshot(string name, string snapshot)
    {
        lock (LockFor(name))
        {
            if (FindSnapshot(name, snapshot) is not { } found)
            {
                return SnapshotMissing(name, snapshot);
            }
            var (state, mem) = SnapshotFiles(name, snapshot);
            if (!File.Exists(mem) || Sha256(state) != found.Sha256)
            {
                return new Refusal(409, $"snapshot: '{snapshot}' of '{name}' is damaged (its files are missing or changed): delete it");
            }
            return Load(name, found, state, mem, replace: snapshot);
        }
    }

    public Refusal? DeleteSnapshot(string name, string snapshot)
    {
        lock (LockFor(name))
        {
            if (FindSnapshot(name, snapshot) is not { } found)
            {
                return SnapshotMissing(name, snapshot);
            }
            var (state, mem) = SnapshotFiles(name, snapshot);
            File.Delete(state);
            File.Delete(mem);
            _store.DeleteImage(found.Id);
            _events.Publish(name, "snapshot-deleted", _store.Get(name)?.State ?? DomainState.ShutOff, $"snapshot '{snapshot}'");
            return null;
        }
    }

    private ImageRecord? FindSnapshot(string name, string snapshot) =>
        CheckSnapshotName(snapshot) is null && _store.Get(name) is { } vm ? _store.Snapshot(vm.Id, snapshot) : null;

    private Refusal SnapshotMissing(string name, string snapshot) =>
        CheckSnapshotName(snapshot) is { } bad ? new Refusal(400, $"snapshot: {bad}")
        : _store.Get(name) is null ? new Refusal(404, $"no VM named '{name}'")
        : new Refusal(404, $"snapshot: '{name}' has no snapshot named '{snapshot}'");

    private (string State, string Mem) SnapshotFiles(string name, string snapshot)
    {
        string dir = Path.Combine(VmDir(name), "snapshots");
        return (Path.Combine(dir, snapshot + ".snap"), Path.Combine(dir, snapshot + ".mem"));
    }

    private SnapshotInfo Info(string name, ImageRecord s)
    {
        var (state, mem) = SnapshotFiles(name, s.Name!);
        return new SnapshotInfo(s.Name!, s.CreatedAt, (Libc.AllocatedBytesAt(state) ?? 0) + (Libc.AllocatedBytesAt(mem) ?? 0), s.MemoryMib);
    }

    /// <summary>Why the VM cannot be saved or snapshotted now (called under its lock), or null.</summary>
    private Refusal? Snapshotable(string name, string what)
    {
        if (_store.Get(name) is not { } vm)
        {
            return new Refusal(404, $"no VM named '{name}'");
        }
        if (!_running.ContainsKey(name))
        {
            return new Refusal(409, $"'{name}' is {vm.State}: only a running or paused VM can be {what}");
        }
        if (vm.Run is null)
        {
            return new Refusal(409, $"'{name}' was started by an older vireod, which did not record its files: restart it to have it {what}");
        }
        return null;
    }

    /// <summary>
    /// Pauses the VM (unless it is), has its VMM write the snapshot, and resumes it if it ran and
    /// either <paramref name="keepRunning"/> or the snapshot failed. Null when written, else the VMM's reason.
    /// </summary>
    private string? TakeSnapshot(string name, Attached a, VmRecord vm, string operation, string statePath, string memPath, bool keepRunning)
    {
        bool wasPaused = vm.State == DomainState.Paused;
        string patch(string state) => JsonSerializer.Serialize(new VmStatePatch(state), VmmJson.Default.VmStatePatch);
        if (!wasPaused && a.Api.Patch("vm", patch(VmStatePatch.Paused)) is { } notPaused)
        {
            return notPaused;
        }
        _jobs[name] = new Job(operation, memPath, vm.Run!.Definition.MemoryMib << 20);
        string? error;
        try
        {
            error = a.Api.PutLong("snapshot/create", JsonSerializer.Serialize(
                new SnapshotCreateParams(statePath, memPath, SnapshotCreateParams.Full), VmmJson.Default.SnapshotCreateParams));
        }
        finally
        {
            _jobs.TryRemove(name, out _);
        }
        if (!wasPaused && (error is not null || keepRunning) && a.Api.Patch("vm", patch(VmStatePatch.Resumed)) is { } notResumed)
        {
            error = error is null ? $"the snapshot was taken, but the VM could not be resumed: {notResumed}" : $"{error}; and it could not be resumed: {notResumed}";
        }
        return error;
    }

    /// <summary>
    /// A fresh VMM for the VM, loading <paramref name="statePath"/>: a restore (refused while the VM
    /// runs), or a revert to snapshot <paramref name="replace"/>, which first ends the VMM that runs.
    /// </summary>
    private Refusal? Load(string name, ImageRecord image, string statePath, string memPath, string? replace)
    {
        lock (LockFor(name))
        {
            if (_store.Get(name) is not { } vm || vm.Id != image.VmId)
            {
                return new Refusal(409, $"'{name}' was renamed or undefined meanwhile: try again");
            }
            if (_running.TryGetValue(name, out var a))
            {
                if (replace is null)
                {
                    return new Refusal(409, $"'{name}' is {vm.State}: destroy or save it before restoring it");
                }
                Destroy(name, a, "stopped", $"ended to revert to snapshot '{replace}'");
            }
            if (Admit(name, image.Run.Definition.MemoryMib) is { } refused)
            {
                return new Refusal(409, refused);
            }
            bool loadRefused = false;
            string what = replace is null ? $"restored from {statePath}" : $"reverted to snapshot '{replace}'";
            // A sandboxed VMM is handed the two files open: its uid may not read them, nor its root reach their paths.
            List<HandedOver>? handOver = null;
            if (_sandboxFirstUid is not null)
            {
                handOver = [];
                try
                {
                    foreach (var (field, path) in new[] { (StateField, statePath), (MemField, memPath) })
                    {
                        // A snapshot lies in the VM's directory, which its uid owns: never a link left there.
                        var opened = FileDescriptor.Open(path, Libc.O_RDONLY | Libc.O_NONBLOCK | Libc.O_NOCTTY | (replace is null ? 0 : OpenAt2.O_NOFOLLOW));
                        handOver.Add(new(field, path, opened));
                        if (Libc.StatOf(opened.Fd) is { Kind: not FileKind.Regular } stat)
                        {
                            throw new SysError($"{path} is {stat.Described}, not a regular file: open", Libc.EINVAL); // never a directory handed into the jail
                        }
                    }
                }
                catch (SysError e)
                {
                    handOver.ForEach(h => h.Dispose());
                    _committed.TryRemove(name, out _);
                    return new Refusal(400, $"{(replace is null ? "file" : "snapshot")}: {e.Message}");
                }
            }
            string? failed = Launch(name, image.Run.Definition, image.Run.Fds, (api, paths) =>
            {
                string? error = VmmLauncher.Load(api, paths.GetValueOrDefault(StateField, statePath), paths.GetValueOrDefault(MemField, memPath));
                loadRefused = error is not null;
                return error;
            }, replace is null ? "restored" : "reverted", what, handOver: handOver);
            if (failed is null)
            {
                return null;
            }
            _committed.TryRemove(name, out _);
            return loadRefused
                ? new Refusal(400, $"{(replace is null ? $"file: {statePath}" : $"snapshot: '{replace}'")} could not be loaded: {failed}")
                : new Refusal(409, $"'{name}' could not be {(replace is null ? "restored" : "reverted")}: {failed}");
        }
    }

    /// <summary>A sandboxed VMM's save, moved from its directory to the operator's paths (RAM first); why not, with nothing left there, or null.</summary>
    private string? TakeOutSave(string name, string staging, params (string Name, string To)[] files)
    {
        var taken = new List<string>();
        try
        {
            foreach (var (file, to) in files)
            {
                VmDirEntries.TakeOut(staging, file, to, SandboxUid(name));
                taken.Add(to);
            }
            return null;
        }
        catch (Exception e) when (e is IOException or SysError or UnauthorizedAccessException)
        {
            taken.ForEach(File.Delete);
            return $"it could not be moved from the VM's directory to {files[^1].To}: {e.Message}";
        }
    }

    /// <summary>The fields of a snapshot's two files among a new VMM's paths, when they are handed to it open.</summary>
    private const string StateField = "snapshot_path", MemField = "mem_backend.backend_path";

    /// <summary>Why <paramref name="file"/> cannot be a new save, in the field's name, or null.</summary>
    private static string? CheckNewSave(string file)
    {
        if (file.Length == 0 || !Path.IsPathFullyQualified(file))
        {
            return $"file: '{file}' is not an absolute path";
        }
        if (file.EndsWith('/') || Directory.Exists(file))
        {
            return $"file: {file} is a directory; name a file (its RAM goes beside it, in {SaveRequest.MemoryFileOf(file.TrimEnd('/'))})";
        }
        string? parent = Path.GetDirectoryName(file);
        if (parent is null || !Directory.Exists(parent))
        {
            return $"file: {file}: its directory {parent} does not exist";
        }
        foreach (string f in new[] { file, SaveRequest.MemoryFileOf(file) })
        {
            if (Libc.KindAt(f) is not null)
            {
                return $"file: {f} exists: a save never overwrites; remove it or name another file";
            }
        }
        return null;
    }

    /// <summary>A save's state file is the VM's config, registers and device state: far below this.</summary>
    private const long StateFileLimit = 64L << 20;

    /// <summary>
    /// The SHA-256 of a regular file no larger than <see cref="StateFileLimit"/>, checked on the opened
    /// file (opened non-blocking: a FIFO would wait for a writer, /dev/zero never end); else why not.
    /// </summary>
    private static (string? Sha256, string? Why) HashStateFile(string path)
    {
        try
        {
            using var fd = FileDescriptor.Open(path, Libc.O_RDONLY | Libc.O_NONBLOCK | Libc.O_NOCTTY);
            var stat = Libc.StatOf(fd.Fd);
            if (stat.Kind != FileKind.Regular)
            {
                return (null, $"is {stat.Described}, not a save");
            }
            if (stat.Size > StateFileLimit)
            {
                return (null, $"is {stat.Size} bytes: no save's state file is larger than {StateFileLimit >> 20} MiB");
            }
            using var stream = new FileStream(new Microsoft.Win32.SafeHandles.SafeFileHandle(fd.DangerousGetHandle(), ownsHandle: false), FileAccess.Read);
            return (Convert.ToHexStringLower(SHA256.HashData(stream)), null);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or SysError)
        {
            return (null, $"cannot be read: {e.Message}");
        }
    }

    private static string? Sha256(string path) => HashStateFile(path).Sha256;
}
