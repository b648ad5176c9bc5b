using System.CommandLine;
using Vireo.Interop;

namespace Vireo.Cli.Manage;

/// <summary>
/// `vireo console NAME`: the guest's console through vireod, from any terminal and from several
/// at once. Output starts with the recent history; keystrokes go to the guest raw (Ctrl-C too);
/// Ctrl-] detaches and leaves the VM running, as in virsh console. When standard input is not a
/// terminal (a script's pipe or file), the end of it detaches too, once the guest's output has been
/// quiet for <see cref="QuietAfterInput"/>, so that `printf 'ls\n' | vireo console web` shows the answer and ends.
/// </summary>
internal static class ConsoleCommand
{
    private const byte Detach = 0x1d; // Ctrl-]

    internal static readonly TimeSpan QuietAfterInput = TimeSpan.FromSeconds(2);

    public static Command Create(Argument<string> name)
    {
        var command = new Command("console", "Attach to a VM's console; Ctrl-] detaches") { name };
        command.SetAction(p => ManageCommands.Run(p, client => Attach(client, p.GetValue(name)!)));
        return command;
    }

    private static void Attach(DaemonClient client, string name)
    {
        string path = $"vms/{Uri.EscapeDataString(name)}/console";
        using var detached = new CancellationTokenSource();
        using var response = client.OpenStream(path, detached.Token);
        bool tty = Libc.IsATty(0) == 1;
        Termios.TermiosState? saved = tty ? Termios.MakeRaw(0) : null;
        try
        {
            if (tty)
            {
                Console.Error.Write($"Connected to {name}; Ctrl-] detaches.\r\n");
            }
            long lastOutput = Environment.TickCount64;
            new Thread(() =>
            {
                Pump(client, path + "/input", tty, detached);
                while (!tty && !detached.IsCancellationRequested)
                {
                    // The end of a script's input: detach once the guest has stopped answering.
                    Thread.Sleep(100);
                    if (Environment.TickCount64 - Volatile.Read(ref lastOutput) > QuietAfterInput.TotalMilliseconds)
                    {
                        detached.Cancel();
                    }
                }
            }) { IsBackground = true, Name = "stdin" }.Start();
            using var output = Console.OpenStandardOutput();
            using var stream = response.Content.ReadAsStream(detached.Token);
            var buffer = new byte[4096];
            try
            {
                int n;
                while ((n = stream.ReadAsync(buffer, detached.Token).AsTask().GetAwaiter().GetResult()) > 0)
                {
                    output.Write(buffer, 0, n);
                    output.Flush();
                    Volatile.Write(ref lastOutput, Environment.TickCount64);
                }
                Console.Error.Write(tty ? $"\r\n[{name} has stopped]\r\n" : $"[{name} has stopped]\n");
            }
            catch (Exception e) when (e is OperationCanceledException or IOException)
            {
                if (detached.IsCancellationRequested && tty)
                {
                    Console.Error.Write($"\r\n[detached from {name}; it goes on running]\r\n");
                }
            }
        }
        finally
        {
            if (saved is { } state)
            {
                Termios.Restore(0, state);
            }
        }
    }

    // Standard input, read from fd 0 directly (no line editor), to the guest until Ctrl-] or EOF.
    private static void Pump(DaemonClient client, string inputPath, bool tty, CancellationTokenSource detached)
    {
        var buffer = new byte[1024];
        while (!detached.IsCancellationRequested)
        {
            nint n = Libc.Read(0, buffer);
            if (n < 0 && Libc.LastErrno == Libc.EINTR)
            {
                continue;
            }
            if (n <= 0)
            {
                return; // end of input: a terminal stays attached for output; a script's input detaches once output is quiet
            }
            var chunk = buffer.AsSpan(0, (int)n);
            int stop = tty ? chunk.IndexOf(Detach) : -1;
            try
            {
                if ((stop < 0 ? chunk : chunk[..stop]) is { Length: > 0 } send)
                {
                    client.PutBytes(inputPath, send.ToArray());
                }
            }
            catch (CliException)
            {
                return; // the VM stopped: the output side reports it
            }
            if (stop >= 0)
            {
                detached.Cancel();
                return;
            }
        }
    }
}
