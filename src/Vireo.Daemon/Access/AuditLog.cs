using System.Diagnostics;
using System.Text.Json;

namespace Vireo.Daemon.Access;

/// <summary>
/// Every request that may change something (any method but GET and HEAD), refused or not, as one
/// JSON object a line in STATE/audit.log (0600), written once the answer is sent:
/// <c>{"time", "user", "tenant", "role", "client", "method", "path", "status", "duration_ms"}</c>
/// (who, what, when and the result), user, tenant and role null when the caller was not known (a
/// 401 or 403 at the door). Lines are appended whole, under a lock, and flushed each.
/// </summary>
internal sealed class AuditLog : IDisposable
{
    private readonly FileStream _file;
    private readonly Lock _lock = new();

    public AuditLog(string path)
    {
        _file = new FileStream(path, new FileStreamOptions
        {
            Mode = FileMode.Append,
            Access = FileAccess.Write,
            Share = FileShare.Read,
            UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        });
    }

    public async Task Invoke(HttpContext context, RequestDelegate next)
    {
        if (HttpMethods.IsGet(context.Request.Method) || HttpMethods.IsHead(context.Request.Method))
        {
            await next(context);
            return;
        }
        long start = Stopwatch.GetTimestamp();
        int? status = null;
        try
        {
            await next(context);
            status = context.Response.StatusCode;
        }
        finally
        {
            Write(context, status ?? 500, Stopwatch.GetElapsedTime(start).TotalMilliseconds);
        }
    }

    private void Write(HttpContext context, int status, double ms)
    {
        var caller = Caller.Find(context);
        using var line = new MemoryStream();
        using (var w = new Utf8JsonWriter(line))
        {
            w.WriteStartObject();
            w.WriteString("time", DateTime.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", System.Globalization.CultureInfo.InvariantCulture));
            w.WriteString("user", caller?.User);
            w.WriteString("tenant", caller?.Tenant);
            w.WriteString("role", caller?.Role);
            w.WriteString("client", caller?.Client ?? (context.Connection.RemoteIpAddress is { } ip ? $"{ip}:{context.Connection.RemotePort}" : "the unix socket"));
            w.WriteString("method", context.Request.Method);
            w.WriteString("path", context.Request.Path.Value);
            w.WriteNumber("status", status);
            w.WriteNumber("duration_ms", Math.Round(ms, 1));
            w.WriteEndObject();
        }
        line.WriteByte((byte)'\n');
        lock (_lock)
        {
            _file.Write(line.GetBuffer(), 0, (int)line.Length);
            _file.Flush();
        }
    }

    public void Dispose() => _file.Dispose();
}
