using System.Diagnostics;
using Vireo.Tests;

namespace Vireo.Cli.Tests;

/// <summary>`vireo run --sandbox`: the run in the jail vireod gives its VMMs, seen from the host while it runs, and its files handed over open.</summary>
public class SandboxedRunTests
{
    private static string Status(int pid, string key) =>
        File.ReadLines($"/proc/{pid}/status").First(l => l.StartsWith(key + ":", StringComparison.Ordinal))[(key.Length + 1)..].Trim();

    private static string NewDisk(long bytes) => HostileFiles.Sparse(bytes, "disk.img");

    // Every other `vireo run` test also runs jailed in ./test's second pass of this suite (VIREO_TEST_SANDBOX=1);
    // these are what only a sandboxed run has to show.
    [KvmFact]
    public void A_sandboxed_runs_disk_keeps_its_name_for_the_guest_and_the_guests_status_comes_through_the_jail()
    {
        // A disk without id= shows the guest its file's name, as outside the jail, not the fd it was handed over on.
        var named = VireoProcess.Run($"run --sandbox --kernel {TestEnvironment.Guest("blk")} --disk {NewDisk(4 << 20)} --debug-exit --cmdline mib=1");
        Assert.True(named.ExitCode == 0, named.Output + named.Error);
        Assert.Contains("blk: id \"disk.img\"", named.Output);
        var t = VireoProcess.Run($"run --sandbox --kernel {TestEnvironment.Guest("idle")} --memory 32M --timeout 1");
        Assert.True(t.ExitCode == 124, $"exit {t.ExitCode}: {t.Error}");
    }

    [KvmFact]
    public void While_it_runs_the_vm_is_in_its_jail_as_a_uid_of_its_own_with_no_capability_and_it_leaves_nothing_behind()
    {
        string disk = NewDisk(16 << 20);
        // vireo is started with a file of root's open on fd 9 and not close-on-exec, as a shell can leave one: it must not reach the jail.
        string secret = Path.Combine(TempDirectory.Create("vireo-sandboxed-secret"), "secret");
        File.WriteAllText(secret, "root's\n");
        File.SetUnixFileMode(secret, UnixFileMode.UserRead);
        var psi = new ProcessStartInfo("/bin/sh")
        {
            ArgumentList =
            {
                "-c", "exec \"$0\" run --sandbox --kernel \"$1\" --disk \"$2\" --cmdline 'mib=2 hold=1' --timeout 60 9<\"$3\"",
                VireoProcess.Program, TestEnvironment.Guest("blk"), disk, secret,
            },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        using var run = Process.Start(psi)!;
        try
        {
            string? line;
            while ((line = run.StandardOutput.ReadLine()) is not null && !line.Contains("blk: wrote 2 MiB, flushed"))
            {
            }
            if (line is null)
            {
                Assert.Fail($"the guest did not write its disk: {run.StandardError.ReadToEnd()}");
            }
            // The jailed run is vireo's one child (made by the thread that built the jail, so listed under that thread).
            int jailed = Directory.EnumerateDirectories($"/proc/{run.Id}/task").SelectMany(t => File.ReadAllText(Path.Combine(t, "children")).Split(' ', StringSplitOptions.RemoveEmptyEntries))
                .Select(p => int.Parse(p, System.Globalization.CultureInfo.InvariantCulture)).Single();
            uint uid = uint.Parse(Status(jailed, "Uid").Split('\t')[0], System.Globalization.CultureInfo.InvariantCulture);
            Assert.InRange(uid, 3_065_536u, 3_065_536u + 65535);
            Assert.Equal($"{uid}\t{uid}\t{uid}\t{uid}", Status(jailed, "Uid"));
            Assert.Equal("0000000000000000", Status(jailed, "CapEff"));
            Assert.Equal("1", Status(jailed, "NoNewPrivs"));
            foreach (string ns in new[] { "mnt", "pid", "net", "ipc", "uts" })
            {
                Assert.NotEqual(new FileInfo($"/proc/self/ns/{ns}").LinkTarget, new FileInfo($"/proc/{jailed}/ns/{ns}").LinkTarget);
            }
            // Its root holds the VMM, its libraries and devices, and no path to the disk: that was handed over open.
            var root = Directory.EnumerateFileSystemEntries($"/proc/{jailed}/root").Select(Path.GetFileName).ToHashSet();
            Assert.Contains("vireo-vmm", root);
            Assert.Contains("dev", root);
            Assert.False(File.Exists($"/proc/{jailed}/root{disk}"));
            var held = Directory.EnumerateFileSystemEntries($"/proc/{jailed}/fd").Select(f => new FileInfo(f).LinkTarget).ToList();
            Assert.Contains(disk, held);
            Assert.DoesNotContain(secret, held); // nothing of vireo's own goes into the jail but what it hands over
            Assert.Contains(secret, Directory.EnumerateFileSystemEntries($"/proc/{run.Id}/fd").Select(f => new FileInfo(f).LinkTarget)); // (vireo itself has it)
            Assert.Contains($":/vireo/run/{run.Id}", File.ReadAllText($"/proc/{jailed}/cgroup"));

            // SIGTERM to vireo reaches the jailed run, which stops the VM cleanly.
            Assert.Equal(0, TestEnvironment.Run("kill", $"-TERM {run.Id}").ExitCode);
            Assert.True(run.WaitForExit(20_000), "the sandboxed run to end on SIGTERM");
            Assert.Equal(0, run.ExitCode);
            Assert.False(Directory.Exists($"/run/vireo/run/{run.Id}"), "its directory goes with it");
            Assert.False(Directory.Exists($"/sys/fs/cgroup/pids/vireo/run/{run.Id}") || Directory.Exists($"/sys/fs/cgroup/vireo/run/{run.Id}"), "and its cgroup");
        }
        finally
        {
            if (!run.HasExited)
            {
                run.Kill(entireProcessTree: true);
            }
        }
    }

    [Theory]
    [InlineData("--vsock cid=3,socket=/tmp/vireo-sandboxed.sock", "--sandbox: --vsock and --net unix= name sockets on the host's paths")]
    [InlineData("--net unix=/tmp/a.sock,peer=/tmp/b.sock", "--sandbox: --vsock and --net unix= name sockets on the host's paths")]
    [InlineData("--disk /nonexistent/x.img", "vireo: disk: no such file: /nonexistent/x.img")]
    public void What_the_jail_cannot_have_is_refused_in_words_before_anything_runs(string extra, string says)
    {
        var r = VireoProcess.Run($"run --sandbox --kernel {TestEnvironment.Guest("hello")} {extra}");
        Assert.True(r.ExitCode == 2, $"exit {r.ExitCode}: {r.Error}");
        Assert.Contains(says, r.Error);
        Assert.DoesNotContain("   at ", r.Error);
    }
}
