using System.Globalization;
using System.Reflection;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using YamlDotNet.Core;
using YamlDotNet.Core.Events;
using YamlScalar = YamlDotNet.Core.Events.Scalar;

namespace Vireo.Api.Definitions;

/// <summary>A definition read from a file or request: the definition, or every reason it was refused.</summary>
public sealed record DefinitionResult(VmDefinition? Definition, IReadOnlyList<SchemaError> Errors)
{
    public string ErrorText => string.Join("; ", Errors);
}

/// <summary>
/// Reads VM definitions in YAML or JSON, checks them against vm-definition.schema.json, and
/// reports every problem with its field path (and its line, for YAML). Also writes a
/// definition back as YAML, for `vireo edit` and `vireo import`.
/// </summary>
public static partial class DefinitionReader
{
    private static readonly Lazy<string> SchemaTextLazy = new(() =>
    {
        using var stream = typeof(DefinitionReader).Assembly.GetManifestResourceStream("Vireo.Api.vm-definition.schema.json")
            ?? throw new InvalidOperationException("the VM definition schema is missing from Vireo.Api");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    });

    private static readonly Lazy<SchemaValidator> Validator = new(() => new SchemaValidator(JsonNode.Parse(SchemaText)!.AsObject()));

    /// <summary>The JSON Schema that every definition must fit.</summary>
    public static string SchemaText => SchemaTextLazy.Value;

    /// <summary>How deeply a definition may nest (a definition needs 3 levels: disks[0].path).</summary>
    public const int MaxDepth = 16;

    /// <summary>The largest definition accepted, in characters (vireod also limits request bodies to 1 MiB).</summary>
    public const int MaxLength = 1 << 20;

    /// <summary>Parses JSON (text starting with '{') or YAML, then validates it against the schema.</summary>
    public static DefinitionResult Parse(string text)
    {
        if (text.Length > MaxLength)
        {
            return Fail(new SchemaError("", $"the definition is {text.Length} characters long; at most {MaxLength} are allowed"));
        }
        JsonNode? node;
        Dictionary<string, int>? lines = null;
        try
        {
            if (text.TrimStart().StartsWith('{'))
            {
                node = JsonNode.Parse(text, documentOptions: new JsonDocumentOptions { MaxDepth = MaxDepth, AllowDuplicateProperties = false });
            }
            else
            {
                lines = [];
                node = FromYaml(text, lines);
            }
        }
        catch (JsonException e)
        {
            return Fail(new SchemaError("", $"malformed JSON: {JsonErrorText.Describe(e, MaxDepth)}", e.LineNumber is long l ? (int)l + 1 : null));
        }
        catch (YamlException e)
        {
            return Fail(new SchemaError("", $"malformed YAML: {e.Message}", (int)e.Start.Line));
        }
        catch (InvalidOperationException e) when (lines is not null && e.Source == "YamlDotNet")
        {
            // YamlDotNet's scanner sometimes fails this way on malformed input instead of with a YamlException.
            return Fail(new SchemaError("", "malformed YAML: the text cannot be read as YAML"));
        }
        catch (ArgumentException e) when (lines is not null && e.Source == "YamlDotNet")
        {
            // And this way on a tag that is no URI (`!<...>` or a %TAG prefix: found by fuzz/run definition).
            return Fail(new SchemaError("", $"malformed YAML: {e.Message.Split(" (Parameter", 2)[0]}"));
        }
        catch (YamlRefusal e)
        {
            return Fail(new SchemaError("", $"malformed YAML: {e.Message}", e.Line));
        }
        return FromNode(node, lines);
    }

    /// <summary>Validates an already parsed document (a request body) and builds the definition.</summary>
    public static DefinitionResult FromNode(JsonNode? node, Dictionary<string, int>? lines = null)
    {
        if (node is null)
        {
            return Fail(new SchemaError("", "the document is empty"));
        }
        var errors = Validator.Value.Validate(node);
        if (errors.Count > 0)
        {
            return new(null, [.. errors.Select(e => lines?.TryGetValue(e.Path, out int l) == true ? e with { Line = l } : e)]);
        }
        try
        {
            return new(node.Deserialize(DaemonJson.Default.VmDefinition), []);
        }
        catch (JsonException e)
        {
            // What the schema lets through and the record cannot hold: a whole number written as 64.0
            // or 6.4e1 (an integer to JSON Schema, not to an int field).
            string field = e.Path is { Length: > 1 } p ? p.TrimStart('$').TrimStart('.') : "";
            return Fail(new SchemaError(field, "a whole number must be written without a fraction or an exponent (64, not 64.0)"));
        }
    }

    /// <summary>Whether a name fits the schema's rule for names; null when it does, else why not.</summary>
    public static string? CheckName(string name) =>
        FromNode(new JsonObject { ["name"] = name, ["kernel"] = "-" }).Errors.FirstOrDefault(e => e.Path == "name")?.Message;

    private static DefinitionResult Fail(SchemaError error) => new(null, [error]);

    /// <summary>The definition as YAML: what `vireo edit` opens and `vireo import` writes.</summary>
    public static string ToYaml(VmDefinition definition, string? header = null)
    {
        var node = JsonSerializer.SerializeToNode(definition, DaemonJson.Default.VmDefinition)!.AsObject();
        var sb = new StringBuilder();
        if (header is not null)
        {
            foreach (var line in header.Split('\n'))
            {
                sb.AppendLine(line == "" ? "#" : $"# {line}");
            }
        }
        foreach (var (key, value) in node)
        {
            if (value is JsonArray array)
            {
                if (array.Count == 0)
                {
                    continue;
                }
                sb.Append(key).AppendLine(":");
                foreach (var item in array)
                {
                    string prefix = "  - ";
                    foreach (var (k, v) in item!.AsObject())
                    {
                        sb.Append(prefix).Append(k).Append(": ").AppendLine(Scalar(v));
                        prefix = "    ";
                    }
                }
            }
            else
            {
                sb.Append(key).Append(": ").AppendLine(Scalar(value));
            }
        }
        return sb.ToString();
    }

    // A JSON string literal is a valid YAML double-quoted scalar; numbers and booleans are the same in both.
    private static string Scalar(JsonNode? v) => v is null ? "null" : v.ToJsonString(JsonContext.Options);

    private static class JsonContext
    {
        public static readonly JsonSerializerOptions Options = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
    }

    /// <summary>
    /// YAML to JSON nodes with YAML 1.2 core-schema scalars, recording each field path's line. Built from
    /// the parser's events, not from YamlStream: YamlStream builds its node tree by recursion (a deeply
    /// nested document overflows the stack before any check could run) and resolves aliases into shared
    /// nodes (a few hundred bytes of "billion laughs" expand without bound). Here depth is counted as the
    /// events arrive and an alias is refused where it stands, so the work is linear in the text.
    /// </summary>
    private static JsonNode? FromYaml(string text, Dictionary<string, int> lines)
    {
        var parser = new Parser(new StringReader(text));
        parser.Consume<StreamStart>();
        if (parser.TryConsume<StreamEnd>(out _))
        {
            return null;
        }
        parser.Consume<DocumentStart>();
        var root = ReadYamlNode(parser, "", lines, 0);
        parser.Consume<DocumentEnd>();
        if (!parser.Accept<StreamEnd>(out _))
        {
            throw new YamlRefusal(null, "one VM definition per file: this file holds several YAML documents");
        }
        return root;
    }

    private static JsonNode? ReadYamlNode(IParser parser, string path, Dictionary<string, int> lines, int depth)
    {
        var at = parser.Current ?? throw new YamlRefusal(null, "the YAML document ends early");
        int line = (int)at.Start.Line;
        lines.TryAdd(path, line);
        switch (at)
        {
            case AnchorAlias alias:
                throw new YamlRefusal(line, $"aliases (*{alias.Value}) are not allowed in a VM definition; write the value out");
            case YamlScalar scalar:
                parser.MoveNext();
                return Scalar(scalar);
            case MappingStart or SequenceStart when depth >= MaxDepth:
                throw new YamlRefusal(line, $"nested more than {MaxDepth} levels deep");
            case MappingStart:
                parser.MoveNext();
                var obj = new JsonObject();
                while (!parser.TryConsume<MappingEnd>(out _))
                {
                    if (!parser.TryConsume<YamlScalar>(out var k))
                    {
                        throw new YamlRefusal(parser.Current?.Start.Line ?? line, "keys must be plain strings");
                    }
                    if (obj.ContainsKey(k.Value))
                    {
                        throw new YamlRefusal(k.Start.Line, $"'{k.Value}' appears twice");
                    }
                    obj[k.Value] = ReadYamlNode(parser, path == "" ? k.Value : $"{path}.{k.Value}", lines, depth + 1);
                }
                return obj;
            case SequenceStart:
                parser.MoveNext();
                var array = new JsonArray();
                while (!parser.TryConsume<SequenceEnd>(out _))
                {
                    array.Add(ReadYamlNode(parser, $"{path}[{array.Count}]", lines, depth + 1));
                }
                return array;
            default:
                throw new YamlRefusal(line, "unexpected YAML content");
        }
    }

    /// <summary>YAML that parses but is not a definition's shape (an alias, a nesting too deep, a key twice).</summary>
    private sealed class YamlRefusal(long? line, string message) : Exception(message)
    {
        public int? Line { get; } = line is long l ? (int)l : null;
    }

    private static JsonNode? Scalar(YamlScalar scalar)
    {
        string value = scalar.Value;
        if (scalar.Style != ScalarStyle.Plain)
        {
            return JsonValue.Create(value);
        }
        if (value is "" or "~" or "null" or "Null" or "NULL")
        {
            return null;
        }
        if (value is "true" or "True" or "TRUE" or "false" or "False" or "FALSE")
        {
            return JsonValue.Create(value.Equals("true", StringComparison.OrdinalIgnoreCase));
        }
        if (IntPattern().IsMatch(value) && long.TryParse(value, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long l))
        {
            return JsonValue.Create(l);
        }
        // A float beyond double's range (1e309) stays text: JSON has no infinity to hold it.
        if (FloatPattern().IsMatch(value) && double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) && double.IsFinite(d))
        {
            return JsonValue.Create(d);
        }
        return JsonValue.Create(value);
    }

    [GeneratedRegex("^[-+]?[0-9]+$")]
    private static partial Regex IntPattern();

    [GeneratedRegex(@"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")]
    private static partial Regex FloatPattern();
}
