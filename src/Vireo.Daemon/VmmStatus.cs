namespace Vireo.Daemon;

/// <summary>
/// Why a VMM process ended, from the status file it writes as it exits: "STATUS REASON TEXT"
/// (exit status, a StopReason name, words). No file means the process died without writing one;
/// then its log may say why (its seccomp handler's line names a forbidden system call). Both are
/// in a directory a sandboxed VM's uid owns, so both are read without following links, and bounded.
/// </summary>
internal sealed record VmmStatus(VmmStatus.EndKind Kind, string Text)
{
    public enum EndKind { PowerOff, Reboot, Crash }

    private const string SeccompLine = "vireo-vmm: seccomp: ";

    public static VmmStatus Read(string path, string? logPath = null)
    {
        string? line = VmDirEntries.ReadTail(path, 4096)?.Trim();
        if (line is null)
        {
            return new(EndKind.Crash, Died(logPath));
        }
        var parts = line.Split(' ', 3);
        if (parts.Length < 2 || !int.TryParse(parts[0], out int code))
        {
            return new(EndKind.Crash, $"unreadable VMM status '{(line.Length > 200 ? line[..200] + "..." : line)}'");
        }
        string text = parts.Length == 3 ? parts[2] : parts[1];
        if (text.Length > 1000)
        {
            text = text[..1000] + "...";
        }
        return parts[1] switch
        {
            "Reset" => new(EndKind.Reboot, text),
            _ when code == 0 => new(EndKind.PowerOff, text),
            _ => new(EndKind.Crash, text),
        };
    }

    /// <summary>Why a VMM that wrote no status died, as far as the end of its log tells.</summary>
    private static string Died(string? logPath)
    {
        string? tail = logPath is null ? null : VmDirEntries.ReadTail(logPath, 8192);
        string? seccomp = tail?.Split('\n').LastOrDefault(l => l.StartsWith(SeccompLine, StringComparison.Ordinal));
        if (seccomp is null)
        {
            return "the VMM process died";
        }
        string why = new([.. seccomp[SeccompLine.Length..].Take(300).Where(c => !char.IsControl(c))]);
        return $"the VMM was killed by its seccomp filter: {why}";
    }
}
