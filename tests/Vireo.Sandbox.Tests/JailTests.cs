using System.Text;
using Vireo.Interop;
using Vireo.Tests;

namespace Vireo.Sandbox.Tests;

/// <summary>A real vireo-vmm started in its sandbox by <see cref="Jail.Start"/>, looked at from the host through /proc.</summary>
public sealed class JailTests
{
    private const uint Uid = 3_000_101, Gid = 3_000_101;

    /// <summary>A jailed VMM: its pid, its VM directory, its API socket, and its console file.</summary>
    internal sealed class Jailed : IDisposable
    {
        public int Pid { get; }
        public string VmDir { get; }
        public string Socket => Path.Combine(VmDir, "api.sock");
        public string ConsoleFile { get; }
        public HttpClient Http { get; }

        public Jailed(uint uid, string kernel, string name = "jailed")
        {
            string top = TempDirectory.Create("vireo-jail");
            VmDir = Directory.CreateDirectory(Path.Combine(top, "vm")).FullName;
            string root = Directory.CreateDirectory(Path.Combine(top, "root")).FullName;
            ConsoleFile = Path.Combine(top, "console.log");
            var spec = new JailSpec(name, uid, uid, TestEnvironment.Shipped("vireo-vmm"), root, VmDir);
            using var stdin = new FileDescriptor(Libc.Open("/dev/null", Libc.O_RDONLY | Libc.O_CLOEXEC, 0));
            using var console = new FileDescriptor(Libc.Open(ConsoleFile, Libc.O_WRONLY | Libc.O_CREAT | Libc.O_APPEND | Libc.O_CLOEXEC, 0x180));
            using var image = new FileDescriptor(Libc.Open(kernel, Libc.O_RDONLY | Libc.O_CLOEXEC, 0));
            Pid = Jail.Start(spec, ["--api-sock", Socket], [(stdin.Fd, 0), (console.Fd, 1), (console.Fd, 2), (image.Fd, 3)]);
            UnixHttp.WaitForSocket(Socket, () => !Directory.Exists($"/proc/{Pid}") || State() == 'Z', () => File.ReadAllText(ConsoleFile));
            Http = UnixHttp.Client(Socket);
        }

        public char State() => File.ReadAllText($"/proc/{Pid}/stat").Split(") ")[1][0];

        public string Status(string key) =>
            File.ReadLines($"/proc/{Pid}/status").First(l => l.StartsWith(key + ":", StringComparison.Ordinal))[(key.Length + 1)..].Trim();

        public async Task Put(string path, string json)
        {
            using var r = await Http.PutAsync(path, new StringContent(json, Encoding.UTF8, "application/json"));
            Assert.True(r.IsSuccessStatusCode, $"PUT {path}: {(int)r.StatusCode} {await r.Content.ReadAsStringAsync()}");
        }

        /// <summary>Waits for the VMM to end and reaps it (it is this process's child); its exit code.</summary>
        public int WaitForExit(int ms = 30_000)
        {
            var until = DateTime.UtcNow.AddMilliseconds(ms);
            while (DateTime.UtcNow < until)
            {
                if (Spawn.TryReapStatus(Pid, out int code))
                {
                    return code;
                }
                Thread.Sleep(20);
            }
            throw new TimeoutException($"the jailed VMM {Pid} still runs; its console: {File.ReadAllText(ConsoleFile)}");
        }

        public void Dispose()
        {
            Http.Dispose();
            if (Directory.Exists($"/proc/{Pid}"))
            {
                System.Diagnostics.Process.GetProcessById(Pid).Kill();
                WaitForExit();
            }
        }
    }

    [KvmFact]
    public async Task A_jailed_VMM_boots_its_guest_with_no_privilege_left()
    {
        // The kernel is root's and 0600: the VM's uid could not open it, and boots it from the fd it was handed.
        string kernel = Path.Combine(TempDirectory.Create("vireo-kernel"), "hello.elf");
        File.Copy(TestEnvironment.Guest("hello"), kernel);
        File.SetUnixFileMode(kernel, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        using var vmm = new Jailed(Uid, kernel);
        // Its credentials: the VM's own uid and gid, no capability in any set, no_new_privs.
        Assert.Equal($"{Uid}\t{Uid}\t{Uid}\t{Uid}", vmm.Status("Uid"));
        Assert.Equal($"{Gid}\t{Gid}\t{Gid}\t{Gid}", vmm.Status("Gid"));
        Assert.Equal("", vmm.Status("Groups"));
        foreach (var set in new[] { "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb" })
        {
            Assert.True(vmm.Status(set) == "0000000000000000", $"{set} is {vmm.Status(set)}");
        }
        Assert.Equal("1", vmm.Status("NoNewPrivs"));
        // Every thread of it, not only the main one, has dropped its capabilities.
        foreach (var task in Directory.EnumerateDirectories($"/proc/{vmm.Pid}/task"))
        {
            string status = File.ReadAllText(Path.Combine(task, "status"));
            Assert.Contains("CapEff:\t0000000000000000", status);
            Assert.Contains($"Uid:\t{Uid}\t{Uid}\t{Uid}\t{Uid}", status);
        }
        // Namespaces of its own: none of mount, PID, IPC, UTS and network is the host's.
        foreach (var ns in new[] { "mnt", "pid", "ipc", "uts", "net" })
        {
            Assert.NotEqual(new FileInfo($"/proc/self/ns/{ns}").LinkTarget, new FileInfo($"/proc/{vmm.Pid}/ns/{ns}").LinkTarget);
        }
        Assert.Equal("1", vmm.Status("NSpid").Split('\t').Last()); // PID 1 of its namespace
        // Its root holds what the VMM needs and nothing else.
        string root = $"/proc/{vmm.Pid}/root";
        Assert.Equal(["dev", "lib", "lib64", "proc", "tmp", "vireo-vmm"], Directory.EnumerateFileSystemEntries(root).Select(p => Path.GetFileName(p)!).Order().ToArray());
        Assert.Equal(["kvm", "null", "urandom"], Directory.EnumerateFileSystemEntries(root + "/dev").Select(p => Path.GetFileName(p)!).Order().ToArray());
        Assert.True(File.Exists(root + vmm.Socket), "its VM directory is at the same path in the jail");
        Assert.False(Directory.Exists(root + "/etc"));
        // Its limits.
        string limits = File.ReadAllText($"/proc/{vmm.Pid}/limits");
        Assert.Matches(@"Max open files\s+1024\s+1024", limits);
        Assert.Matches(@"Max processes\s+256\s+256", limits);
        Assert.Matches(@"Max core file size\s+0\s+0", limits);

        await vmm.Put("boot-source", """{"kernel_image_path": "/proc/self/fd/3"}""");
        await vmm.Put("actions", """{"action_type": "InstanceStart"}""");
        Assert.Equal(0, vmm.WaitForExit());
        Assert.Contains("Hello from a Vireo test guest!", File.ReadAllText(vmm.ConsoleFile));
    }

    [KvmFact]
    public void Two_jailed_VMMs_see_nothing_of_each_other()
    {
        using var a = new Jailed(Uid, TestEnvironment.Guest("idle"), "a");
        using var b = new Jailed(Uid + 1, TestEnvironment.Guest("idle"), "b");
        Assert.True(Directory.Exists($"/proc/{a.Pid}/root{a.VmDir}"));
        Assert.False(Directory.Exists($"/proc/{a.Pid}/root{b.VmDir}"), "b's directory is not in a's root");
        Assert.False(Directory.Exists($"/proc/{b.Pid}/root{a.VmDir}"), "a's directory is not in b's root");
        // Were it reachable, its owner and mode would still keep the other uid out.
        var stat = new DirectoryInfo(b.VmDir);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, stat.UnixFileMode);
        Assert.Equal((Uid + 1).ToString(System.Globalization.CultureInfo.InvariantCulture), File.ReadLines($"/proc/{b.Pid}/status").First(l => l.StartsWith("Uid:", StringComparison.Ordinal)).Split('\t')[1]);
        // Each sees only itself among processes, and has a host name of its own.
        Assert.Equal(["1"], Directory.EnumerateDirectories($"/proc/{a.Pid}/root/proc").Select(p => Path.GetFileName(p)!).Where(n => n.All(char.IsAsciiDigit)).ToArray());
        Assert.NotEqual(new FileInfo($"/proc/{a.Pid}/ns/net").LinkTarget, new FileInfo($"/proc/{b.Pid}/ns/net").LinkTarget);
    }
}
