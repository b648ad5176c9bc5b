using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.Data.Sqlite;
using Vireo.Api;

namespace Vireo.Daemon.Access;

/// <summary>A user as the store keeps it: the SHA-256 of its token, never the token.</summary>
internal sealed record UserRecord(string Name, string Tenant, string Role, uint? Uid, byte[] TokenSha256, DateTime CreatedAt)
{
    public UserInfo Info(string? token = null) => new(Name, Tenant, Role, Uid, CreatedAt, token);
}

/// <summary>A tenant as the store keeps it; the default tenant is not stored (its directories are vireod's --image-dir).</summary>
internal sealed record TenantRecord(string Name, string[] ImageDirs, DateTime? CreatedAt);

/// <summary>
/// Tenants and users in vireod's SQLite file (tables <c>tenants</c> and <c>users</c>, beside the
/// VMs'). A token is 32 random bytes shown once; what is kept is its SHA-256 (a token is not a
/// password: it has 256 bits of its own, so a slow hash would add nothing), and a presented token
/// is compared with every user's hash in constant time.
/// </summary>
internal sealed class AccessStore : IDisposable
{
    private readonly SqliteConnection _db;
    private readonly Lock _lock = new();
    private readonly string[] _defaultImageDirs;
    private readonly string _stateDir;

    public AccessStore(string path, string stateDir, IEnumerable<string> defaultImageDirs)
    {
        _stateDir = stateDir;
        _defaultImageDirs = [.. defaultImageDirs];
        _db = new SqliteConnection($"Data Source={path}");
        _db.Open();
        Exec("PRAGMA busy_timeout=5000");
        Exec("""
            CREATE TABLE IF NOT EXISTS tenants (
                name TEXT PRIMARY KEY,
                image_dirs TEXT NOT NULL,
                created_at TEXT NOT NULL)
            """);
        Exec("""
            CREATE TABLE IF NOT EXISTS users (
                name TEXT PRIMARY KEY,
                tenant TEXT NOT NULL,
                role TEXT NOT NULL,
                uid INTEGER UNIQUE,
                token_sha256 BLOB NOT NULL UNIQUE,
                created_at TEXT NOT NULL)
            """);
    }

    /// <summary>Where a tenant's images go when it is given no directories.</summary>
    public string DefaultImageDirOf(string tenant) => Path.Combine(_stateDir, "tenants", tenant, "images") + "/";

    public IReadOnlyList<TenantRecord> Tenants()
    {
        var list = new List<TenantRecord> { new(Api.Tenants.Default, _defaultImageDirs, null) };
        lock (_lock)
        {
            using var cmd = _db.CreateCommand();
            cmd.CommandText = "SELECT name, image_dirs, created_at FROM tenants ORDER BY name";
            using var r = cmd.ExecuteReader();
            while (r.Read())
            {
                list.Add(new TenantRecord(r.GetString(0), JsonSerializer.Deserialize(r.GetString(1), AccessJson.Default.StringArray)!, Time(r.GetString(2))));
            }
        }
        return list;
    }

    public TenantRecord? Tenant(string name) => Tenants().FirstOrDefault(t => t.Name == name);

    /// <summary>The directories a tenant's images lie beneath (each ending in '/').</summary>
    public List<string> ImageDirsOf(string tenant) => Tenant(tenant)?.ImageDirs.ToList() ?? [];

    /// <summary>Adds a tenant; false when the name is taken.</summary>
    public bool AddTenant(string name, string[] imageDirs) =>
        Exec("INSERT OR IGNORE INTO tenants (name, image_dirs, created_at) VALUES ($n, $d, $c)",
            ("$n", name), ("$d", JsonSerializer.Serialize(imageDirs, AccessJson.Default.StringArray)), ("$c", DateTime.UtcNow.ToString("O"))) == 1;

    public bool RemoveTenant(string name) => Exec("DELETE FROM tenants WHERE name = $n", ("$n", name)) == 1;

    public IReadOnlyList<UserRecord> Users() => QueryUsers("ORDER BY name");

    public UserRecord? User(string name) => QueryUsers("WHERE name = $n", ("$n", name)).SingleOrDefault();

    public UserRecord? UserByUid(uint uid) => QueryUsers("WHERE uid = $u", ("$u", (long)uid)).SingleOrDefault();

    /// <summary>Adds a user with a fresh token, which is returned (and not kept); null when the name or the uid is taken.</summary>
    public (UserRecord? User, string? Token) AddUser(string name, string tenant, string role, uint? uid)
    {
        string token = NewToken();
        var user = new UserRecord(name, tenant, role, uid, Hash(token), DateTime.UtcNow);
        try
        {
            return Exec("INSERT OR IGNORE INTO users (name, tenant, role, uid, token_sha256, created_at) VALUES ($n, $t, $r, $u, $h, $c)",
                ("$n", name), ("$t", tenant), ("$r", role), ("$u", uid is { } u ? (long)u : DBNull.Value), ("$h", user.TokenSha256),
                ("$c", user.CreatedAt.ToString("O"))) == 1 ? (user, token) : (null, null);
        }
        catch (SqliteException e) when (e.SqliteErrorCode == 19) // the uid is another user's
        {
            return (null, null);
        }
    }

    /// <summary>Gives a user a new token (the old one stops working); null when there is no such user.</summary>
    public string? NewTokenFor(string name)
    {
        string token = NewToken();
        return Exec("UPDATE users SET token_sha256 = $h WHERE name = $n", ("$h", Hash(token)), ("$n", name)) == 1 ? token : null;
    }

    public bool RemoveUser(string name) => Exec("DELETE FROM users WHERE name = $n", ("$n", name)) == 1;

    /// <summary>
    /// The user whose token has this SHA-256 (<see cref="Hash"/>), or null. Every user's hash is compared, each in constant time,
    /// so neither the answer's time nor its path says how much of a token was right, or whose it was.
    /// </summary>
    public UserRecord? UserByTokenHash(byte[] hash)
    {
        UserRecord? found = null;
        foreach (var u in Users())
        {
            if (CryptographicOperations.FixedTimeEquals(hash, u.TokenSha256))
            {
                found = u;
            }
        }
        return found;
    }

    public static byte[] Hash(string token) => SHA256.HashData(Encoding.UTF8.GetBytes(token));

    /// <summary>"vireo_" and 32 random bytes, base64url: a token is told apart from other secrets by its prefix.</summary>
    private static string NewToken() =>
        "vireo_" + Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    private List<UserRecord> QueryUsers(string clause, params (string Name, object Value)[] args)
    {
        lock (_lock)
        {
            using var cmd = _db.Command($"SELECT name, tenant, role, uid, token_sha256, created_at FROM users {clause}", args);
            using var r = cmd.ExecuteReader();
            var list = new List<UserRecord>();
            while (r.Read())
            {
                list.Add(new UserRecord(r.GetString(0), r.GetString(1), r.GetString(2), r.IsDBNull(3) ? null : (uint)r.GetInt64(3),
                    (byte[])r.GetValue(4), Time(r.GetString(5))));
            }
            return list;
        }
    }

    private static DateTime Time(string s) => DateTime.Parse(s, null, System.Globalization.DateTimeStyles.RoundtripKind);

    private int Exec(string sql, params (string Name, object Value)[] args)
    {
        lock (_lock)
        {
            return _db.Exec(sql, args);
        }
    }

    public void Dispose() => _db.Dispose();
}

[System.Text.Json.Serialization.JsonSerializable(typeof(string[]))]
internal sealed partial class AccessJson : System.Text.Json.Serialization.JsonSerializerContext;
