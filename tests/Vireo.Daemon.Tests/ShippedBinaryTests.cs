using System.Diagnostics;
using Vireo.Api;
using Vireo.Tests;

namespace Vireo.Daemon.Tests;

/// <summary>
/// What ships is native (issue 13): vireo, vireo-vmm and vireod are Native AOT executables that
/// load neither the .NET runtime's shared libraries nor a JIT, and no managed assembly ships beside them.
/// </summary>
public class ShippedBinaryTests
{
    /// <summary>The files of the .NET runtime a JIT-ed or ReadyToRun process maps; a native one maps none.</summary>
    private static readonly string[] RuntimeLibraries = ["libcoreclr.so", "libclrjit.so", "libhostfxr.so", "libhostpolicy.so", "System.Private.CoreLib.dll"];

    private static void AssertNative(int pid, string program)
    {
        string exe = new FileInfo($"/proc/{pid}/exe").LinkTarget!;
        // A sandboxed VMM's executable is the shipped one, bound at /vireo-vmm in its jail's root.
        Assert.Contains(exe, new[] { TestEnvironment.Shipped(program), "/" + program });
        string maps = File.ReadAllText($"/proc/{pid}/maps");
        foreach (var library in RuntimeLibraries)
        {
            Assert.False(maps.Contains(library), $"{program} (pid {pid}) maps {library}: it is not a native executable");
        }
    }

    [Fact]
    public void No_managed_assembly_or_runtime_configuration_ships_beside_the_executables()
    {
        string dir = Path.GetDirectoryName(TestEnvironment.Shipped("vireo"))!;
        // Symbols (*.dbg) and scripts/build's stamp (.built) aside.
        string[] files = Directory.GetFiles(dir).Select(f => Path.GetFileName(f)).Where(f => !f.EndsWith(".dbg") && !f.StartsWith('.')).Order().ToArray();
        Assert.Equal(new[] { "libe_sqlite3.so", "vireo", "vireo-vmm", "vireod" }, files);
        foreach (var program in new[] { "vireo", "vireo-vmm", "vireod" })
        {
            var head = new byte[4];
            using (var f = File.OpenRead(Path.Combine(dir, program)))
            {
                f.ReadExactly(head);
            }
            Assert.Equal("\u007fELF"u8.ToArray(), head);
        }
    }

    [KvmFact]
    public async Task Vireod_its_vmm_and_the_cli_run_without_the_runtime_or_a_jit()
    {
        using var d = new DaemonProcess();
        await d.Ok(HttpMethod.Post, "vms", DaemonProcess.Definition("native"));
        var vm = await d.Ok(HttpMethod.Post, "vms/native/start");
        AssertNative(d.Pid, "vireod");
        AssertNative(vm.Pid!.Value, "vireo-vmm");

        // `vireo events` replays the kept events, then follows the stream until stopped: a CLI process that stays to be looked at.
        var psi = new ProcessStartInfo(TestEnvironment.Shipped("vireo"), "events --after 0")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.Environment["VIREO_CONNECT"] = d.Socket;
        using var cli = Process.Start(psi)!;
        try
        {
            string? first = await cli.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(30));
            Assert.NotNull(first);
            AssertNative(cli.Id, "vireo");
        }
        finally
        {
            cli.Kill();
        }
        Assert.Equal(DomainState.ShutOff, (await d.Ok(HttpMethod.Post, "vms/native/destroy")).State);
    }
}
