using System.Security.Cryptography;
using System.Text.Json;
using Vireo.Api;
using Vireo.Api.Definitions;
using Vireo.Tests;

namespace Vireo.Daemon.Tests;

/// <summary>
/// A guest must never reach a host file outside the image directories: not through a directory
/// link, not through a file swapped for a link between define and start, and a FIFO or a device
/// in the image directory is refused, not opened.
/// </summary>
public class ImagePolicyTests
{
    private static readonly HttpMethod Post = HttpMethod.Post;

    /// <summary>An image directory for this test, a directory outside it, and a daemon that knows the first.</summary>
    private sealed class Setup : IDisposable
    {
        public string Images { get; } = TempDirectory.Create("images");
        public string Outside { get; } = TempDirectory.Create("outside");
        public DaemonProcess Daemon { get; }

        public Setup() => Daemon = new DaemonProcess(extraArgs: $"--image-dir {Images}");

        public string Kernel(string guest = "idle") => TestEnvironment.Guest(guest);

        public void Dispose() => Daemon.Dispose();
    }

    [KvmFact]
    public async Task A_directory_link_inside_an_image_directory_that_leads_outside_is_refused_at_define_and_at_start()
    {
        using var s = new Setup();
        File.Copy(s.Kernel(), Path.Combine(s.Outside, "idle.elf"));
        File.WriteAllBytes(Path.Combine(s.Outside, "disk.img"), new byte[1 << 20]);
        File.CreateSymbolicLink(Path.Combine(s.Images, "escape"), s.Outside);

        var (status, body) = await s.Daemon.Send(Post, "vms", Definition("k", Path.Combine(s.Images, "escape", "idle.elf")));
        Assert.Equal(400, status);
        Assert.Contains("kernel: ", Fault(body));
        Assert.Contains("leads outside the image directories", Fault(body));
        (status, body) = await s.Daemon.Send(Post, "vms", Definition("d", s.Kernel(), disk: Path.Combine(s.Images, "escape", "disk.img")));
        Assert.Equal(400, status);
        Assert.Contains("disks[0].path: ", Fault(body));

        // Defined while "sub" was a real directory, then "sub" made a link to the outside.
        string sub = Path.Combine(s.Images, "sub");
        Directory.CreateDirectory(sub);
        File.Copy(s.Kernel(), Path.Combine(sub, "idle.elf"));
        await s.Daemon.Ok(Post, "vms", Definition("later", Path.Combine(sub, "idle.elf")));
        Directory.Move(sub, sub + ".old");
        File.CreateSymbolicLink(sub, s.Outside);
        (status, body) = await s.Daemon.Send(Post, "vms/later/start");
        Assert.Equal(409, status);
        Assert.Contains("kernel: ", Fault(body));
        Assert.Contains("leads outside the image directories", Fault(body));
        Assert.Equal((DomainState.ShutOff, null), ((await s.Daemon.Get("later")).State, (await s.Daemon.Get("later")).Pid));
    }

    [KvmFact]
    public async Task A_disk_swapped_for_a_link_to_an_outside_file_after_define_is_refused_at_start_and_the_file_is_untouched()
    {
        using var s = new Setup();
        string disk = Path.Combine(s.Images, "disk.img");
        File.WriteAllBytes(disk, new byte[2 << 20]);
        string victim = Path.Combine(s.Outside, "victim");
        byte[] original = RandomNumberGenerator.GetBytes(2 << 20);
        File.WriteAllBytes(victim, original);
        // blk writes a pattern over the first MiB of its disk: followed, the link would overwrite the victim.
        await s.Daemon.Ok(Post, "vms", Definition("swap", s.Kernel("blk"), disk: disk, extra: """, "cmdline": "mib=1" """));
        File.Delete(disk);
        File.CreateSymbolicLink(disk, victim);

        var (status, body) = await s.Daemon.Send(Post, "vms/swap/start");
        Assert.Equal(409, status);
        Assert.Contains("disks[0].path: ", Fault(body));
        Assert.Contains("leads outside the image directories", Fault(body));
        await Task.Delay(1000); // were a VMM running after all, this is when its guest would write
        Assert.Equal(original, File.ReadAllBytes(victim));
        Assert.Equal(DomainState.ShutOff, (await s.Daemon.Get("swap")).State);
        Assert.Empty(VmmProcessesOf(s.Daemon, "swap"));
    }

    [KvmFact]
    public async Task A_fifo_a_device_node_or_a_link_to_dev_zero_in_an_image_directory_is_refused_and_the_daemon_keeps_serving()
    {
        using var s = new Setup();
        string fifo = Path.Combine(s.Images, "fifo");
        Assert.Equal(0, TestEnvironment.Run("mkfifo", fifo).ExitCode);
        string zero = Path.Combine(s.Images, "zero");
        File.CreateSymbolicLink(zero, "/dev/zero");
        File.WriteAllBytes(Path.Combine(s.Outside, "victim"), [1, 2, 3]);
        File.CreateSymbolicLink(Path.Combine(s.Images, "up"), "../" + Path.GetFileName(s.Outside)); // relative, out through ".."
        var cases = new List<(string Json, string Field, string Why)>
        {
            (Definition("a", fifo), "kernel", "is a FIFO, not a regular file"),
            (Definition("b", s.Kernel(), disk: fifo), "disks[0].path", "is a FIFO, not a regular file or a block device"),
            (Definition("c", zero), "kernel", "leads outside the image directories"),
            (Definition("d", s.Kernel(), initrd: zero), "initrd", "leads outside the image directories"),
            (Definition("e", Directory.CreateDirectory(Path.Combine(s.Images, "dir")).FullName), "kernel", "is a directory"),
            (Definition("j", s.Images + "/up/victim"), "kernel", "leads outside the image directories"),
            (Definition("g", s.Images + "/nul\\u0000.elf"), "kernel", "NUL character"),
            (Definition("h", s.Images + "/" + new string('n', 300)), "kernel", "File name too long"),
            (Definition("i", s.Images + "/../" + Path.GetFileName(s.Outside) + "/victim"), "kernel", "outside the image directories"),
        };
        string node = Path.Combine(s.Images, "null");
        if (TestEnvironment.Run("mknod", $"{node} c 1 3").ExitCode == 0) // only root may make a device node
        {
            cases.Add((Definition("f", s.Kernel(), disk: node), "disks[0].path", "is a character device"));
        }
        foreach (var (json, field, why) in cases)
        {
            var (status, body) = await s.Daemon.Send(Post, "vms", json);
            Assert.True(status == 400, $"{json}: {status} {body}");
            Assert.Contains($"{field}: ", Fault(body));
            Assert.Contains(why, Fault(body));
        }
        Assert.Empty(await s.Daemon.List());

        // Defined while a regular file, then replaced by a FIFO: start refuses it without blocking on it.
        string kernel = Path.Combine(s.Images, "kernel.elf");
        File.Copy(s.Kernel(), kernel);
        await s.Daemon.Ok(Post, "vms", Definition("late", kernel));
        File.Delete(kernel);
        Assert.Equal(0, TestEnvironment.Run("mkfifo", kernel).ExitCode);
        var (code, text) = await s.Daemon.Send(Post, "vms/late/start").WaitAsync(TimeSpan.FromSeconds(20));
        Assert.Equal(409, code);
        Assert.Contains("kernel: ", Fault(text));
        Assert.Contains("is a FIFO", Fault(text));
        Assert.Equal(["late"], (await s.Daemon.List()).Select(v => v.Name));
    }

    [KvmFact]
    public async Task An_autostart_vm_whose_kernel_became_a_link_outside_is_not_started_and_the_refusal_is_logged()
    {
        using var s = new Setup();
        string kernel = Path.Combine(s.Images, "kernel.elf");
        File.Copy(s.Kernel(), kernel);
        File.Copy(s.Kernel(), Path.Combine(s.Outside, "kernel.elf"));
        await s.Daemon.Ok(Post, "vms", Definition("auto", kernel, extra: """, "autostart": true"""));
        File.Delete(kernel);
        File.CreateSymbolicLink(kernel, Path.Combine(s.Outside, "kernel.elf"));
        s.Daemon.KillAndRestart();
        Assert.Equal(DomainState.ShutOff, (await s.Daemon.Get("auto")).State);
        Assert.Empty(VmmProcessesOf(s.Daemon, "auto"));
        await Eventually.Until(() => Task.FromResult(s.Daemon.Log.Contains("autostart-failed", StringComparison.Ordinal)), "the refusal in the log");
        Assert.Contains("kernel: ", s.Daemon.Log);
    }

    [Fact]
    public void Where_openat2_is_missing_the_no_follow_walk_refuses_every_link_and_opens_plain_files()
    {
        string images = TempDirectory.Create("images") + "/";
        string outside = TempDirectory.Create("outside");
        File.WriteAllText(Path.Combine(outside, "k"), "kernel");
        Directory.CreateDirectory(Path.Combine(images, "real"));
        File.WriteAllText(Path.Combine(images, "real", "k"), "kernel");
        Directory.CreateSymbolicLink(Path.Combine(images, "dirlink"), outside);
        File.CreateSymbolicLink(Path.Combine(images, "filelink"), "real/k"); // relative: RESOLVE_BENEATH refuses any absolute link
        foreach (bool walk in new[] { false, true })
        {
            var (files, error) = ImagePolicy.OpenAll(Def(Path.Combine(images, "real", "k")), [images], walk);
            Assert.Null(error);
            files!.ForEach(f => f.Dispose());
            (_, error) = ImagePolicy.OpenAll(Def(Path.Combine(images, "dirlink", "k")), [images], walk);
            Assert.Equal("kernel", error?.Path);
            // A link that stays inside: followed by openat2 (RESOLVE_BENEATH), refused by the walk, which follows none.
            (files, error) = ImagePolicy.OpenAll(Def(Path.Combine(images, "filelink")), [images], walk);
            Assert.Equal(walk, error is not null);
            files?.ForEach(f => f.Dispose());
        }
    }

    private static VmDefinition Def(string kernel) => DefinitionReader.Parse($$"""{"name": "w", "kernel": "{{kernel}}"}""").Definition!;

    [KvmFact]
    public async Task A_vmm_refusal_names_the_file_by_its_path_not_by_the_fd_it_was_handed()
    {
        using var s = new Setup();
        string big = Path.Combine(s.Images, "big.elf");
        using (var f = File.Create(big))
        {
            f.SetLength(1L << 30); // sparse: 1 GiB of kernel for a 32 MiB guest
        }
        Assert.Equal(201, (await s.Daemon.Send(Post, "vms", Definition("big", big))).Status);
        var (status, body) = await s.Daemon.Send(Post, "vms/big/start");
        Assert.Equal(409, status);
        Assert.Contains($"kernel: {big} is 1024 MiB", Fault(body));
        Assert.DoesNotContain("/proc/self/fd", Fault(body));
    }

    private static string Definition(string name, string kernel, string? disk = null, string? initrd = null, string extra = "") =>
        "{" + $"\"name\": \"{name}\", \"kernel\": \"{kernel}\", \"memory_mib\": 32"
        + (initrd is null ? "" : $", \"initrd\": \"{initrd}\"")
        + (disk is null ? "" : ", \"disks\": [{\"path\": \"" + disk + "\"}]")
        + extra + "}";

    private static string Fault(string body) => JsonDocument.Parse(body).RootElement.GetProperty("fault_message").GetString()!;

    /// <summary>vireo-vmm processes whose command line names this VM's API socket.</summary>
    internal static List<int> VmmProcessesOf(DaemonProcess d, string vm)
    {
        string sock = Path.Combine(d.StateDir, "vms", vm, "api.sock");
        var pids = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (int.TryParse(Path.GetFileName(dir), out int pid))
            {
                try
                {
                    if (File.ReadAllText(Path.Combine(dir, "cmdline")).Split('\0').Contains(sock) && !File.ReadAllText(Path.Combine(dir, "stat")).Contains(") Z ", StringComparison.Ordinal))
                    {
                        pids.Add(pid);
                    }
                }
                catch (IOException)
                {
                    // it ended while we looked
                }
            }
        }
        return pids;
    }
}
