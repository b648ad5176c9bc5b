using Vireo.Tests;

namespace Vireo.Daemon.Tests;

/// <summary>How vireod reads why a VMM ended, from files in a directory a sandboxed VM's uid owns.</summary>
public class VmmStatusTests
{
    [Fact]
    public void A_vmm_its_seccomp_filter_killed_is_a_crash_that_names_the_call()
    {
        string dir = TempDirectory.Create("vireo-status");
        string log = Path.Combine(dir, "vmm.log");
        File.WriteAllText(log, "earlier words\nvireo-vmm: seccomp: the vcpu thread 12 (vcpu0) made a system call its list does not allow: socket (41)\n");
        var status = VmmStatus.Read(Path.Combine(dir, "status"), log);
        Assert.Equal(VmmStatus.EndKind.Crash, status.Kind);
        Assert.Equal("the VMM was killed by its seccomp filter: the vcpu thread 12 (vcpu0) made a system call its list does not allow: socket (41)", status.Text);

        File.WriteAllText(log, "nothing about seccomp\n");
        Assert.Equal("the VMM process died", VmmStatus.Read(Path.Combine(dir, "status"), log).Text);
    }

    [Fact]
    public void Links_and_fifos_left_in_the_vms_directory_are_never_read()
    {
        string dir = TempDirectory.Create("vireo-status");
        string host = Path.Combine(TempDirectory.Create("vireo-host"), "secret");
        File.WriteAllText(host, "0 PowerOff the host's secret\n");
        File.CreateSymbolicLink(Path.Combine(dir, "status"), host);
        string elsewhere = Path.Combine(dir, "elsewhere.log");
        File.WriteAllText(elsewhere, "vireo-vmm: seccomp: planted\n");
        File.CreateSymbolicLink(Path.Combine(dir, "vmm.log"), elsewhere);
        var status = VmmStatus.Read(Path.Combine(dir, "status"), Path.Combine(dir, "vmm.log"));
        Assert.Equal((VmmStatus.EndKind.Crash, "the VMM process died"), (status.Kind, status.Text));

        File.Delete(Path.Combine(dir, "status"));
        Assert.Equal(0, TestEnvironment.Run("mkfifo", Path.Combine(dir, "status")).ExitCode);
        Assert.Equal("the VMM process died", VmmStatus.Read(Path.Combine(dir, "status"), null).Text); // and no hang on the FIFO
    }

    [Fact]
    public void A_status_file_is_read_as_before_and_bounded()
    {
        string dir = TempDirectory.Create("vireo-status");
        File.WriteAllText(Path.Combine(dir, "status"), "0 PowerOff the guest powered off\n");
        Assert.Equal((VmmStatus.EndKind.PowerOff, "the guest powered off"), (VmmStatus.Read(Path.Combine(dir, "status")) is var s ? (s.Kind, s.Text) : default));
        File.WriteAllText(Path.Combine(dir, "status"), "1 HostError " + new string('x', 100_000));
        Assert.True(VmmStatus.Read(Path.Combine(dir, "status")).Text.Length < 1100);
    }
}
