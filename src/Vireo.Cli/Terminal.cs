using Vireo.Interop;
using Vireo.Vmm;

namespace Vireo.Cli;

/// <summary>
/// The host side of the serial console: stdin goes to the guest's UART, in raw mode when stdin
/// is a terminal. Ctrl-] then q stops the VM; Ctrl-] twice sends one Ctrl-].
/// </summary>
internal sealed class Terminal : IDisposable
{
    private const byte EscapeKey = 0x1d; // Ctrl-]
    private readonly Termios.TermiosState? _saved;
    private bool _disposed;

    private Terminal(Termios.TermiosState? saved) => _saved = saved;

    public static Terminal Attach(Machine machine, SerialConsole console)
    {
        bool tty = Libc.IsATty(0) == 1;
        Termios.TermiosState? saved = null;
        if (tty)
        {
            saved = Termios.MakeRaw(0);
        }
        var terminal = new Terminal(saved);
        var thread = new Thread(() => Pump(machine, tty)) { IsBackground = true, Name = "stdin" };
        thread.Start();
        return terminal;
    }

    private static void Pump(Machine machine, bool tty)
    {
        // fd 0 is read directly: .NET's Console would put its own line editor (and echo) in between.
        var buffer = new byte[256];
        bool escape = false;
        while (!machine.IsStopping)
        {
            nint n = Libc.Read(0, buffer);
            if (n < 0 && Libc.LastErrno == Libc.EINTR)
            {
                continue;
            }
            if (n <= 0)
            {
                return; // end of input or an error: the guest keeps running without it
            }
            var forward = new List<byte>((int)n);
            foreach (byte b in buffer.AsSpan(0, (int)n))
            {
                if (tty && escape)
                {
                    escape = false;
                    if (b is (byte)'q' or (byte)'Q')
                    {
                        machine.RequestStop(new VmOutcome(StopReason.HostRequest, Message: "Ctrl-] q"));
                        return;
                    }
                    forward.Add(b == EscapeKey ? EscapeKey : b);
                }
                else if (tty && b == EscapeKey)
                {
                    escape = true;
                }
                else
                {
                    forward.Add(b);
                }
            }
            var pending = forward.ToArray().AsSpan();
            while (pending.Length > 0 && !machine.IsStopping)
            {
                int taken = machine.EnqueueConsoleInput(pending);
                pending = pending[taken..];
                if (pending.Length > 0)
                {
                    Thread.Sleep(5); // the guest has not drained its receive buffer yet
                }
            }
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        if (_saved is { } state)
        {
            Termios.Restore(0, state);
        }
    }
}
