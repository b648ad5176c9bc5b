using System.Runtime.InteropServices;

namespace Vireo.Interop;

/// <summary>
/// Thread kicks: a vCPU thread blocked in KVM_RUN is interrupted by a real-time signal.
/// The handler must do nothing and must not run managed code (the runtime may be in the
/// middle of a GC), so it is libc's own getpid: async-signal-safe and free of effects.
/// </summary>
public static unsafe partial class Signals
{
    private const string Lib = "libc";
    private static int _kickSignal;

    [StructLayout(LayoutKind.Sequential)]
    private struct SigAction
    {
        public nint Handler;
        public fixed ulong Mask[16];
        public int Flags;
        public nint Restorer;
    }

    [LibraryImport(Lib, EntryPoint = "sigaction", SetLastError = true)]
    private static partial int sigaction(int sig, SigAction* act, SigAction* old);

    [LibraryImport(Lib, EntryPoint = "__libc_current_sigrtmin")]
    private static partial int LibcCurrentSigRtMin();

    [LibraryImport(Lib, EntryPoint = "pthread_self")]
    public static partial nuint PthreadSelf();

    [LibraryImport(Lib, EntryPoint = "pthread_kill")]
    private static partial int pthread_kill(nuint thread, int sig);

    /// <summary>The kick signal (SIGRTMIN+3; the runtime keeps SIGRTMIN for itself), installed once.</summary>
    public static int KickSignal
    {
        get
        {
            if (_kickSignal == 0)
            {
                Install();
            }
            return _kickSignal;
        }
    }

    private static readonly Lock InstallLock = new();

    private static void Install()
    {
        lock (InstallLock)
        {
            if (_kickSignal != 0)
            {
                return;
            }
            int sig = LibcCurrentSigRtMin() + 3;
            nint libc = NativeLibrary.Load("libc.so.6");
            SigAction act = default;
            act.Handler = NativeLibrary.GetExport(libc, "getpid");
            act.Flags = 0; // no SA_RESTART: KVM_RUN must come back with EINTR
            Check.Io(sigaction(sig, &act, null), "sigaction");
            _kickSignal = sig;
        }
    }

    /// <summary>Sends the kick signal to a thread; returns false when the thread is gone.</summary>
    public static bool Kick(nuint thread) => pthread_kill(thread, KickSignal) == 0;
}
