using System.Text.Json;
using Vireo.Api;
using Vireo.Tests;

namespace Vireo.Daemon.Tests;

/// <summary>vireod's sandbox (its default): every VMM in its jail, as the VM's own uid; what works through it, and what is refused in words.</summary>
public class SandboxTests
{
    private static readonly HttpMethod Post = HttpMethod.Post;
    private const uint FirstUid = 3_100_000;

    private static string Status(int pid, string key) =>
        File.ReadLines($"/proc/{pid}/status").First(l => l.StartsWith(key + ":", StringComparison.Ordinal))[(key.Length + 1)..].Trim();

    [KvmFact]
    public async Task Each_vm_runs_as_its_own_uid_in_its_own_jail_and_snapshots_reverts_saves_and_restores_there()
    {
        using var rig = new SaveTests.Rig($"--sandbox --sandbox-uids {FirstUid}");
        var d = rig.D;
        await rig.Start("left");
        await d.Ok(Post, "vms", DaemonProcess.Definition("right"));
        await d.Ok(Post, "vms/right/start");
        var left = await d.Get("left");
        var right = await d.Get("right");
        var ids = (await d.List()).ToDictionary(v => v.Name, v => v.Id);
        foreach (var (vm, pid) in new[] { ("left", left.Pid!.Value), ("right", right.Pid!.Value) })
        {
            uint uid = FirstUid + (uint)ids[vm];
            Assert.Equal($"{uid}\t{uid}\t{uid}\t{uid}", Status(pid, "Uid"));
            Assert.Equal("0000000000000000", Status(pid, "CapEff"));
            Assert.Equal("1", Status(pid, "NoNewPrivs"));
            Assert.NotEqual(new FileInfo("/proc/self/ns/mnt").LinkTarget, new FileInfo($"/proc/{pid}/ns/mnt").LinkTarget);
            string dir = Path.Combine(d.StateDir, "vms", vm);
            Assert.Equal(uid.ToString(System.Globalization.CultureInfo.InvariantCulture), Owner(dir));
            Assert.True(Directory.Exists($"/proc/{pid}/root{dir}"));
        }
        Assert.False(Directory.Exists($"/proc/{left.Pid}/root{Path.Combine(d.StateDir, "vms", "right")}"), "left sees nothing of right");
        // Each VMM is in its own cgroup, its tasks bounded (64 + 2 per vCPU).
        string cgroups = File.ReadAllText($"/proc/{left.Pid}/cgroup");
        Assert.True(cgroups.Contains($":/vireo/{Group(d, "left")}\n", StringComparison.Ordinal), cgroups);
        string pidsMax = $"{GroupDir(d, "left")}/pids.max";
        Assert.Equal("66", File.ReadAllText(pidsMax).Trim());

        // The disk is vireod's, opened by it and handed over: the guest still uses it, and a snapshot
        // (in the VM's own directory) and its revert work as unsandboxed.
        await rig.Count("left", 1);
        var (status, body) = await d.Send(Post, "vms/left/snapshots", """{"name": "one"}""");
        Assert.True(status == 201, body);
        await rig.Count("left", 2);
        var reverted = await d.Ok(Post, "vms/left/snapshots/one/revert");
        Assert.NotEqual(left.Pid, reverted.Pid);
        Assert.Equal(FirstUid + (uint)ids["left"], uint.Parse(Status(reverted.Pid!.Value, "Uid").Split('\t')[0], System.Globalization.CultureInfo.InvariantCulture));
        await rig.Count("left", 2);

        // A save goes to the operator's path, which the jail cannot reach: the VMM writes it in its own
        // directory and vireod moves it out, root's and 0600. A restore hands the VMM the files open.
        string save = Path.Combine(rig.Saves, "s");
        var saved = await d.Ok(Post, "vms/left/save", SaveTests.Rig.Body(save));
        Assert.Equal((DomainState.Saved, save), (saved.State, saved.SavedTo));
        foreach (string file in new[] { save, save + ".mem" })
        {
            Assert.Equal("0", Owner(file));
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(file));
        }
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(d.StateDir, "vms", "left", "saving")));
        var restored = await d.Ok(Post, "restore", SaveTests.Rig.Body(save));
        Assert.Equal(FirstUid + (uint)ids["left"], uint.Parse(Status(restored.Pid!.Value, "Uid").Split('\t')[0], System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal("0000000000000000", Status(restored.Pid!.Value, "CapEff"));
        await rig.Count("left", 3);

        // A destroyed sandboxed VMM is reaped by vireod: no zombie is left.
        int last = restored.Pid!.Value;
        await d.Ok(Post, "vms/left/destroy");
        await Eventually.Until(() => Task.FromResult(!Directory.Exists($"/proc/{last}")), "the destroyed VMM to be reaped");
        Assert.False(Directory.Exists(Path.GetDirectoryName(pidsMax)), "its cgroup goes with it");
        await d.Ok(Post, "vms/right/destroy");
    }

    [KvmFact]
    public async Task A_restarted_vireod_takes_its_sandboxed_vms_back_and_their_cgroups_still_go_at_their_end()
    {
        using var rig = new SaveTests.Rig($"--sandbox --sandbox-uids {FirstUid}");
        var d = rig.D;
        await rig.Start("kept");
        await rig.Count("kept", 1);
        int pid = (await d.Get("kept")).Pid!.Value;
        string group = GroupDir(d, "kept");
        Assert.True(Directory.Exists(group));

        d.KillAndRestart(); // the VMM, no longer vireod's child, runs on
        var again = await d.Get("kept");
        Assert.Equal(pid, again.Pid);
        Assert.Equal("running", again.State);
        await rig.Count("kept", 2);
        Assert.Equal($"{FirstUid + (uint)again.Id}", Status(pid, "Uid").Split('\t')[0]);

        await d.Ok(Post, "vms/kept/destroy");
        Assert.False(Directory.Exists($"/proc/{pid}") && !File.ReadAllText($"/proc/{pid}/stat").Contains(") Z ", StringComparison.Ordinal), "the VMM is gone");
        Assert.False(Directory.Exists(group), "its cgroup goes with it, though another vireod made it");
        await d.Ok(Post, "vms/kept/start"); // and the name starts again in a group of its own
        int next = (await d.Get("kept")).Pid!.Value;
        Assert.Contains($":/vireo/{Group(d, "kept")}\n", File.ReadAllText($"/proc/{next}/cgroup"), StringComparison.Ordinal);
        await d.Ok(Post, "vms/kept/destroy");
    }

    [Fact]
    public void The_sandbox_is_the_default_and_a_vireod_that_is_not_root_is_told_to_pass_no_sandbox()
    {
        string dir = TempDirectory.Create("vireod-user");
        File.SetUnixFileMode(dir, (UnixFileMode)0x1ff);
        var r = TestEnvironment.Run("setpriv", $"--reuid=4242 --regid=4242 --clear-groups {TestEnvironment.Shipped("vireod")} --socket {dir}/s.sock --state {dir}/state", timeoutMs: 30_000);
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("the sandbox around each VMM needs vireod to run as root", r.Error);
        Assert.Contains("--no-sandbox", r.Error);
        Assert.DoesNotContain("   at ", r.Error);
    }

    [Fact]
    public void A_save_is_taken_out_of_a_vms_directory_only_as_a_file_its_uid_wrote()
    {
        const uint VmUid = FirstUid + 77;
        string vmDir = TempDirectory.Create("vireo-takeout-vm");
        string outDir = TempDirectory.Create("vireo-takeout-out");
        string secret = Path.Combine(TempDirectory.Create("vireo-takeout-host"), "secret");
        File.WriteAllText(secret, "root's\n");
        string Written(string name, uint uid)
        {
            string path = Path.Combine(vmDir, name);
            File.WriteAllText(path, name);
            Assert.Equal(0, Vireo.Interop.Namespaces.LChown(path, uid, uid));
            return path;
        }

        // A file the VM's uid wrote leaves as root's, 0600, and nothing is left behind.
        string good = Written("good", VmUid);
        VmDirEntries.TakeOut(vmDir, "good", Path.Combine(outDir, "good"), VmUid);
        Assert.False(File.Exists(good));
        Assert.Equal(("0", UnixFileMode.UserRead | UnixFileMode.UserWrite, "good"),
            (Owner(Path.Combine(outDir, "good")), File.GetUnixFileMode(Path.Combine(outDir, "good")), File.ReadAllText(Path.Combine(outDir, "good"))));

        // What a compromised VMM could put there instead: a link to a host file, a second link to one, another uid's file, a FIFO.
        File.CreateSymbolicLink(Path.Combine(vmDir, "link"), secret);
        string hard = Written("hard", VmUid);
        Assert.Equal(0, TestEnvironment.Run("ln", $"{hard} {Path.Combine(vmDir, "hard2")}").ExitCode); // (protected_hardlinks stops one to a host file; this one is its own)
        Written("other", VmUid + 1);
        Assert.Equal(0, TestEnvironment.Run("mkfifo", Path.Combine(vmDir, "fifo")).ExitCode);
        Assert.Equal(0, Vireo.Interop.Namespaces.LChown(Path.Combine(vmDir, "fifo"), VmUid, VmUid));
        Directory.CreateDirectory(Path.Combine(vmDir, "dir"));
        Assert.Equal(0, Vireo.Interop.Namespaces.LChown(Path.Combine(vmDir, "dir"), VmUid, VmUid));
        foreach (string bad in new[] { "link", "hard", "other", "fifo", "dir" })
        {
            string to = Path.Combine(outDir, bad);
            var e = Assert.ThrowsAny<IOException>(() => VmDirEntries.TakeOut(vmDir, bad, to, VmUid));
            Assert.Contains("not a file the VMM wrote", e.Message);
            Assert.False(Path.Exists(to) || new FileInfo(to).LinkTarget is not null, $"{bad}: nothing is left at {to}");
            Assert.True(Path.Exists(Path.Combine(vmDir, bad)) || new FileInfo(Path.Combine(vmDir, bad)).LinkTarget is not null, $"{bad}: it stays where the VMM put it");
        }
        // The save's directory itself a link to a host directory: refused before anything moves, the host's file kept.
        string linkedDir = Path.Combine(TempDirectory.Create("vireo-takeout-vmdir"), "saving");
        File.CreateSymbolicLink(linkedDir, Path.GetDirectoryName(secret)!);
        var notDir = Assert.ThrowsAny<IOException>(() => VmDirEntries.TakeOut(linkedDir, "secret", Path.Combine(outDir, "secret"), VmUid));
        Assert.Contains("not the directory vireod made for the save", notDir.Message);
        Assert.False(File.Exists(Path.Combine(outDir, "secret")));
        Assert.Equal("root's\n", File.ReadAllText(secret));
        Assert.Equal("0", Owner(secret));
        // Never over a file that is there.
        File.WriteAllText(Path.Combine(outDir, "kept"), "the operator's");
        Written("kept", VmUid);
        var refused = Assert.Throws<Vireo.Interop.SysError>(() => VmDirEntries.TakeOut(vmDir, "kept", Path.Combine(outDir, "kept"), VmUid));
        Assert.Contains("File exists", refused.Message);
        Assert.Equal("the operator's", File.ReadAllText(Path.Combine(outDir, "kept")));
    }

    /// <summary>The VM's cgroup beneath vireo/: the daemon's group (its state directory's), then the VM's name.</summary>
    private static string Group(DaemonProcess d, string vm) => $"{Supervisor.CgroupInstanceOf(d.StateDir)}/{vm}";

    /// <summary>Where the VM's group is: in the pids hierarchy on cgroup v1, in the unified one on v2.</summary>
    private static string GroupDir(DaemonProcess d, string vm) =>
        Vireo.Sandbox.VmCgroup.Unified ? $"/sys/fs/cgroup/vireo/{Group(d, vm)}" : $"/sys/fs/cgroup/pids/vireo/{Group(d, vm)}";

    private static string Owner(string path) =>
        TestEnvironment.Run("stat", $"-c %u {path}").Output.Trim();

    [KvmFact]
    public async Task Two_sandboxed_vms_exchange_frames_through_taps_vireod_hands_them_on_a_bridge()
    {
        using var taps = new TapBridge("vs");
        string tapA = taps.TapA, tapB = taps.TapB;
        using var d = new DaemonProcess(extraArgs: $"--sandbox --sandbox-uids {FirstUid}");
        await d.Ok(Post, "vms", DaemonProcess.Definition("echo", guest: "net", extra: $$""", "cmdline": "role=echo", "nets": [{"tap": "{{tapB}}"}]"""));
        await d.Ok(Post, "vms", DaemonProcess.Definition("ping", guest: "net", extra: $$""", "cmdline": "frames=100", "nets": [{"tap": "{{tapA}}"}]"""));
        await d.Ok(Post, "vms/echo/start");
        string Console(string vm) => File.ReadAllText(Path.Combine(d.StateDir, "vms", vm, "console.log"));
        await Eventually.Until(() => Task.FromResult(Console("echo").Contains("net:")), "the echo guest to come up");
        int echoPid = (await d.Get("echo")).Pid!.Value;
        // It holds its TAP, opened by vireod; its own network namespace has no TAP, and its root no /dev/net/tun.
        Assert.Contains(Directory.EnumerateFiles($"/proc/{echoPid}/fdinfo").Select(File.ReadAllText), info => info.Contains($"iff:\t{tapB}", StringComparison.Ordinal));
        Assert.False(File.Exists($"/proc/{echoPid}/root/dev/net/tun"));
        Assert.Equal("0000000000000000", Status(echoPid, "CapEff"));
        await d.Ok(Post, "vms/ping/start");
        await Eventually.Until(() => Task.FromResult(Console("ping").Contains("all verified") || Console("ping").Contains("FAIL")), "the ping guest's verdict", seconds: 120);
        Assert.Contains("net: 100 frames echoed", Console("ping"));
        Assert.Contains("all verified", Console("ping"));
        // Each guest ends on its own once done: its VMM is reaped and its cgroup goes, as after a destroy.
        string echoGroup = GroupDir(d, "echo");
        await Eventually.Until(async () => (await d.Get("echo")).State == DomainState.ShutOff && !Directory.Exists(echoGroup), "the echo VM's end and its cgroup's removal");
    }

    [KvmFact]
    public async Task What_a_vms_uid_leaves_in_its_directory_is_never_followed_by_vireod()
    {
        using var rig = new SaveTests.Rig($"--sandbox --sandbox-uids {FirstUid}");
        var d = rig.D;
        await rig.Start("planted");
        await d.Ok(Post, "vms/planted/destroy");
        // What a compromised VMM, as the VM's uid, could leave in the directory it owns: links to host
        // files and directories, and a FIFO, where vireod (root) will open, chmod, chown and write.
        string host = TempDirectory.Create("vireo-host-files");
        string secret = Path.Combine(host, "secret");
        File.WriteAllText(secret, "root's\n");
        File.SetUnixFileMode(secret, UnixFileMode.UserRead);
        string hostDir = Directory.CreateDirectory(Path.Combine(host, "dir")).FullName;
        string vmDir = Path.Combine(d.StateDir, "vms", "planted");
        foreach (var (entry, target) in new[] { ("console.log", secret), ("snapshots", hostDir), ("root", hostDir) })
        {
            string path = Path.Combine(vmDir, entry);
            if (Directory.Exists(path) && !File.Exists(path))
            {
                Directory.Delete(path, recursive: true);
            }
            File.Delete(path);
            File.CreateSymbolicLink(path, target);
        }
        File.Delete(Path.Combine(vmDir, "vmm.log"));
        Assert.Equal(0, TestEnvironment.Run("mkfifo", Path.Combine(vmDir, "vmm.log")).ExitCode);

        await d.Ok(Post, "vms/planted/start");
        await Eventually.Until(() => Task.FromResult(rig.Console("planted").Contains("snapshot: up")), "the guest to come up");
        var (status, body) = await d.Send(Post, "vms/planted/snapshots", """{"name": "one"}""");
        Assert.True(status == 201, body);
        await rig.Count("planted", 1);
        // The host's files are as they were: owner, mode and content; the VM's are its own, real ones.
        Assert.Equal("0", Owner(secret));
        Assert.Equal(UnixFileMode.UserRead, File.GetUnixFileMode(secret));
        Assert.Equal("root's\n", File.ReadAllText(secret));
        Assert.Equal("0", Owner(hostDir));
        Assert.Empty(Directory.EnumerateFileSystemEntries(hostDir));
        foreach (var entry in new[] { "console.log", "vmm.log", "snapshots", "root" })
        {
            Assert.Null(new FileInfo(Path.Combine(vmDir, entry)).LinkTarget);
        }
        Assert.True(File.Exists(Path.Combine(vmDir, "snapshots", "one.snap")));
        await d.Ok(Post, "vms/planted/destroy");
    }
}
