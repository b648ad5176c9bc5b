using System.Text.Json;
using System.Text.RegularExpressions;

namespace Vireo.Api;

/// <summary>
/// System.Text.Json's exceptions in a user's words: the field (as a JSON path without the "$."),
/// what is wrong with it, and where in the text. Its own messages name .NET types and members
/// ("...could not be converted to System.Int32", "...missing required properties including...");
/// a client of the API knows only field names and bytes.
/// </summary>
public static partial class JsonErrorText
{
    public static string Describe(JsonException e, int maxDepth = 64)
    {
        string field = e.Path is { Length: > 1 } p ? p.TrimStart('$').TrimStart('.') : "";
        string where = e.LineNumber is long line && e.BytePositionInLine is long column
            ? $" (line {line + 1}, byte {column + 1})" : "";
        string message = e.Message;
        if (MissingRequired().Match(message) is { Success: true } missing)
        {
            var names = QuotedName().Matches(missing.Groups[1].Value).Select(m => m.Groups[1].Value);
            return $"{string.Join(", ", names)}: required, but missing";
        }
        if (UnknownMember().Match(message) is { Success: true } unknown)
        {
            return $"{Join(field, unknown.Groups[1].Value)}: unknown field{where}";
        }
        if (NotConvertible().Match(message) is { Success: true } type)
        {
            return $"{(field == "" ? "the body" : field)}: expected {Expected(type.Groups[1].Value)}{where}";
        }
        if (message.Contains("maximum configured depth", StringComparison.Ordinal))
        {
            return $"nested more than {maxDepth} levels deep{where}";
        }
        // A reader error ("'}' is invalid after a value. Expected a ','."): its own words are the
        // user's, once the position suffix is replaced by ours.
        string text = PositionSuffix().Replace(message, "").Trim();
        return (field == "" ? "" : $"{field}: ") + text.TrimEnd('.') + where;
    }

    private static string Join(string path, string key) => path == "" || path.EndsWith(key, StringComparison.Ordinal) ? key : $"{path}.{key}";

    private static string Expected(string clrType) => clrType switch
    {
        "System.String" => "a string",
        "System.Boolean" => "true or false",
        "System.Int32" or "System.Int64" or "System.UInt32" or "System.UInt64" or "System.Int16" or "System.UInt16"
            or "System.Byte" or "System.SByte" => "an integer in range",
        "System.Double" or "System.Single" or "System.Decimal" => "a number",
        var t when t.EndsWith("[]", StringComparison.Ordinal) || t.StartsWith("System.Collections", StringComparison.Ordinal) => "an array",
        _ => "an object",
    };

    [GeneratedRegex(@"missing required properties including: (.*)$")]
    private static partial Regex MissingRequired();

    [GeneratedRegex(@"'([^']+)'")]
    private static partial Regex QuotedName();

    [GeneratedRegex(@"The JSON property '([^']+)' could not be mapped")]
    private static partial Regex UnknownMember();

    [GeneratedRegex(@"could not be converted to ([\w.\[\]`]+)")]
    private static partial Regex NotConvertible();

    [GeneratedRegex(@"\s*(Path: [^|]*)?\|?\s*LineNumber: \d+ \| BytePositionInLine: \d+\.?$")]
    private static partial Regex PositionSuffix();
}
