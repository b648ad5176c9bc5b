using System.CommandLine;
using System.Globalization;
using System.Net.ServerSentEvents;
using System.Text.Json;
using Vireo.Api;

namespace Vireo.Cli.Manage;

/// <summary>`vireo events`: vireod's lifecycle events as they happen (its server-sent event stream), one a line.</summary>
internal static class EventsCommand
{
    public static Command Create(Option<bool> json)
    {
        var after = ManageCommands.WholeNumber("--after", "First replay the kept events after this sequence number", 0, long.MaxValue);
        var count = ManageCommands.WholeNumber("--count", "Stop after this many events: new ones as they happen, or with --after the kept ones replayed first (--after 0: all kept)", 1, int.MaxValue);
        var command = new Command("events", "Follow lifecycle events (Ctrl-C stops)") { json, after, count };
        command.SetAction(p => ManageCommands.Run(p, client =>
        {
            using var stop = new CancellationTokenSource();
            Console.CancelKeyPress += (_, e) =>
            {
                e.Cancel = true;
                stop.Cancel();
            };
            string path = p.GetValue(after) is long a ? $"events?after={a}" : "events";
            using var response = client.OpenStream(path, stop.Token);
            long seen = 0, limit = p.GetValue(count) ?? long.MaxValue;
            try
            {
                foreach (var item in SseParser.Create(response.Content.ReadAsStream(stop.Token)).Enumerate())
                {
                    var e = JsonSerializer.Deserialize(item.Data, DaemonJson.Default.LifecycleEvent)!;
                    Console.WriteLine(p.GetValue(json) ? item.Data
                        : $"{e.Time.ToLocalTime().ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture)} {e.Seq,5} {e.Vm,-20} {e.Event,-18} {e.State}{(e.Detail is null ? "" : $"  ({e.Detail})")}");
                    Console.Out.Flush();
                    if (++seen >= limit)
                    {
                        return;
                    }
                }
            }
            catch (Exception e) when (e is OperationCanceledException or IOException)
            {
                // Ctrl-C, or vireod went away
            }
        }));
        return command;
    }
}
