using Vireo.Api;

namespace Vireo.VmmServer;

/// <summary>
/// `--restore snapshot_path=FILE,mem_file_path=FILE[,resume_vm=on][,track_dirty_pages=on]`: Cloud
/// Hypervisor's option in its key=value form, with the keys of PUT /snapshot/load (Firecracker's
/// names), so that the one load path serves both.
/// </summary>
public static class RestoreOption
{
    private static readonly string[] Keys = ["snapshot_path", "mem_file_path", "resume_vm", "track_dirty_pages", "enable_diff_snapshots"];

    /// <summary>Reads the option's value; null and the load's parameters, or why not in the user's words.</summary>
    public static string? Parse(string value, out SnapshotLoadParams? load)
    {
        load = null;
        var seen = new Dictionary<string, string>();
        foreach (string pair in value.Split(','))
        {
            int eq = pair.IndexOf('=');
            if (eq <= 0)
            {
                return $"'{pair}' is not KEY=VALUE (keys: {string.Join(", ", Keys)})";
            }
            string key = pair[..eq], v = pair[(eq + 1)..];
            if (Array.IndexOf(Keys, key) < 0)
            {
                return $"unknown key '{key}' (keys: {string.Join(", ", Keys)})";
            }
            if (!seen.TryAdd(key, v))
            {
                return $"{key} is given twice";
            }
            if (v.Length == 0)
            {
                return $"{key} is empty";
            }
        }
        if (!seen.TryGetValue("snapshot_path", out string? snapshot))
        {
            return "snapshot_path is required (the snapshot's state file)";
        }
        if (!seen.TryGetValue("mem_file_path", out string? memory))
        {
            return "mem_file_path is required (the snapshot's memory file)";
        }
        var flags = new Dictionary<string, bool>();
        foreach (string key in Keys[2..])
        {
            if (!seen.TryGetValue(key, out string? v))
            {
                flags[key] = false;
            }
            else if (Flag(v) is { } flag)
            {
                flags[key] = flag;
            }
            else
            {
                return $"{key} must be on, off, true or false, got '{v}'";
            }
        }
        load = new SnapshotLoadParams(snapshot, MemFilePath: memory, ResumeVm: flags["resume_vm"],
            TrackDirtyPages: flags["track_dirty_pages"], EnableDiffSnapshots: flags["enable_diff_snapshots"]);
        return null;
    }

    private static bool? Flag(string v) => v switch
    {
        "on" or "true" => true,
        "off" or "false" => false,
        _ => null,
    };
}
