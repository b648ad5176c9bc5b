namespace Vireo.Tests;

/// <summary>
/// Two TAP devices (with vnet headers) on a bridge of their own, layer 2 only: no addresses, IPv6
/// off, so only the test's frames cross it. Removed on Dispose.
/// </summary>
internal sealed class TapBridge : IDisposable
{
    public string TapA { get; }
    public string TapB { get; }
    public string Bridge { get; }

    /// <param name="prefix">two letters: the devices are PREFIXa…, PREFIXb… and PREFIXr… (15 characters at most)</param>
    public TapBridge(string prefix)
    {
        string id = Guid.NewGuid().ToString("n")[..6];
        (TapA, TapB, Bridge) = ($"{prefix}a{id}", $"{prefix}b{id}", $"{prefix}r{id}");
        try
        {
            Ip($"link add name {Bridge} type bridge");
            foreach (var tap in new[] { TapA, TapB })
            {
                Ip($"tuntap add dev {tap} mode tap vnet_hdr");
                TestEnvironment.Run("sysctl", $"-qw net.ipv6.conf.{tap}.disable_ipv6=1");
                Ip($"link set {tap} master {Bridge}");
                Ip($"link set {tap} up");
            }
            TestEnvironment.Run("sysctl", $"-qw net.ipv6.conf.{Bridge}.disable_ipv6=1");
            Ip($"link set {Bridge} up");
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    private static void Ip(string args)
    {
        var r = TestEnvironment.Run("ip", args);
        Assert.True(r.ExitCode == 0, $"ip {args}: {r.Error}");
    }

    public void Dispose()
    {
        foreach (var dev in new[] { TapA, TapB, Bridge })
        {
            TestEnvironment.Run("ip", $"link del {dev}");
        }
    }
}
