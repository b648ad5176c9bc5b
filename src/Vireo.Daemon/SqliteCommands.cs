using Microsoft.Data.Sqlite;

namespace Vireo.Daemon;

/// <summary>A statement with its named parameters, for the stores that share vireo.db (VMs, users and tenants).</summary>
internal static class SqliteCommands
{
    public static SqliteCommand Command(this SqliteConnection db, string sql, params (string Name, object Value)[] args)
    {
        var cmd = db.CreateCommand();
        cmd.CommandText = sql;
        foreach (var (n, v) in args)
        {
            cmd.Parameters.AddWithValue(n, v);
        }
        return cmd;
    }

    /// <summary>Runs a statement; the number of rows it changed.</summary>
    public static int Exec(this SqliteConnection db, string sql, params (string Name, object Value)[] args)
    {
        using var cmd = db.Command(sql, args);
        return cmd.ExecuteNonQuery();
    }
}
