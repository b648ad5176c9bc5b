namespace Vireo.Sandbox.Tests;

public sealed class JailOptionTests
{
    [Fact]
    public void What_the_launcher_writes_the_VMM_reads_back()
    {
        var spec = new JailSpec("vm", 3_000_001, 3_000_002, "/x", "/r", "/d", MaxFiles: 2048, MaxProcesses: 99);
        Assert.Equal(new JailOption(3_000_001, 3_000_002, 2048, 99), JailOption.Parse(JailOption.Format(spec), out string? error));
        Assert.Null(error);
    }

    [Theory]
    [InlineData("uid=5,gid=5,nofile=64", "nproc is missing")]
    [InlineData("uid=5,gid=5,nofile=64,nproc=8,uid=6", "uid is given twice")]
    [InlineData("uid=0,gid=5,nofile=64,nproc=8", "uid and gid must be between 1 and 4294967294")]
    [InlineData("uid=5,gid=4294967295,nofile=64,nproc=8", "uid and gid must be between 1 and 4294967294")]
    [InlineData("uid=-5,gid=5,nofile=64,nproc=8", "uid: a whole number is needed")]
    [InlineData("uid=5,gid=5,nofile=64,nproc=8,root=/", "unknown key 'root' (uid, gid, nofile, nproc)")]
    [InlineData("", "unknown key '' (uid, gid, nofile, nproc)")]
    public void A_bad_value_is_refused_by_its_key(string value, string expected)
    {
        Assert.Null(JailOption.Parse(value, out string? error));
        Assert.Equal(expected, error);
    }

    [Fact]
    public void A_spec_that_would_run_as_root_is_refused()
    {
        var spec = new JailSpec("vm", 0, 5, "/bin/true", "/", "/");
        Assert.Equal("a sandboxed VMM never runs as uid or gid 0", spec.Problem());
        Assert.Contains("uid or gid 0", Assert.Throws<SandboxException>(() => Jail.Start(spec, [], [])).Message);
    }
}
