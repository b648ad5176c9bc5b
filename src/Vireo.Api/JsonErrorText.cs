using System.Text.Json;
using System.Text.RegularExpressions;

namespace Vireo.Api;

/// <summary>
/// A JSON reader's error in a user's words: what is wrong and where (line and byte), without the
/// reader's "LineNumber: 0 | BytePositionInLine: 9" suffix, which counts from zero.
/// </summary>
public static partial class JsonErrorText
{
    public static string Describe(JsonException e, int maxDepth)
    {
        string where = e.LineNumber is long line && e.BytePositionInLine is long column
            ? $" (line {line + 1}, byte {column + 1})" : "";
        if (DuplicateProperty().Match(e.Message) is { Success: true } duplicate)
        {
            return $"'{duplicate.Groups[1].Value}' appears twice{where}";
        }
        if (e.Message.Contains("maximum configured depth", StringComparison.Ordinal))
        {
            return $"nested more than {maxDepth} levels deep{where}";
        }
        // "'}' is invalid after a value. Expected a ','.": the reader's own words are the user's.
        return PositionSuffix().Replace(e.Message, "").Trim().TrimEnd('.') + where;
    }

    [GeneratedRegex(@"^Duplicate property '([^']*)'")]
    private static partial Regex DuplicateProperty();

    [GeneratedRegex(@"\s*(Path: [^|]*)?\|?\s*LineNumber: \d+ \| BytePositionInLine: \d+\.?$")]
    private static partial Regex PositionSuffix();
}
