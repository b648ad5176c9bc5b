namespace Vireo.Sandbox.Seccomp;

/// <summary>
/// A VMM's filters, built together before any is loaded (libseccomp reads the lists and probes
/// the kernel while nothing is filtered yet). A thread inherits the filters of the thread that
/// made it and can only add to them, so they go on in three steps:
/// <list type="number">
/// <item>the union of every list, on every thread of the process at once (TSYNC): the .NET
/// runtime's own threads, made before Main, keep only this one;</item>
/// <item>the vmm list on the calling (main) thread, whose descendants (the thread pool's among
/// them) build, save, restore and migrate the VM;</item>
/// <item>the api, vcpu or io list on each of those threads as it starts. They are made by a
/// thread that holds only the union, so that what the vmm list leaves out (KVM_RUN, for one)
/// stays theirs.</item>
/// </list>
/// </summary>
public sealed class ThreadFilters : IDisposable
{
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, SeccompFilter> _filters = new(StringComparer.Ordinal);
    private const string Union = "(every list)";

    private ThreadFilters() { }

    private List<SeccompPolicy> _policies = [];

    /// <summary>Reads every list and builds the union's filter and the vmm list's (the start's share).</summary>
    public static ThreadFilters Prepare()
    {
        var filters = new ThreadFilters();
        try
        {
            filters._policies = SeccompPolicy.Kinds.Select(SeccompPolicy.Load).ToList();
            int pid = Environment.ProcessId;
            filters._filters[Union] = SeccompFilter.Build(SeccompPolicy.UnionOf(Union, filters._policies), pid, allThreads: true);
            filters._filters[SeccompPolicy.Main] = SeccompFilter.Build(filters._policies.Single(p => p.Kind == SeccompPolicy.Main), pid, allThreads: false);
            return filters;
        }
        catch
        {
            filters.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Builds the api, vcpu and io lists' filters: off the process's start, on the thread that will
    /// make those threads (vireo-starter), before it makes the first of them.
    /// </summary>
    public void PrepareThreadLists()
    {
        foreach (var policy in _policies.Where(p => !_filters.ContainsKey(p.Kind)))
        {
            _filters[policy.Kind] = SeccompFilter.Build(policy, Environment.ProcessId, allThreads: false);
        }
    }

    /// <summary>Step 1: the union of every list, on every thread of the process (TSYNC).</summary>
    public void LoadOnAllThreads() => _filters[Union].Load();

    /// <summary>Step 2: the vmm list, on the calling (main) thread.</summary>
    public void LoadMain() => _filters[SeccompPolicy.Main].Load();

    /// <summary>Step 3: a thread kind's own list, on the calling thread.</summary>
    public void LoadOnThisThread(string kind)
    {
        if (kind == SeccompPolicy.Main || !SeccompPolicy.Kinds.Contains(kind))
        {
            throw new SandboxException($"seccomp: no thread list '{kind}' (known: {string.Join(", ", SeccompPolicy.Kinds.Where(k => k != SeccompPolicy.Main))})");
        }
        if (!_filters.TryGetValue(kind, out var filter))
        {
            throw new SandboxException($"seccomp: the {kind} list was not built (PrepareThreadLists)");
        }
        filter.Load();
    }

    public void Dispose()
    {
        foreach (var f in _filters.Values)
        {
            f.Dispose();
        }
        _filters.Clear();
    }
}
