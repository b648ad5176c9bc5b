namespace Vireo.Daemon;

/// <summary>What /proc/PID/stat says about a process: enough to tell it is the same one and still alive.</summary>
internal static class ProcessStat
{
    /// <summary>The process start time in clock ticks (field 22): a pid with another start time is another process.</summary>
    public static long? StartTime(int pid) => Read(pid)?.StartTime;

    /// <summary>Alive: the same process (pid and start time) and not a zombie.</summary>
    public static bool IsAlive(int pid, long startTime) =>
        Read(pid) is { State: not ("Z" or "X") } stat && stat.StartTime == startTime;

    private static (string State, long StartTime)? Read(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' '); // after "pid (comm) ": the comm may hold spaces
            return (fields[0], long.Parse(fields[19]));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
        {
            return null;
        }
    }
}
