using Spectre.Console;
using Vireo.Api;

namespace Vireo.Cli.Manage;

/// <summary>
/// A daemon operation on one VM (save, snapshot, migrate) with, on a terminal and not with
/// --json, a progress bar polled every 200 ms from GET /vms/NAME/progress.
/// </summary>
internal static class ProgressBar
{
    /// <summary>
    /// Runs <paramref name="work"/>; meanwhile <paramref name="update"/> moves the bar (its length
    /// starts as the guest's RAM) from each progress report, and <paramref name="done"/>, when it
    /// succeeded, is the bar's last description.
    /// </summary>
    public static T Run<T>(DaemonClient client, string vm, string description, bool json, ProgressColumn amount,
        Action<OperationProgress, ProgressTask> update, Func<T> work, string? done = null)
    {
        if (json || Console.IsErrorRedirected)
        {
            return work();
        }
        long ram = Math.Max(1, client.Get($"vms/{Uri.EscapeDataString(vm)}", DaemonJson.Default.VmSummary).MemoryMib << 20);
        var running = Task.Run(work);
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        console.Progress().AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), amount)
            .Start(ctx =>
            {
                var bar = ctx.AddTask(Markup.Escape(description), maxValue: ram);
                while (!running.Wait(200))
                {
                    try
                    {
                        update(client.Get($"vms/{Uri.EscapeDataString(vm)}/progress", DaemonJson.Default.OperationProgress), bar);
                    }
                    catch (CliException)
                    {
                        // the answer to the request itself says what went wrong
                    }
                }
                if (running.IsCompletedSuccessfully)
                {
                    bar.Value = bar.MaxValue;
                    if (done is not null)
                    {
                        bar.Description = Markup.Escape(done);
                    }
                }
            });
        return running.GetAwaiter().GetResult();
    }
}
