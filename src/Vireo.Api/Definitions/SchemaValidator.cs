using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace Vireo.Api.Definitions;

/// <summary>One reason a document does not fit its schema: where (a field path such as disks[1].path) and why.</summary>
public sealed record SchemaError(string Path, string Message, int? Line = null)
{
    public override string ToString() => (Line is int l ? $"line {l}: " : "") + (Path == "" ? Message : $"{Path}: {Message}");
}

/// <summary>
/// Checks a JSON document against a JSON Schema (draft 2020-12), for the keywords Vireo's schemas
/// use: type, properties, required, additionalProperties: false, items, enum, minimum, maximum,
/// minLength, maxLength, pattern, maxItems. A schema that uses any other validation keyword is
/// refused when loaded, so nothing in it is silently ignored. (No JSON Schema library in the
/// package mirror restores; tests check this one against python3-jsonschema on the same cases.)
/// </summary>
public sealed class SchemaValidator
{
    private static readonly HashSet<string> Understood =
    [
        "$schema", "$id", "title", "description", "default",
        "type", "properties", "required", "additionalProperties", "items", "enum",
        "minimum", "maximum", "minLength", "maxLength", "pattern", "maxItems",
    ];

    private readonly JsonObject _schema;

    public SchemaValidator(JsonObject schema)
    {
        CheckKeywords(schema, "#");
        _schema = schema;
    }

    /// <summary>
    /// How many errors one document gets: enough for any honest mistake, and a bound on the work and
    /// the answer for a hostile one (90,000 unknown keys once gave a 30 MB reply).
    /// </summary>
    public const int MaxErrors = 20;

    public List<SchemaError> Validate(JsonNode? document)
    {
        var errors = new List<SchemaError>();
        Check(_schema, document, "", errors);
        if (errors.Count > MaxErrors)
        {
            errors.RemoveRange(MaxErrors, errors.Count - MaxErrors);
            errors.Add(new("", $"more problems follow; only the first {MaxErrors} are listed"));
        }
        return errors;
    }

    private static void CheckKeywords(JsonObject schema, string where)
    {
        foreach (var (key, value) in schema)
        {
            if (!Understood.Contains(key))
            {
                throw new ArgumentException($"schema {where}: keyword '{key}' is not supported by this validator");
            }
            if (key == "properties")
            {
                foreach (var (name, sub) in value!.AsObject())
                {
                    CheckKeywords(sub!.AsObject(), $"{where}/properties/{name}");
                }
            }
            else if (key == "items")
            {
                CheckKeywords(value!.AsObject(), $"{where}/items");
            }
        }
    }

    private static void Check(JsonObject schema, JsonNode? node, string path, List<SchemaError> errors)
    {
        if (errors.Count > MaxErrors)
        {
            return; // one past the limit is kept, so that Validate knows to say more follow
        }
        if (schema["enum"] is JsonArray choices)
        {
            if (!choices.Any(c => JsonNode.DeepEquals(c, node)))
            {
                errors.Add(new(path, $"{Show(node)} is not one of {string.Join(", ", choices.Select(Show))}"));
            }
            return;
        }
        if (schema["type"]?.GetValue<string>() is { } type && !HasType(node, type))
        {
            errors.Add(new(path, $"expected {Article(type)}, got {Describe(node)}"));
            return;
        }
        switch (node)
        {
            case JsonObject obj:
                CheckObject(schema, obj, path, errors);
                break;
            case JsonArray array:
                if (schema["maxItems"]?.GetValue<int>() is int maxItems && array.Count > maxItems)
                {
                    errors.Add(new(path, $"{array.Count} items; at most {maxItems} are allowed"));
                    break; // the items of a list refused for its length are not worth checking one by one
                }
                if (schema["items"] is JsonObject items)
                {
                    for (int i = 0; i < array.Count; i++)
                    {
                        Check(items, array[i], $"{path}[{i}]", errors);
                    }
                }
                break;
            case JsonValue value when value.GetValueKind() == JsonValueKind.String:
                string s = value.GetValue<string>();
                if (schema["minLength"]?.GetValue<int>() is int minLength && s.Length < minLength)
                {
                    errors.Add(new(path, minLength == 1 ? "must not be empty" : $"shorter than {minLength} characters"));
                }
                if (schema["maxLength"]?.GetValue<int>() is int maxLength && s.Length > maxLength)
                {
                    errors.Add(new(path, $"{s.Length} characters; at most {maxLength} are allowed"));
                }
                if (schema["pattern"]?.GetValue<string>() is { } pattern && !Pattern(pattern).IsMatch(s))
                {
                    errors.Add(new(path, $"{Show(node)} does not match {pattern}" +
                        (schema["description"]?.GetValue<string>() is { } d ? $" ({d})" : "")));
                }
                break;
            case JsonValue value when value.GetValueKind() == JsonValueKind.Number:
                double n = Number(value);
                if (schema["minimum"] is { } minNode && Number(minNode) is double min && n < min)
                {
                    errors.Add(new(path, $"{Show(node)} is below the minimum {min.ToString(CultureInfo.InvariantCulture)}"));
                }
                if (schema["maximum"] is { } maxNode && Number(maxNode) is double max && n > max)
                {
                    errors.Add(new(path, $"{Show(node)} is above the maximum {max.ToString(CultureInfo.InvariantCulture)}"));
                }
                break;
        }
    }

    private static void CheckObject(JsonObject schema, JsonObject obj, string path, List<SchemaError> errors)
    {
        var properties = schema["properties"] as JsonObject;
        foreach (var required in (schema["required"] as JsonArray)?.Select(r => r!.GetValue<string>()) ?? [])
        {
            if (!obj.ContainsKey(required))
            {
                errors.Add(new(Join(path, required), "required, but missing"));
            }
        }
        foreach (var (key, value) in obj)
        {
            if (errors.Count > MaxErrors)
            {
                return;
            }
            if (properties?[key] is JsonObject sub)
            {
                Check(sub, value, Join(path, key), errors);
            }
            else if (schema["additionalProperties"] is JsonValue v && !v.GetValue<bool>())
            {
                errors.Add(new(Join(path, key), "unknown field" +
                    (properties is null ? "" : $" (known: {string.Join(", ", properties.Select(p => p.Key))})")));
            }
        }
    }

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, Regex> Patterns = new();

    private static Regex Pattern(string pattern) =>
        Patterns.GetOrAdd(pattern, p => new Regex(EcmaAnchors(p), RegexOptions.None, TimeSpan.FromSeconds(1)));

    /// <summary>
    /// A JSON Schema pattern is an ECMA-262 regular expression, where `$` matches only at the end of
    /// the input; .NET's `$` also matches before a final newline, which let "web\n" pass ^[a-z]+$ as a
    /// name. Each `$` outside a character class becomes `\z`.
    /// </summary>
    private static string EcmaAnchors(string pattern)
    {
        var sb = new System.Text.StringBuilder(pattern.Length + 4);
        bool inClass = false;
        for (int i = 0; i < pattern.Length; i++)
        {
            char c = pattern[i];
            if (c == '\\' && i + 1 < pattern.Length)
            {
                sb.Append(c).Append(pattern[++i]);
                continue;
            }
            if (c == '[')
            {
                inClass = true;
            }
            else if (c == ']')
            {
                inClass = false;
            }
            else if (c == '$' && !inClass)
            {
                sb.Append("\\z");
                continue;
            }
            sb.Append(c);
        }
        return sb.ToString();
    }

    private static string Join(string path, string key) => path == "" ? key : $"{path}.{key}";

    private static bool HasType(JsonNode? node, string type) => (type, node?.GetValueKind()) switch
    {
        ("object", JsonValueKind.Object) or ("array", JsonValueKind.Array) or ("string", JsonValueKind.String) => true,
        ("boolean", JsonValueKind.True or JsonValueKind.False) => true,
        ("number", JsonValueKind.Number) => true,
        ("integer", JsonValueKind.Number) => double.IsInteger(Number(node!)),
        ("null", null or JsonValueKind.Null) => true,
        _ => false,
    };

    // A node parsed from text holds a JsonElement, one built in code holds a CLR number: read both through their text.
    private static double Number(JsonNode node) => double.Parse(node.ToJsonString(), CultureInfo.InvariantCulture);

    private static string Article(string type) => type is "object" or "array" or "integer" ? $"an {type}" : $"a {type}";

    private static string Describe(JsonNode? node) => node?.GetValueKind() switch
    {
        null or JsonValueKind.Null => "null",
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => $"the string {Show(node)}",
        JsonValueKind.True or JsonValueKind.False => $"the boolean {Show(node)}",
        _ => $"the number {Show(node)}",
    };

    private static string Show(JsonNode? node) => node?.ToJsonString() ?? "null";
}
