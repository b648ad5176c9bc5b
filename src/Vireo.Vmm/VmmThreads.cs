namespace Vireo.Vmm;

/// <summary>
/// How the VMM's own long-lived threads, the vCPUs' and the event loop's, begin. vireo-vmm sets
/// both hooks for its seccomp lists; unset (a VM run inside a test or by `vireo run`), the
/// threads start as any other.
/// </summary>
public static class VmmThreads
{
    /// <summary>
    /// Run by each such thread first, before its first KVM_RUN ("vcpu") or its first wait ("io"):
    /// null, or why the thread must not go on.
    /// </summary>
    public static Func<string, string?>? OnStart { get; set; }

    /// <summary>
    /// Starts such a thread in place of <see cref="Thread.Start()"/>. A thread inherits the
    /// seccomp filters of the thread that makes it, and a filter can only narrow, so vireo-vmm
    /// makes them from a thread that has none of the API's.
    /// </summary>
    public static Action<Thread>? Starter { get; set; }

    internal static string? Started(string kind) => OnStart?.Invoke(kind);

    internal static void Start(Thread thread)
    {
        if (Starter is { } starter)
        {
            starter(thread);
        }
        else
        {
            thread.Start();
        }
    }
}
