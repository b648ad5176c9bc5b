using System.Text.Json;
using System.Text.Json.Serialization.Metadata;

namespace Vireo.Api;

/// <summary>
/// Reads a PUT body into T, or says in the user's words what is wrong with it: malformed JSON and
/// its byte, a field that is unknown, missing or of the wrong kind, each named as the API names it
/// ("machine-config: mem_size_mib is required"). The checks are driven by the source-generated
/// metadata of T, so every contract gets them; the deserializer's own messages (which name .NET
/// types) never reach a client. Both APIs use it: vireo-vmm's PUT bodies and vireod's small
/// request bodies (shutdown, rename).
/// </summary>
public static class BodyReader
{
    /// <summary>
    /// Null and <paramref name="value"/> set when the body is a valid T; else the reason. Never
    /// throws: whatever the reader or deserializer still refuses is a reason in words too.
    /// </summary>
    public static string? TryRead<T>(byte[] body, JsonTypeInfo<T> type, string what, out T? value)
    {
        value = default;
        try
        {
            return Read(body, type, what, out value);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or ArgumentException or FormatException)
        {
            value = default;
            return $"{what}: the body does not match the {what} fields";
        }
    }

    private static string? Read<T>(byte[] body, JsonTypeInfo<T> type, string what, out T? value)
    {
        value = default;
        if (body.AsSpan().Trim(" \t\r\n"u8).IsEmpty)
        {
            return "body: empty; a JSON object is expected";
        }
        // Before JSON: the reader would pass invalid UTF-8 in a string, and reading that string later throws.
        if (InvalidUtf8At(body) is { } bad)
        {
            return $"body: invalid UTF-8 at byte {bad}";
        }
        if (SyntaxError(body) is { } syntax)
        {
            return syntax;
        }
        using var doc = JsonDocument.Parse(body);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object)
        {
            return $"body: a JSON object is expected, got {Describe(root)}";
        }
        var known = new Dictionary<string, JsonPropertyInfo>(StringComparer.Ordinal);
        foreach (var p in type.Properties)
        {
            known[p.Name] = p;
        }
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var field in root.EnumerateObject())
        {
            if (!known.TryGetValue(field.Name, out var p))
            {
                return $"{what}: unknown field '{Clip(field.Name)}' (known: {string.Join(", ", known.Keys)})";
            }
            if (!seen.Add(field.Name))
            {
                return $"{what}: {field.Name} is given twice";
            }
            if (KindError(field.Value, p.PropertyType, p.IsRequired) is { } kind)
            {
                return $"{what}: {field.Name} must be {kind}, got {Describe(field.Value)}";
            }
        }
        foreach (var p in type.Properties)
        {
            if (p.IsRequired && !seen.Contains(p.Name))
            {
                return $"{what}: {p.Name} is required";
            }
        }
        try
        {
            value = JsonSerializer.Deserialize(body, type);
        }
        catch (JsonException)
        {
            // Everything the deserializer checks was checked above; if it still refuses, say so without its words.
            return $"{what}: the body does not match the {what} fields";
        }
        return value is null ? $"body: a JSON object is expected, got null" : null;
    }

    /// <summary>Where the first byte that is not part of well-formed UTF-8 is (counted from 0), or null.</summary>
    private static int? InvalidUtf8At(byte[] body)
    {
        if (System.Text.Unicode.Utf8.IsValid(body))
        {
            return null;
        }
        var status = System.Text.Unicode.Utf8.ToUtf16(body, new char[body.Length], out int read, out _, replaceInvalidSequences: false);
        return status == System.Buffers.OperationStatus.InvalidData ? read : body.Length;
    }

    /// <summary>"body: malformed JSON at byte N" (N counted from 0) for a body that is not JSON at all.</summary>
    private static string? SyntaxError(byte[] body)
    {
        try
        {
            var reader = new Utf8JsonReader(body, new JsonReaderOptions { CommentHandling = JsonCommentHandling.Disallow });
            while (reader.Read())
            {
            }
            return null;
        }
        catch (JsonException e)
        {
            // The reader says where by line and byte in that line; a client counts from the start.
            long line = e.LineNumber ?? 0, offset = 0;
            for (int i = 0; i < body.Length && line > 0; i++)
            {
                if (body[i] == (byte)'\n')
                {
                    line--;
                    offset = i + 1;
                }
            }
            return $"body: malformed JSON at byte {offset + (e.BytePositionInLine ?? 0)}";
        }
    }

    /// <summary>What a value of <paramref name="type"/> must be, when <paramref name="v"/> is not one.</summary>
    private static string? KindError(JsonElement v, Type type, bool required)
    {
        var underlying = Nullable.GetUnderlyingType(type);
        bool nullable = underlying is not null || (!type.IsValueType && !required);
        type = underlying ?? type;
        if (v.ValueKind == JsonValueKind.Null)
        {
            return nullable ? null : Expected(type);
        }
        bool ok = type == typeof(string) ? v.ValueKind == JsonValueKind.String
            : type == typeof(bool) ? v.ValueKind is JsonValueKind.True or JsonValueKind.False
            : type == typeof(int) ? v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out _)
            : type == typeof(long) ? v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out _)
            : type == typeof(ulong) ? v.ValueKind == JsonValueKind.Number && v.TryGetUInt64(out _)
            : type == typeof(uint) ? v.ValueKind == JsonValueKind.Number && v.TryGetUInt32(out _)
            : type == typeof(string[]) ? v.ValueKind == JsonValueKind.Array && v.EnumerateArray().All(e => e.ValueKind == JsonValueKind.String)
            : true; // a kind this API does not use: left to the deserializer
        return ok ? null : Expected(type);
    }

    private static string Expected(Type type) =>
        type == typeof(string) ? "a string"
        : type == typeof(bool) ? "true or false"
        : type == typeof(int) || type == typeof(long) ? "a whole number"
        : type == typeof(ulong) ? "a whole number, 0 or more"
        : type == typeof(uint) ? "a whole number from 0 to 4294967295"
        : type == typeof(string[]) ? "an array of strings"
        : "a value of another kind";

    /// <summary>A value as the client wrote it, shortened: "two" with its quotes, 1.5, null, an object.</summary>
    private static string Describe(JsonElement v) => v.ValueKind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.Null => "null",
        _ => Clip(v.GetRawText()),
    };

    private static string Clip(string s)
    {
        var one = s.ReplaceLineEndings(" ");
        return one.Length <= 40 ? one : one[..40] + "...";
    }

    /// <summary>
    /// A request body, at most <paramref name="limit"/> bytes, read whole; null when it is longer (it
    /// is never buffered past the limit). Both APIs read every body through this.
    /// </summary>
    public static async Task<byte[]?> ReadBounded(Stream body, int limit, CancellationToken ct)
    {
        using var buffer = new MemoryStream();
        var chunk = new byte[16384];
        int n;
        while ((n = await body.ReadAsync(chunk, ct)) > 0)
        {
            if (buffer.Length + n > limit)
            {
                return null;
            }
            buffer.Write(chunk, 0, n);
        }
        return buffer.ToArray();
    }
}
