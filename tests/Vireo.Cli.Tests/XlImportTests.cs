using Vireo.Api.Definitions;
using Vireo.Cli.Import;
using Vireo.Tests;

namespace Vireo.Cli.Tests;

public class XlImportTests
{
    private const string Cfg = """
        # A PVH guest, as xl.cfg(5) writes it
        name = "db-1"
        type = "pvh"
        memory = 1024
        maxmem = 2048
        vcpus = 2; maxvcpus = 4
        kernel = "/images/vmlinuz"
        ramdisk = "images/initrd.img"
        root = "/dev/xvda1 ro"
        extra = "console=hvc0"
        disk = [ 'format=raw, vdev=xvda, access=rw, target=/images/root.img',
                 '/images/data.qcow2,qcow2,xvdb,rw',
                 'phy:/dev/vg0/logs,raw,xvdc,ro',
                 '/images/install.iso,raw,hdc,ro,devtype=cdrom' ]
        vif = [ 'mac=00:16:3e:00:00:01,bridge=xenbr0,vifname=tap-db1' , 'bridge=xenbr1' ]
        on_crash = "coredump-restart"
        on_reboot = 'destroy'
        serial = 'pty'
        """;

    [Fact]
    public void Common_keys_are_converted_and_every_key_not_honoured_is_reported()
    {
        var r = XlImport.Convert(Cfg, "/etc/xen");
        Assert.Null(r.Error);
        var d = r.Definition!;
        Assert.Equal(("db-1", 1024L, 2, "/images/vmlinuz", "/etc/xen/images/initrd.img"), (d.Name, d.MemoryMib, d.Vcpus, d.Kernel, d.Initrd));
        Assert.Equal("root=/dev/vda1 ro console=hvc0", d.Cmdline);
        Assert.Equal([("/images/root.img", false), ("/dev/vg0/logs", true)], d.Disks!.Select(x => (x.Path, x.ReadOnly)));
        Assert.Equal([("tap-db1", "00:16:3e:00:00:01"), ("vif-db-1.1", null)], d.Nets!.Select(n => (n.Tap, n.Mac)));
        Assert.Equal(("restart", "destroy", "destroy"), (d.OnCrash, d.OnReboot, d.OnPoweroff));
        string notes = string.Join("\n", r.Notes);
        foreach (var expected in new[]
        {
            "maxmem: 2048 MiB cannot be honoured", "maxvcpus: 4 cannot be honoured", "disk[1]: /images/data.qcow2: format 'qcow2' is not supported",
            "disk[3]: CD-ROM /images/install.iso: Vireo has no CD-ROM device", "vif[0]: bridge=xenbr0", "vif[1]: no vifname", "on_crash: 'coredump-restart' is not supported",
            "line 18: serial: not supported by Vireo; ignored",
            "root: '/dev/xvda1 ro' names Xen's disks (xvd*); under Vireo they are virtio disks (vd*), so it becomes '/dev/vda1 ro'",
        })
        {
            Assert.Contains(expected, notes);
        }
        Assert.Equal(9 + 1, r.Notes.Count); // and the vif[1] bridge
        Assert.NotNull(DefinitionReader.Parse(DefinitionReader.ToYaml(d)).Definition);
    }

    [Theory]
    [InlineData("'file:/srv/debian.iso,hdc:cdrom,r'", "disk[0]: CD-ROM /srv/debian.iso: Vireo has no CD-ROM device (attach an image as a read-only disk instead); skipped")]
    [InlineData("',hdc:cdrom,r'", "disk[0]: an empty CD-ROM drive: Vireo has no CD-ROM device; skipped")]
    [InlineData("'/srv/debian.iso,raw,hdc,r,devtype=cdrom'", "disk[0]: CD-ROM /srv/debian.iso: Vireo has no CD-ROM device (attach an image as a read-only disk instead); skipped")]
    public void A_cdrom_is_reported_as_a_cdrom_whatever_form_it_takes(string disk, string note)
    {
        var r = XlImport.Convert($"name = \"x\"\nkernel = \"/k\"\ndisk = [ {disk}, 'phy:/dev/vg/x,xvda,w' ]\n", "/");
        Assert.Equal(note, Assert.Single(r.Notes));
        Assert.DoesNotContain("format", r.Notes[0]);
        Assert.Equal([("/dev/vg/x", false)], r.Definition!.Disks!.Select(x => (x.Path, x.ReadOnly)));
    }

    [Theory]
    [InlineData("name = \"x\"\nmemory = [1", "line 2: expected ',', found the end of the file")]
    [InlineData("name = \"x\nkernel = \"k\"", "line 1: a string is not closed")]
    [InlineData("name = \"x\"\nkernel = \"vm\0linuz\"", "line 2: a string holds a NUL character")] // found by fuzz/run xl-cfg
    [InlineData("name = \"x\" kernel = \"k\"", "line 1: expected the end of the line after the value")]
    [InlineData("= 3", "line 1: expected a setting name")]
    [InlineData("memory = 512\nkernel = \"/k\"", "name: required, and not set")]
    [InlineData("name = \"hvm-guest\"\ntype = \"hvm\"", "kernel: not set: Vireo boots a kernel directly")]
    public void Malformed_or_unbootable_configs_are_refused_with_the_line(string cfg, string error)
    {
        var r = XlImport.Convert(cfg, "/");
        Assert.Null(r.Definition);
        Assert.Contains(error, r.Error);
    }

    [Fact]
    public void The_command_writes_yaml_and_reports_notes_on_stderr()
    {
        string dir = TempDirectory.Create("xl-import");
        string cfg = Path.Combine(dir, "db.cfg");
        File.WriteAllText(cfg, Cfg);
        var r = VireoProcess.Run($"import xl {cfg}");
        Assert.True(r.ExitCode == 0, r.Error);
        Assert.Contains("name: \"db-1\"", r.Output);
        Assert.Contains("# Not honoured:", r.Output);
        Assert.Contains($"vireo import: {cfg}: maxmem: 2048 MiB cannot be honoured", r.Error);
        Assert.Equal(2, VireoProcess.Run($"import xl {cfg} --strict").ExitCode);
        Assert.Equal(2, VireoProcess.Run($"import xl {dir}/none.cfg").ExitCode);
        Assert.NotNull(DefinitionReader.Parse(r.Output).Definition);
        Assert.EndsWith("\n", r.Output);
        Assert.Equal(0, VireoProcess.Run($"import xl {cfg} -o {dir}/db.yaml").ExitCode);
        Assert.EndsWith("\n", File.ReadAllText($"{dir}/db.yaml"));
        var zero = VireoProcess.Run("import xl /dev/zero");
        Assert.Equal(2, zero.ExitCode);
        Assert.Contains("longer than 1048576 characters", zero.Error);
    }
}

public class DaemonClientTests
{
    [Fact]
    public void Answers_from_a_newer_daemon_with_more_fields_are_still_read()
    {
        var vms = Vireo.Cli.Manage.DaemonClient.Parse("""[{"name":"a","id":1,"state":"running","vcpus":1,"memory_mib":32,"uptime_seconds":null,"pid":null,"numa_node":0}]""",
            Vireo.Api.DaemonJson.Default.VmListEntryArray);
        Assert.Equal("a", Assert.Single(vms).Name);
        var e = Assert.Throws<Vireo.Cli.Manage.CliException>(() => Vireo.Cli.Manage.DaemonClient.Parse("{", Vireo.Api.DaemonJson.Default.VmSummary));
        Assert.Equal(1, e.ExitCode);
    }
}
