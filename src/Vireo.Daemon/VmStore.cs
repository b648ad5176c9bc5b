using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.Data.Sqlite;
using Vireo.Api;

namespace Vireo.Daemon;

/// <summary>One row of the store: a VM's definition and where its VMM process is, if running.</summary>
internal sealed record VmRecord(string Name, int Id, VmDefinition Definition, string State, int? Pid, long? PidStartTime, DateTime? StartedAt, string? LastExit,
    RunRecord? Run = null, string Tenant = Tenants.Default);

/// <summary>
/// What a VMM was started with: the definition as it was then (it may be edited since) and the fd
/// number each image has in the VMM (`/proc/self/fd/N`, the paths its VM config and so its snapshots
/// hold). A restore gives a fresh VMM the same files on the same numbers.
/// </summary>
internal sealed record RunRecord(VmDefinition Definition, Dictionary<string, int> Fds);

/// <summary>
/// A save (kind "save": FILE and FILE.mem where the operator said) or a snapshot (kind "snapshot",
/// in the VM's directory), with the SHA-256 of its state file: a file is known by its content, so a
/// moved save is still recognised and a changed one is not. A save whose VM was undefined keeps its
/// row with no VM id, so that restoring it says so.
/// </summary>
internal sealed record ImageRecord(long Id, string Kind, int? VmId, string VmName, string? Name, string Path, string Sha256, RunRecord Run, DateTime CreatedAt, long MemoryMib)
{
    public const string Save = "save", Snapshot = "snapshot";
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower)]
[JsonSerializable(typeof(RunRecord))]
internal sealed partial class StoreJson : JsonSerializerContext;

/// <summary>
/// The daemon's state in SQLite (WAL): every defined VM and its running VMM process, so that a
/// restarted daemon finds the processes it left running. Every write is one statement.
/// </summary>
internal sealed class VmStore : IDisposable
{
    private readonly SqliteConnection _db;
    private readonly Lock _lock = new();

    public VmStore(string path)
    {
        _db = new SqliteConnection($"Data Source={path}");
        _db.Open();
        Exec("PRAGMA journal_mode=WAL");
        Exec("""
            CREATE TABLE IF NOT EXISTS vms (
                name TEXT PRIMARY KEY,
                id INTEGER NOT NULL UNIQUE,
                definition TEXT NOT NULL,
                state TEXT NOT NULL,
                pid INTEGER,
                pid_start_time INTEGER,
                started_at TEXT,
                last_exit TEXT)
            """);
        if (!Columns("vms").Contains("run"))
        {
            Exec("ALTER TABLE vms ADD COLUMN run TEXT"); // a store made by a vireod before save and snapshots
        }
        if (!Columns("vms").Contains("tenant"))
        {
            // A store made by a vireod before tenants: its VMs are the default tenant's.
            Exec($"ALTER TABLE vms ADD COLUMN tenant TEXT NOT NULL DEFAULT '{Tenants.Default}'");
        }
        Exec("""
            CREATE TABLE IF NOT EXISTS images (
                id INTEGER PRIMARY KEY,
                kind TEXT NOT NULL,
                vm_id INTEGER,
                vm_name TEXT NOT NULL,
                name TEXT,
                path TEXT NOT NULL,
                sha256 TEXT NOT NULL,
                run TEXT NOT NULL,
                created_at TEXT NOT NULL,
                memory_mib INTEGER NOT NULL)
            """);
    }

    private HashSet<string> Columns(string table)
    {
        lock (_lock)
        {
            using var cmd = _db.CreateCommand();
            cmd.CommandText = $"SELECT name FROM pragma_table_info('{table}')";
            using var r = cmd.ExecuteReader();
            var names = new HashSet<string>();
            while (r.Read())
            {
                names.Add(r.GetString(0));
            }
            return names;
        }
    }

    public IReadOnlyList<VmRecord> All() => Query("ORDER BY id");

    public VmRecord? Get(string name) => Query("WHERE name = $n", ("$n", name)).SingleOrDefault();

    /// <summary>The VM with this id, if it is still defined (a save names its VM by id).</summary>
    public VmRecord? ById(int id) => Query("WHERE id = $id", ("$id", id)).SingleOrDefault();

    /// <summary>How many VMs the tenant owns.</summary>
    public int CountOf(string tenant)
    {
        lock (_lock)
        {
            using var cmd = _db.Command("SELECT COUNT(*) FROM vms WHERE tenant = $t", ("$t", tenant));
            return Convert.ToInt32(cmd.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture);
        }
    }

    private List<VmRecord> Query(string clause, params (string Name, object Value)[] args)
    {
        lock (_lock)
        {
            using var cmd = _db.Command($"SELECT name, id, definition, state, pid, pid_start_time, started_at, last_exit, run, tenant FROM vms {clause}", args);
            using var r = cmd.ExecuteReader();
            var list = new List<VmRecord>();
            while (r.Read())
            {
                list.Add(new VmRecord(r.GetString(0), r.GetInt32(1),
                    JsonSerializer.Deserialize(r.GetString(2), DaemonJson.Default.VmDefinition)!,
                    r.GetString(3), r.IsDBNull(4) ? null : r.GetInt32(4), r.IsDBNull(5) ? null : r.GetInt64(5),
                    r.IsDBNull(6) ? null : DateTime.Parse(r.GetString(6), null, System.Globalization.DateTimeStyles.RoundtripKind),
                    r.IsDBNull(7) ? null : r.GetString(7),
                    r.IsDBNull(8) ? null : JsonSerializer.Deserialize(r.GetString(8), StoreJson.Default.RunRecord), r.GetString(9)));
            }
            return list;
        }
    }

    /// <summary>Adds a definition, the tenant's; false when the name is taken.</summary>
    public bool Define(VmDefinition def, string tenant) =>
        Exec("INSERT OR IGNORE INTO vms (name, id, definition, state, tenant) VALUES ($n, (SELECT COALESCE(MAX(id), 0) + 1 FROM vms), $d, $s, $t)",
            ("$n", def.Name), ("$d", JsonSerializer.Serialize(def, DaemonJson.Default.VmDefinition)), ("$s", DomainState.ShutOff), ("$t", tenant)) == 1;

    /// <summary>Replaces a definition (same name); it takes effect at the VM's next start.</summary>
    public bool Redefine(VmDefinition def) =>
        Exec("UPDATE vms SET definition = $d WHERE name = $n",
            ("$d", JsonSerializer.Serialize(def, DaemonJson.Default.VmDefinition)), ("$n", def.Name)) == 1;

    /// <summary>Renames a VM: its row and the name inside its definition, in one statement; false when there is none, or the new name is taken.</summary>
    public bool Rename(string name, string newName)
    {
        var vm = Get(name);
        try
        {
            return vm is not null && Exec("UPDATE vms SET name = $new, definition = $d WHERE name = $n",
                ("$new", newName), ("$d", JsonSerializer.Serialize(vm.Definition with { Name = newName }, DaemonJson.Default.VmDefinition)), ("$n", name)) == 1;
        }
        catch (SqliteException e) when (e.SqliteErrorCode == 19) // SQLITE_CONSTRAINT: the new name was taken meanwhile
        {
            return false;
        }
    }

    /// <summary>Forgets a VM: its snapshots' rows go (their files go with its directory); its saves stay, known as a VM's that was undefined.</summary>
    public bool Undefine(string name)
    {
        if (Get(name) is not { } vm)
        {
            return false;
        }
        Exec("DELETE FROM images WHERE vm_id = $id AND kind = $k", ("$id", vm.Id), ("$k", ImageRecord.Snapshot));
        Exec("UPDATE images SET vm_id = NULL, vm_name = $n WHERE vm_id = $id", ("$n", name), ("$id", vm.Id));
        return Exec("DELETE FROM vms WHERE name = $n", ("$n", name)) == 1;
    }

    public void SetRunning(string name, int pid, long pidStartTime) =>
        Exec("UPDATE vms SET state = $s, pid = $p, pid_start_time = $t, started_at = $a WHERE name = $n",
            ("$s", DomainState.Running), ("$p", pid), ("$t", pidStartTime), ("$a", DateTime.UtcNow.ToString("O")), ("$n", name));

    /// <summary>
    /// A VMM spawned for the VM, not yet started (the state is unchanged): recorded before it is
    /// configured, so a daemon killed meanwhile finds it on restart and adopts or ends it.
    /// </summary>
    public void SetSpawned(string name, int pid, long pidStartTime, RunRecord run) =>
        Exec("UPDATE vms SET pid = $p, pid_start_time = $t, run = $r WHERE name = $n",
            ("$p", pid), ("$t", pidStartTime), ("$r", JsonSerializer.Serialize(run, StoreJson.Default.RunRecord)), ("$n", name));

    /// <summary>The recorded VMM is gone (a start that failed, or one abandoned by a daemon that died); the state is unchanged.</summary>
    public void ClearPid(string name) => Exec("UPDATE vms SET pid = NULL, pid_start_time = NULL WHERE name = $n", ("$n", name));

    public void SetState(string name, string state) => Exec("UPDATE vms SET state = $s WHERE name = $n", ("$s", state), ("$n", name));

    public void SetStopped(string name, string state, string lastExit) =>
        Exec("UPDATE vms SET state = $s, pid = NULL, pid_start_time = NULL, started_at = NULL, last_exit = $e WHERE name = $n",
            ("$s", state), ("$e", lastExit), ("$n", name));

    public void AddImage(string kind, VmRecord vm, string? name, string path, string sha256, RunRecord run, DateTime createdAt) =>
        Exec("INSERT INTO images (kind, vm_id, vm_name, name, path, sha256, run, created_at, memory_mib) VALUES ($k, $id, $vn, $n, $p, $h, $r, $c, $m)",
            ("$k", kind), ("$id", vm.Id), ("$vn", vm.Name), ("$n", (object?)name ?? DBNull.Value), ("$p", path), ("$h", sha256),
            ("$r", JsonSerializer.Serialize(run, StoreJson.Default.RunRecord)), ("$c", createdAt.ToString("O")), ("$m", run.Definition.MemoryMib));

    /// <summary>The save whose state file has this SHA-256, the latest if several.</summary>
    public ImageRecord? FindSave(string sha256) => Images("WHERE kind = $k AND sha256 = $h ORDER BY id DESC LIMIT 1", ("$k", ImageRecord.Save), ("$h", sha256)).SingleOrDefault();

    /// <summary>Where the VM was last saved, or null.</summary>
    public string? LatestSave(int vmId) => Images("WHERE kind = $k AND vm_id = $id ORDER BY id DESC LIMIT 1", ("$k", ImageRecord.Save), ("$id", vmId)).SingleOrDefault()?.Path;

    public IReadOnlyList<ImageRecord> Snapshots(int vmId) => Images("WHERE kind = $k AND vm_id = $id ORDER BY id", ("$k", ImageRecord.Snapshot), ("$id", vmId));

    public ImageRecord? Snapshot(int vmId, string name) =>
        Images("WHERE kind = $k AND vm_id = $id AND name = $n", ("$k", ImageRecord.Snapshot), ("$id", vmId), ("$n", name)).SingleOrDefault();

    public bool DeleteImage(long id) => Exec("DELETE FROM images WHERE id = $id", ("$id", id)) == 1;

    private List<ImageRecord> Images(string clause, params (string Name, object Value)[] args)
    {
        lock (_lock)
        {
            using var cmd = _db.CreateCommand();
            cmd.CommandText = $"SELECT id, kind, vm_id, vm_name, name, path, sha256, run, created_at, memory_mib FROM images {clause}";
            foreach (var (n, v) in args)
            {
                cmd.Parameters.AddWithValue(n, v);
            }
            using var r = cmd.ExecuteReader();
            var list = new List<ImageRecord>();
            while (r.Read())
            {
                list.Add(new ImageRecord(r.GetInt64(0), r.GetString(1), r.IsDBNull(2) ? null : r.GetInt32(2), r.GetString(3),
                    r.IsDBNull(4) ? null : r.GetString(4), r.GetString(5), r.GetString(6),
                    JsonSerializer.Deserialize(r.GetString(7), StoreJson.Default.RunRecord)!,
                    DateTime.Parse(r.GetString(8), null, System.Globalization.DateTimeStyles.RoundtripKind), r.GetInt64(9)));
            }
            return list;
        }
    }

    private int Exec(string sql, params (string Name, object Value)[] args)
    {
        lock (_lock)
        {
            return _db.Exec(sql, args);
        }
    }

    public void Dispose() => _db.Dispose();
}
