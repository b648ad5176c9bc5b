namespace Vireo.Daemon;

/// <summary>
/// Why a VMM process ended, from the status file it writes as it exits: "STATUS REASON TEXT"
/// (exit status, a StopReason name, words). No file means the process died without writing one.
/// </summary>
internal sealed record VmmStatus(VmmStatus.EndKind Kind, string Text)
{
    public enum EndKind { PowerOff, Reboot, Crash }

    public static VmmStatus Read(string path)
    {
        string line;
        try
        {
            line = File.ReadAllText(path).Trim();
        }
        catch (IOException)
        {
            return new(EndKind.Crash, "the VMM process died");
        }
        var parts = line.Split(' ', 3);
        if (parts.Length < 2 || !int.TryParse(parts[0], out int code))
        {
            return new(EndKind.Crash, $"unreadable VMM status '{line}'");
        }
        string text = parts.Length == 3 ? parts[2] : parts[1];
        return parts[1] switch
        {
            "Reset" => new(EndKind.Reboot, text),
            _ when code == 0 => new(EndKind.PowerOff, text),
            _ => new(EndKind.Crash, text),
        };
    }
}
