using System.Globalization;
using System.Reflection;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

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

    /// <summary>Parses JSON (text starting with '{') or YAML, then validates it against the schema.</summary>
    public static DefinitionResult Parse(string text)
    {
        JsonNode? node;
        Dictionary<string, int>? lines = null;
        try
        {
            if (text.TrimStart().StartsWith('{'))
            {
                node = JsonNode.Parse(text, documentOptions: new JsonDocumentOptions { MaxDepth = 16 });
            }
            else
            {
                lines = [];
                node = FromYaml(text, lines);
            }
        }
        catch (JsonException e)
        {
            return Fail(new SchemaError("", $"malformed JSON: {e.Message}"));
        }
        catch (YamlException e)
        {
            return Fail(new SchemaError("", $"malformed YAML: {e.Message}", (int)e.Start.Line));
        }
        catch (FormatException e)
        {
            return Fail(new SchemaError("", $"malformed YAML: {e.Message}"));
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
        catch (JsonException e) // the schema and the record disagree: a bug, reported and not thrown
        {
            return Fail(new SchemaError(e.Path ?? "", e.Message));
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

    /// <summary>YAML to JSON nodes with YAML 1.2 core-schema scalars, recording each field path's line.</summary>
    private static JsonNode? FromYaml(string text, Dictionary<string, int> lines)
    {
        var stream = new YamlStream();
        stream.Load(new StringReader(text));
        if (stream.Documents.Count == 0)
        {
            return null;
        }
        if (stream.Documents.Count > 1)
        {
            throw new FormatException("one VM definition per file: this file holds several YAML documents");
        }
        return Convert(stream.Documents[0].RootNode, "", lines, 0);
    }

    private static JsonNode? Convert(YamlNode node, string path, Dictionary<string, int> lines, int depth)
    {
        if (depth > 16)
        {
            throw new FormatException("nested too deeply");
        }
        lines.TryAdd(path, (int)node.Start.Line);
        switch (node)
        {
            case YamlMappingNode map:
                var obj = new JsonObject();
                foreach (var (k, v) in map.Children)
                {
                    if (k is not YamlScalarNode { Value: { } key })
                    {
                        throw new FormatException($"line {k.Start.Line}: keys must be plain strings");
                    }
                    if (obj.ContainsKey(key))
                    {
                        throw new FormatException($"line {k.Start.Line}: '{key}' appears twice");
                    }
                    obj[key] = Convert(v, path == "" ? key : $"{path}.{key}", lines, depth + 1);
                }
                return obj;
            case YamlSequenceNode seq:
                var array = new JsonArray();
                int i = 0;
                foreach (var item in seq.Children)
                {
                    array.Add(Convert(item, $"{path}[{i++}]", lines, depth + 1));
                }
                return array;
            case YamlScalarNode scalar:
                return Scalar(scalar);
            default:
                throw new FormatException($"line {node.Start.Line}: aliases are not supported");
        }
    }

    private static JsonNode? Scalar(YamlScalarNode scalar)
    {
        string value = scalar.Value ?? "";
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
        if (FloatPattern().IsMatch(value) && double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out double d))
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
