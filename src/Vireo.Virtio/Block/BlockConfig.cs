namespace Vireo.Virtio.Block;

/// <summary>A disk as the API and CLI accept it: `--disk PATH[,ro][,direct][,queues=N][,id=NAME]`.</summary>
public sealed record BlockConfig(string Path, bool ReadOnly = false, bool Direct = false, int Queues = 1, string? Id = null)
{
    public const int MaxQueues = 16;

    /// <summary>Parses the CLI form; throws <see cref="FormatException"/> naming the bad part.</summary>
    public static BlockConfig Parse(string text)
    {
        var parts = text.Split(',');
        if (parts[0].Length == 0)
        {
            throw new FormatException("disk: a path is required (--disk PATH[,ro][,direct][,queues=N][,id=NAME])");
        }
        var config = new BlockConfig(parts[0]);
        foreach (var part in parts.Skip(1))
        {
            config = part switch
            {
                "ro" => config with { ReadOnly = true },
                "direct" => config with { Direct = true },
                _ when part.StartsWith("queues=", StringComparison.Ordinal) =>
                    int.TryParse(part[7..], out int q) && q is >= 1 and <= MaxQueues
                        ? config with { Queues = q }
                        : throw new FormatException($"disk: '{part}': queues must be 1..{MaxQueues}"),
                _ when part.StartsWith("id=", StringComparison.Ordinal) =>
                    part.Length - 3 is >= 1 and <= 20
                        ? config with { Id = part[3..] }
                        : throw new FormatException($"disk: '{part}': an id is 1 to 20 characters"),
                _ => throw new FormatException($"disk: unknown option '{part}' (known: ro, direct, queues=N, id=NAME)"),
            };
        }
        return config;
    }
}
