using Vireo.Interop;
using Vireo.Vmm;

namespace Vireo.Cli;

/// <summary>
/// The host side of the serial console: stdin goes to the guest's UART, in raw mode when stdin
/// is a terminal. Ctrl-] then q stops the VM; Ctrl-] twice sends one Ctrl-]. One terminal serves
/// every boot of a VM that restarts: input goes to whichever machine is current.
/// </summary>
internal sealed class Terminal : IDisposable
{
    private const byte EscapeKey = 0x1d; // Ctrl-]
    private readonly Termios.TermiosState? _saved;
    private bool _disposed;

    private Terminal(Termios.TermiosState? saved) => _saved = saved;

    /// <param name="current">The machine running now (null between boots: input waits).</param>
    /// <param name="quit">Ctrl-] q: stop the VM for good.</param>
    public static Terminal Attach(Func<Machine?> current, Action quit)
    {
        bool tty = Libc.IsATty(0) == 1;
        Termios.TermiosState? saved = null;
        if (tty)
        {
            saved = Termios.MakeRaw(0);
        }
        var terminal = new Terminal(saved);
        var thread = new Thread(() => Pump(current, quit, tty)) { IsBackground = true, Name = "stdin" };
        thread.Start();
        return terminal;
    }

    private static void Pump(Func<Machine?> current, Action quit, bool tty)
    {
        // fd 0 is read directly: .NET's Console would put its own line editor (and echo) in between.
        var buffer = new byte[256];
        bool escape = false;
        while (true)
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
                        quit();
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
            while (pending.Length > 0)
            {
                var machine = current();
                int taken = machine is { IsStopping: false } ? machine.EnqueueConsoleInput(pending) : 0;
                pending = pending[taken..];
                if (pending.Length > 0)
                {
                    Thread.Sleep(5); // the guest has not drained its receive buffer yet, or is between boots
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
