using System.Net.Sockets;
using System.Text;
using Vireo.Tests;

namespace Vireo.VmmServer.Tests;

/// <summary>vireo-vmm driven over its Unix-socket API as a daemon (or curl) would drive it.</summary>
public class VmmApiTests
{
    private static string Kernel(string guest) => TestEnvironment.Guest(guest);

    [KvmFact]
    public async Task Configure_start_pause_resume_and_stop_a_vm()
    {
        using var vmm = new VmmProcess();
        Assert.Equal("NotStarted", (await vmm.Info())!.State);
        await vmm.Ok("boot-source", $$"""{"kernel_image_path": "{{Kernel("console")}}"}""");
        await vmm.Ok("machine-config", """{"vcpu_count": 2, "mem_size_mib": 64}""");
        await vmm.Ok("actions", """{"action_type": "InstanceStart"}""");
        await Eventually.Until(async () => (await vmm.Info())!.Exits > 1000, "the guest to poll its UART");
        var running = (await vmm.Info())!;
        Assert.Equal(("Running", 2, 64L, 1), (running.State, running.VcpuCount, running.MemSizeMib, running.Boots));

        await vmm.Ok("actions", """{"action_type": "Pause"}""");
        var paused = (await vmm.Info())!;
        Assert.Equal("Paused", paused.State);
        await Task.Delay(300);
        Assert.Equal(paused.Exits, (await vmm.Info())!.Exits); // no vCPU ran

        await vmm.Ok("actions", """{"action_type": "Resume"}""");
        await Eventually.Until(async () => (await vmm.Info())!.Exits > paused.Exits + 1000, "exits after resume");
        Assert.Equal("Running", (await vmm.Info())!.State);

        await vmm.Ok("actions", """{"action_type": "Stop"}""");
        Assert.Equal(0, vmm.WaitForExit());
        Assert.Contains("console: type; a line \"q\" quits", vmm.Output); // the guest's serial console is stdout
        Assert.False(File.Exists(vmm.Socket));
    }

    [KvmFact]
    public async Task Reset_boots_the_vm_again_and_a_guest_power_off_ends_the_process()
    {
        using var vmm = new VmmProcess();
        await vmm.Ok("boot-source", $$"""{"kernel_image_path": "{{Kernel("console")}}"}""");
        await vmm.Ok("actions", """{"action_type": "InstanceStart"}""");
        await vmm.Ok("actions", """{"action_type": "Reset"}""");
        await Eventually.Until(async () => (await vmm.Info())!.Boots == 2, "the second boot");
        Assert.Equal("Running", (await vmm.Info())!.State);
        Assert.Contains("reset from the API", (await vmm.Info())!.LastOutcome);
        await vmm.Ok("actions", """{"action_type": "Stop"}""");
        Assert.Equal(0, vmm.WaitForExit());

        using var hello = new VmmProcess();
        await hello.Ok("boot-source", $$"""{"kernel_image_path": "{{Kernel("hello")}}"}""");
        await hello.Ok("actions", """{"action_type": "InstanceStart"}"""); // it prints and powers off through ACPI
        Assert.Equal(0, hello.WaitForExit());
        Assert.Contains("Hello from a Vireo test guest!", hello.Output);
    }

    [KvmFact]
    public async Task A_console_nobody_reads_loses_its_bytes_and_the_vm_goes_on()
    {
        using var vmm = VmmProcess.WithStdoutClosed(); // stdout is written with write(2): each byte fails with EPIPE
        await vmm.Ok("boot-source", $$"""{"kernel_image_path": "{{Kernel("hello")}}"}""");
        await vmm.Ok("actions", """{"action_type": "InstanceStart"}"""); // it prints and powers off through ACPI
        Assert.Equal(0, vmm.WaitForExit());
    }

    [KvmFact]
    public async Task Shutdown_presses_the_acpi_power_button_and_the_guest_powers_off()
    {
        using var vmm = new VmmProcess();
        await vmm.Ok("boot-source", $$"""{"kernel_image_path": "{{Kernel("powerbutton")}}"}""");
        await vmm.Ok("actions", """{"action_type": "InstanceStart"}""");
        await Eventually.Until(() => Task.FromResult(vmm.Output.Contains("powerbutton: armed, waiting")), "the guest to arm its power button");
        await vmm.Ok("actions", """{"action_type": "Shutdown"}""");
        Assert.Equal(0, vmm.WaitForExit());
        Assert.Contains("powerbutton: pressed, status now 0x0; powering off", vmm.Output);
    }

    [KvmFact]
    public async Task The_console_streams_history_and_live_output_and_takes_input()
    {
        using var vmm = new VmmProcess();
        await vmm.Ok("boot-source", $$"""{"kernel_image_path": "{{Kernel("console")}}"}""");
        await vmm.Ok("actions", """{"action_type": "InstanceStart"}""");
        await Eventually.Until(() => Task.FromResult(vmm.Output.Contains("console: type")), "the guest's prompt");

        // Attached after the prompt was written: it comes from the history, then the echo live.
        using var stream = await vmm.Http.GetStreamAsync("console");
        var seen = new StringBuilder();
        var reading = Task.Run(async () =>
        {
            var buf = new byte[4096];
            int n;
            while ((n = await stream.ReadAsync(buf)) > 0)
            {
                lock (seen)
                {
                    seen.Append(Encoding.ASCII.GetString(buf, 0, n));
                }
            }
        });
        string Seen() { lock (seen) { return seen.ToString(); } }
        await Eventually.Until(() => Task.FromResult(Seen().Contains("console: type; a line \"q\" quits")), "the history");
        using (var r = await vmm.Http.PutAsync("console/input", new ByteArrayContent("hello over the api\n"u8.ToArray())))
        {
            Assert.Equal(204, (int)r.StatusCode);
        }
        await Eventually.Until(() => Task.FromResult(Seen().Contains("hello over the api")), "the guest's echo");
        using (var r = await vmm.Http.PutAsync("console/input", new ByteArrayContent("q\n"u8.ToArray())))
        {
            Assert.Equal(204, (int)r.StatusCode);
        }
        Assert.Equal(0, vmm.WaitForExit());
        Assert.True(reading.Wait(10_000), "the console stream did not end with the VM");
    }

    [KvmFact]
    public async Task Shutdown_without_acpi_is_refused_and_says_what_to_use()
    {
        using var vmm = new VmmProcess();
        await vmm.Ok("boot-source", $$"""{"kernel_image_path": "{{Kernel("console")}}"}""");
        await vmm.Ok("machine-config", """{"vcpu_count": 1, "mem_size_mib": 64, "acpi": false}""");
        await vmm.Ok("actions", """{"action_type": "InstanceStart"}""");
        var (status, body) = await vmm.Put("actions", """{"action_type": "Shutdown"}""");
        Assert.Equal(400, status);
        Assert.Contains("no ACPI power button", body);
        await vmm.Ok("actions", """{"action_type": "Stop"}""");
        Assert.Equal(0, vmm.WaitForExit());
    }

    [Theory]
    [InlineData("machine-config", """{"vcpu_count": 2, "mem_size_mib": 64, "vcpus": 2}""", "machine-config: unknown field 'vcpus'")]
    [InlineData("machine-config", """{"vcpu_count": 2}""", "machine-config: mem_size_mib is required")]
    [InlineData("machine-config", """{"vcpu_count": "two", "mem_size_mib": 64}""", "machine-config: vcpu_count must be a whole number, got \"two\"")]
    [InlineData("machine-config", """{"vcpu_count": 2, "mem_size_mib": 6""", "body: malformed JSON at byte 35")]
    [InlineData("boot-source", "", "body: empty; a JSON object is expected")]
    [InlineData("boot-source", "null", "body: a JSON object is expected, got null")]
    [InlineData("drives/root", """{"drive_id": "data", "path_on_host": "/tmp/x"}""", "drive_id 'data' does not match the path's 'root'")]
    [InlineData("actions", """{"action_type": "Explode"}""", "Explode")]
    [InlineData("actions", """{"action_type": "InstanceStart"}""", "no boot source")]
    [InlineData("actions", """{"action_type": "Pause"}""", "Pause: the VM is NotStarted")]
    public async Task Bad_requests_get_a_400_that_says_why_and_the_process_keeps_serving(string path, string body, string message)
    {
        using var vmm = new VmmProcess();
        var (status, text) = await vmm.Put(path, body);
        Assert.Equal(400, status);
        Assert.Contains(message, VmmProcess.Fault(text));
        Assert.Equal("NotStarted", (await vmm.Info())!.State);
    }

    [KvmFact]
    public async Task Impossible_configurations_are_refused_at_start_and_can_be_corrected()
    {
        using var vmm = new VmmProcess();
        await vmm.Ok("boot-source", """{"kernel_image_path": "/nonexistent/vmlinuz"}""");
        var (status, body) = await vmm.Put("actions", """{"action_type": "InstanceStart"}""");
        Assert.Equal(400, status);
        Assert.Contains("kernel: no such file: /nonexistent/vmlinuz", body);
        await vmm.Ok("boot-source", $$"""{"kernel_image_path": "{{Kernel("console")}}"}""");
        (status, body) = await vmm.Put("machine-config", """{"vcpu_count": 300, "mem_size_mib": 64}"""); // refused when put, as Firecracker does
        Assert.Equal(400, status);
        Assert.Contains("machine-config: vcpu_count 300 is outside 1..254", body);
        await vmm.Ok("machine-config", """{"vcpu_count": 1, "mem_size_mib": 64}""");
        await vmm.Ok("actions", """{"action_type": "InstanceStart"}""");
        (status, body) = await vmm.Put("boot-source", """{"kernel_image_path": "/x"}""");
        Assert.Equal(400, status);
        Assert.Contains("fixed once started", body);
        await vmm.Ok("actions", """{"action_type": "Stop"}""");
        Assert.Equal(0, vmm.WaitForExit());
    }

    [Fact]
    public async Task A_client_that_vanishes_mid_request_does_not_disturb_the_process()
    {
        using var vmm = new VmmProcess();
        for (int i = 0; i < 5; i++)
        {
            using var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            await s.ConnectAsync(new UnixDomainSocketEndPoint(vmm.Socket));
            // Promises 1,000 bytes of body, sends 10, and hangs up.
            await s.SendAsync(Encoding.ASCII.GetBytes("PUT /machine-config HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"vcpu_cou"));
            s.Close();
        }
        await vmm.Ok("machine-config", """{"vcpu_count": 1, "mem_size_mib": 32}""");
        Assert.Equal(32, (await vmm.Info())!.MemSizeMib);
    }
}
