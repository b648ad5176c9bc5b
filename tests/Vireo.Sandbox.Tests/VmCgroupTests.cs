using System.Diagnostics;

namespace Vireo.Sandbox.Tests;

/// <summary>The VM's cgroup on both versions: this host mounts v1 for cpu, memory and pids, and a v2 hierarchy (with no controllers) beside them.</summary>
[Collection(nameof(VmCgroupTests))] // VmCgroup.Mount is process-wide
public sealed class VmCgroupTests
{
    private static void InGroupThenRemoved(string mount, Func<VmCgroup, string> expectedLine)
    {
        string saved = VmCgroup.Mount;
        VmCgroup.Mount = mount;
        string name = $"test-{Environment.ProcessId}/vm"; // a daemon's group, then the VM's
        using var sleeper = Process.Start("sleep", "30");
        try
        {
            var group = VmCgroup.Create(name, 40);
            group.Join(sleeper.Id);
            Assert.Contains(expectedLine(group), File.ReadAllLines($"/proc/{sleeper.Id}/cgroup"));
            sleeper.Kill();
            sleeper.WaitForExit();
            VmCgroup.Remove(name);
            Assert.All(group.Dirs, d => Assert.False(Directory.Exists(d), d));
            group.Dirs.ToList().ForEach(d => Directory.Delete(Path.GetDirectoryName(d)!)); // the daemon's, left to it
        }
        finally
        {
            VmCgroup.Mount = saved;
            if (!sleeper.HasExited)
            {
                sleeper.Kill();
            }
        }
    }

    [Fact]
    public void On_cgroup_v1_the_VMM_is_in_vireo_NAME_of_cpu_memory_and_pids_with_its_task_limit()
    {
        Assert.False(VmCgroup.Unified, "this host mounts cgroup v1 for its controllers");
        InGroupThenRemoved("/sys/fs/cgroup", group =>
        {
            Assert.Equal(3, group.Dirs.Count);
            Assert.Equal("40", File.ReadAllText(group.File("pids.max")!).Trim());
            return $"{File.ReadLines("/proc/self/cgroup").First(l => l.Split(':')[1] == "pids").Split(':')[0]}:pids:/vireo/test-{Environment.ProcessId}/vm";
        });
    }

    [Fact]
    public void On_cgroup_v2_the_VMM_is_in_vireo_NAME_of_the_unified_hierarchy()
    {
        const string unified = "/sys/fs/cgroup/unified";
        if (!File.Exists(Path.Combine(unified, "cgroup.controllers")))
        {
            Assert.Fail("this host was expected to mount a cgroup2 hierarchy at /sys/fs/cgroup/unified beside its v1 controllers, and does not");
        }
        InGroupThenRemoved(unified, group => $"0::/vireo/test-{Environment.ProcessId}/vm");
    }
}
