using System.Globalization;

namespace Vireo.Sandbox;

/// <summary>
/// A VM's own control group, on either cgroup version: `vireo/NAME` under each of the cpu, memory
/// and pids hierarchies of cgroup v1 (as this host mounts them), or `vireo/NAME` in the unified v2
/// hierarchy with those controllers enabled down to it. NAME may have levels (vireod's is
/// `DAEMON/VM`: each daemon's VMs in a group of its own). Its VMM process is moved in whole
/// (cgroup.procs moves every thread); pids.max bounds its tasks. CPU and memory limits are set by
/// their own issues; the group is where they go.
/// </summary>
public sealed class VmCgroup
{
    private static readonly string[] Controllers = ["cpu", "memory", "pids"];

    /// <summary>The group's directory in each hierarchy it is in.</summary>
    public IReadOnlyList<string> Dirs { get; }

    private VmCgroup(IReadOnlyList<string> dirs) => Dirs = dirs;

    /// <summary>Where cgroups are mounted: /sys/fs/cgroup (a test may point elsewhere).</summary>
    public static string Mount { get; set; } = "/sys/fs/cgroup";

    /// <summary>True when the host has the unified hierarchy with its controllers (cgroup v2), false for v1.</summary>
    public static bool Unified => System.IO.File.Exists(Path.Combine(Mount, "cgroup.controllers"));

    /// <summary>Makes (or takes again) the VM's group with pids.max <paramref name="maxTasks"/>; throws <see cref="SandboxException"/> naming the file.</summary>
    public static VmCgroup Create(string name, ulong maxTasks)
    {
        try
        {
            List<string> dirs;
            if (Unified)
            {
                // Each controller the host offers (a hybrid host binds some to v1 instead), enabled for the children of each level.
                var offered = System.IO.File.ReadAllText(Path.Combine(Mount, "cgroup.controllers")).Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
                string enable = string.Join(' ', Controllers.Where(offered.Contains).Select(c => "+" + c));
                string level = Mount;
                foreach (string part in ("vireo/" + name).Split('/')[..^1])
                {
                    if (enable.Length > 0)
                    {
                        Write(Path.Combine(level, "cgroup.subtree_control"), enable);
                    }
                    level = Path.Combine(level, part);
                    Directory.CreateDirectory(level);
                }
                if (enable.Length > 0)
                {
                    Write(Path.Combine(level, "cgroup.subtree_control"), enable);
                }
                dirs = [Path.Combine(Mount, "vireo", name)];
            }
            else
            {
                dirs = [.. Controllers.Select(c => Path.Combine(Mount, c)).Where(Directory.Exists).Select(h => Path.Combine(h, "vireo", name))];
            }
            dirs.ForEach(d => Directory.CreateDirectory(d));
            var group = new VmCgroup(dirs);
            if (group.File("pids.max") is { } pidsMax)
            {
                Write(pidsMax, maxTasks.ToString(CultureInfo.InvariantCulture));
            }
            return group;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SandboxException($"the VM's cgroup could not be made: {e.Message}", e);
        }
    }

    /// <summary>The control file <paramref name="name"/> in whichever hierarchy has it, or null.</summary>
    public string? File(string name) => Dirs.Select(d => Path.Combine(d, name)).FirstOrDefault(System.IO.File.Exists);

    /// <summary>Moves process <paramref name="pid"/>, all its threads, into the group.</summary>
    public void Join(int pid)
    {
        try
        {
            foreach (var dir in Dirs)
            {
                Write(Path.Combine(dir, "cgroup.procs"), pid.ToString(CultureInfo.InvariantCulture));
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SandboxException($"the VMM could not be put in its cgroup: {e.Message}", e);
        }
    }

    /// <summary>True while any of the VM's group's directories exists.</summary>
    public static bool Exists(string name) => DirsOf(name).Any(Directory.Exists);

    private static IEnumerable<string> DirsOf(string name) => Unified ? [Path.Combine(Mount, "vireo", name)]
        : Controllers.Select(c => Path.Combine(Mount, c, "vireo", name));

    /// <summary>Removes the VM's group where it is empty (a VMM still in it keeps it); never throws.</summary>
    public static void Remove(string name)
    {
        foreach (var dir in DirsOf(name))
        {
            try
            {
                Directory.Delete(dir); // a cgroup's control files go with it; rmdir is refused while it has tasks
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // gone already, or still in use
            }
        }
    }

    private static void Write(string path, string value) => System.IO.File.WriteAllText(path, value);
}
