using System.Runtime.InteropServices;

namespace Vireo.Interop;

/// <summary>termios(3): raw mode for the interactive serial console.</summary>
public static unsafe partial class Termios
{
    private const string Lib = "libc";
    private const int TCSANOW = 0;

    [StructLayout(LayoutKind.Sequential)]
    public struct TermiosState
    {
        public uint IFlag, OFlag, CFlag, LFlag;
        public byte Line;
        public fixed byte Cc[32];
        public uint ISpeed, OSpeed;
    }

    [LibraryImport(Lib, EntryPoint = "tcgetattr", SetLastError = true)]
    private static partial int tcgetattr(int fd, TermiosState* t);

    [LibraryImport(Lib, EntryPoint = "tcsetattr", SetLastError = true)]
    private static partial int tcsetattr(int fd, int action, TermiosState* t);

    [LibraryImport(Lib, EntryPoint = "cfmakeraw")]
    private static partial void cfmakeraw(TermiosState* t);

    /// <summary>Puts fd into raw mode and returns the previous state to restore.</summary>
    public static TermiosState MakeRaw(int fd)
    {
        TermiosState old, raw;
        Check.Io(tcgetattr(fd, &old), "tcgetattr");
        raw = old;
        cfmakeraw(&raw); // output too: guests send \r\n themselves, as to a real UART
        Check.Io(tcsetattr(fd, TCSANOW, &raw), "tcsetattr");
        return old;
    }

    public static void Restore(int fd, TermiosState state) => tcsetattr(fd, TCSANOW, &state);

    /// <summary>The terminal's state now, to restore later; null when fd is no terminal.</summary>
    public static TermiosState? Save(int fd)
    {
        TermiosState state;
        return tcgetattr(fd, &state) == 0 ? state : null;
    }
}
