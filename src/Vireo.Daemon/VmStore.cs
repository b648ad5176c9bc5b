using System.Text.Json;
using Microsoft.Data.Sqlite;
using Vireo.Api;

namespace Vireo.Daemon;

/// <summary>One row of the store: a VM's definition and where its VMM process is, if running.</summary>
internal sealed record VmRecord(string Name, int Id, VmDefinition Definition, string State, int? Pid, long? PidStartTime, DateTime? StartedAt, string? LastExit);

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
    }

    public IReadOnlyList<VmRecord> All() => Query("ORDER BY id");

    public VmRecord? Get(string name) => Query("WHERE name = $n", ("$n", name)).SingleOrDefault();

    private List<VmRecord> Query(string clause, params (string Name, object Value)[] args)
    {
        lock (_lock)
        {
            using var cmd = _db.CreateCommand();
            cmd.CommandText = $"SELECT name, id, definition, state, pid, pid_start_time, started_at, last_exit FROM vms {clause}";
            foreach (var (n, v) in args)
            {
                cmd.Parameters.AddWithValue(n, v);
            }
            using var r = cmd.ExecuteReader();
            var list = new List<VmRecord>();
            while (r.Read())
            {
                list.Add(new VmRecord(r.GetString(0), r.GetInt32(1),
                    JsonSerializer.Deserialize(r.GetString(2), DaemonJson.Default.VmDefinition)!,
                    r.GetString(3), r.IsDBNull(4) ? null : r.GetInt32(4), r.IsDBNull(5) ? null : r.GetInt64(5),
                    r.IsDBNull(6) ? null : DateTime.Parse(r.GetString(6), null, System.Globalization.DateTimeStyles.RoundtripKind),
                    r.IsDBNull(7) ? null : r.GetString(7)));
            }
            return list;
        }
    }

    /// <summary>Adds a definition; false when the name is taken.</summary>
    public bool Define(VmDefinition def)
    {
        lock (_lock)
        {
            using var cmd = _db.CreateCommand();
            cmd.CommandText = "INSERT OR IGNORE INTO vms (name, id, definition, state) VALUES ($n, (SELECT COALESCE(MAX(id), 0) + 1 FROM vms), $d, $s)";
            cmd.Parameters.AddWithValue("$n", def.Name);
            cmd.Parameters.AddWithValue("$d", JsonSerializer.Serialize(def, DaemonJson.Default.VmDefinition));
            cmd.Parameters.AddWithValue("$s", DomainState.ShutOff);
            return cmd.ExecuteNonQuery() == 1;
        }
    }

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

    public bool Undefine(string name) => Exec("DELETE FROM vms WHERE name = $n", ("$n", name)) == 1;

    public void SetRunning(string name, int pid, long pidStartTime) =>
        Exec("UPDATE vms SET state = $s, pid = $p, pid_start_time = $t, started_at = $a WHERE name = $n",
            ("$s", DomainState.Running), ("$p", pid), ("$t", pidStartTime), ("$a", DateTime.UtcNow.ToString("O")), ("$n", name));

    /// <summary>
    /// A VMM spawned for the VM, not yet started (the state is unchanged): recorded before it is
    /// configured, so a daemon killed meanwhile finds it on restart and adopts or ends it.
    /// </summary>
    public void SetSpawned(string name, int pid, long pidStartTime) =>
        Exec("UPDATE vms SET pid = $p, pid_start_time = $t WHERE name = $n", ("$p", pid), ("$t", pidStartTime), ("$n", name));

    /// <summary>The recorded VMM is gone (a start that failed, or one abandoned by a daemon that died); the state is unchanged.</summary>
    public void ClearPid(string name) => Exec("UPDATE vms SET pid = NULL, pid_start_time = NULL WHERE name = $n", ("$n", name));

    public void SetState(string name, string state) => Exec("UPDATE vms SET state = $s WHERE name = $n", ("$s", state), ("$n", name));

    public void SetStopped(string name, string state, string lastExit) =>
        Exec("UPDATE vms SET state = $s, pid = NULL, pid_start_time = NULL, started_at = NULL, last_exit = $e WHERE name = $n",
            ("$s", state), ("$e", lastExit), ("$n", name));

    private int Exec(string sql, params (string Name, object Value)[] args)
    {
        lock (_lock)
        {
            using var cmd = _db.CreateCommand();
            cmd.CommandText = sql;
            foreach (var (n, v) in args)
            {
                cmd.Parameters.AddWithValue(n, v);
            }
            return cmd.ExecuteNonQuery();
        }
    }

    public void Dispose() => _db.Dispose();
}
