using System.Diagnostics;
using System.Text;
using Vireo.Api;
using Vireo.Tests;

namespace Vireo.Daemon.Tests;

/// <summary>Console input through vireod is delivered whole, or refused before any of it reaches the guest.</summary>
public class ConsoleInputTests
{
    private static readonly HttpMethod Post = HttpMethod.Post;

    [KvmFact]
    public async Task Input_up_to_the_limit_reaches_the_guest_whole_and_input_above_it_is_refused_before_any_is_sent()
    {
        using var d = new DaemonProcess();
        await d.Ok(Post, "vms", DaemonProcess.Definition("typist", guest: "console"));
        await d.Ok(Post, "vms/typist/start");
        string log = Path.Combine(d.StateDir, "vms", "typist", "console.log");
        await Eventually.Until(() => Task.FromResult(File.ReadAllText(log).Contains("console: type")), "the guest's prompt");

        // Exactly the limit, in lines the guest echoes (its line buffer holds 127 characters).
        const int limit = 64 << 10;
        var input = new StringBuilder();
        int lines = 0;
        while (input.Length + 128 <= limit)
        {
            input.Append($"line {++lines:D5} ").Append('x', 52).Append('\r');
        }
        input.Append('y', limit - input.Length - 1).Append('\r');
        Assert.Equal(limit, input.Length);
        var clock = Stopwatch.StartNew();
        var (status, body) = await Put(d, Encoding.ASCII.GetBytes(input.ToString()));
        Assert.True(status == 204, $"{limit} bytes: {status} {body} after {clock.Elapsed}");
        await Eventually.Until(() => Task.FromResult(File.ReadAllText(log).Contains($"echo: line {lines:D5} ")), "the last line's echo");
        Assert.Equal(lines, File.ReadAllText(log).Split("echo: line ").Length - 1); // every line, once

        byte[] over = Encoding.ASCII.GetBytes("over-the-limit\r" + new string('z', limit));
        (status, body) = await Put(d, over);
        Assert.Equal(413, status);
        Assert.Contains($"limited to {limit} bytes", body);
        await Task.Delay(1000);
        Assert.DoesNotContain("over-the-limit", File.ReadAllText(log)); // refused whole: none of it reached the guest
        Assert.Equal(DomainState.Running, (await d.Get("typist")).State);
        await d.Ok(Post, "vms/typist/destroy");
    }

    private static async Task<(int, string)> Put(DaemonProcess d, byte[] bytes)
    {
        using var content = new ByteArrayContent(bytes);
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        using var r = await d.Http.PutAsync("vms/typist/console/input", content, cts.Token);
        return ((int)r.StatusCode, await r.Content.ReadAsStringAsync());
    }
}
