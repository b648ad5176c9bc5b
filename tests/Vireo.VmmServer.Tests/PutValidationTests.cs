using System.Net.Http.Headers;
using System.Text.Json;

namespace Vireo.VmmServer.Tests;

/// <summary>
/// What vireo-vmm checks when a PUT arrives, not first at InstanceStart: vsock and network
/// interface fields by `vireo run`'s rules, actions by name, and console input by size (vireod's
/// 64 KiB a request, refused before any of it reaches the guest).
/// </summary>
public class PutValidationTests(SharedVmm process) : IClassFixture<SharedVmm>
{
    private static string Fault(string body) => VmmProcess.Fault(body);

    [Theory]
    [InlineData("""{"guest_cid": 0, "uds_path": "/v.sock"}""", "vsock: guest_cid 0 is reserved; use 3 or more")]
    [InlineData("""{"guest_cid": 2, "uds_path": "/v.sock"}""", "vsock: guest_cid 2 is reserved; use 3 or more")]
    [InlineData("""{"guest_cid": 4294967295, "uds_path": "/v.sock"}""", "vsock: guest_cid 4294967295 is out of range; at most 4294967294")]
    [InlineData("""{"guest_cid": 4294967296, "uds_path": "/v.sock"}""", "vsock: guest_cid 4294967296 is out of range; at most 4294967294")]
    [InlineData("""{"guest_cid": 18446744073709551615, "uds_path": "/v.sock"}""", "vsock: guest_cid 18446744073709551615 is out of range; at most 4294967294")]
    [InlineData("""{"guest_cid": 3, "uds_path": ""}""", "vsock: uds_path is empty")]
    [InlineData("""{"guest_cid": 3, "uds_path": "/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}""",
        "vsock: uds_path is at most 96 bytes, so that PATH_PORT fits a Unix socket address")]
    public async Task Vsock_fields_are_checked_on_put_as_vireo_run_checks_them(string json, string message)
    {
        var (status, body) = await process.Vmm.Put("vsock", json);
        Assert.True(status == 400, $"{status} {body}");
        Assert.Equal(message, Fault(body));
    }

    [Theory]
    [InlineData("""{"iface_id": "eth0", "host_dev_name": ""}""", "network-interface: host_dev_name '': a TAP name is 1 to 15 characters (or /proc/self/fd/N, a TAP handed over open)")]
    [InlineData("""{"iface_id": "eth0", "host_dev_name": "a-name-of-16-chr"}""", "network-interface: host_dev_name 'a-name-of-16-chr': a TAP name is 1 to 15 characters (or /proc/self/fd/N, a TAP handed over open)")]
    [InlineData("""{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "zz"}""", "network-interface: guest_mac 'zz' is not a MAC address (XX:XX:XX:XX:XX:XX)")]
    [InlineData("""{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "01:00:00:00:00:00"}""", "network-interface: guest_mac '01:00:00:00:00:00' is a multicast address; an interface needs a unicast MAC")]
    public async Task Network_interface_fields_are_checked_on_put(string json, string message)
    {
        var (status, body) = await process.Vmm.Put("network-interfaces/eth0", json);
        Assert.True(status == 400, $"{status} {body}");
        Assert.Equal(message, Fault(body));
    }

    [Fact]
    public async Task Valid_vsock_and_network_interfaces_are_still_accepted()
    {
        await process.Vmm.Ok("vsock", """{"guest_cid": 4294967294, "uds_path": "/tmp/v.sock"}""");
        await process.Vmm.Ok("network-interfaces/eth1", """{"iface_id": "eth1", "host_dev_name": "tap-fifteen-ch", "guest_mac": "52:54:00:12:34:56"}""");
    }

    [Fact]
    public async Task An_unknown_action_is_named_as_unknown_whatever_the_state()
    {
        var (status, body) = await process.Vmm.Put("actions", """{"action_type": "Bogus"}""");
        Assert.Equal(400, status);
        Assert.Equal("action_type 'Bogus' is not one of InstanceStart, Pause, Resume, Shutdown, Reset, Stop", Fault(body));
    }

    [Fact]
    public async Task Console_input_over_64_kib_is_a_413_by_content_length_and_while_reading()
    {
        const string limit = "console input is limited to 65536 bytes a request: send more in several";
        using (var r = await process.Vmm.Http.PutAsync("console/input", new ByteArrayContent(new byte[65537])))
        {
            Assert.Equal(413, (int)r.StatusCode);
            Assert.Equal(limit, Fault(await r.Content.ReadAsStringAsync()));
        }
        // No Content-Length (chunked): refused once more than the limit has been read.
        var chunked = new StreamContent(new MemoryStream(new byte[1 << 20]));
        using (var request = new HttpRequestMessage(HttpMethod.Put, "console/input") { Content = chunked })
        {
            request.Headers.TransferEncodingChunked = true;
            using var r = await process.Vmm.Http.SendAsync(request);
            Assert.Equal(413, (int)r.StatusCode);
            Assert.Equal(limit, Fault(await r.Content.ReadAsStringAsync()));
        }
        // At the limit the input reaches the session (which refuses it: no VM is running).
        using (var r = await process.Vmm.Http.PutAsync("console/input", new ByteArrayContent(new byte[65536])))
        {
            Assert.Equal(400, (int)r.StatusCode);
            Assert.Equal("console input: the VM is NotStarted", Fault(await r.Content.ReadAsStringAsync()));
        }
    }
}
