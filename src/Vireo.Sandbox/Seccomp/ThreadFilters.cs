namespace Vireo.Sandbox.Seccomp;

/// <summary>
/// A VMM's filters, built together before any is loaded (libseccomp reads the lists and probes
/// the kernel while nothing is filtered yet). A thread inherits the filters of the thread that
/// made it and can only add to them, so they go on in three steps:
/// <list type="number">
/// <item>the union of every list, on every thread of the process at once (TSYNC): the .NET
/// runtime's own threads, made before Main, keep only this one;</item>
/// <item>the api list on the calling (main) thread, whose descendants serve the API;</item>
/// <item>the vcpu or io list on each of those threads as it starts. They are made by a thread
/// that holds only the union, so that what the api list leaves out (KVM_RUN, for one) stays
/// theirs.</item>
/// </list>
/// </summary>
public sealed class ThreadFilters : IDisposable
{
    private readonly Dictionary<string, SeccompFilter> _filters = new(StringComparer.Ordinal);
    private const string Union = "(every list)";

    private ThreadFilters() { }

    public static ThreadFilters Prepare()
    {
        var filters = new ThreadFilters();
        try
        {
            var policies = SeccompPolicy.Kinds.Select(SeccompPolicy.Load).ToList();
            int pid = Environment.ProcessId;
            filters._filters[Union] = SeccompFilter.Build(SeccompPolicy.UnionOf(Union, policies), pid, allThreads: true);
            foreach (var policy in policies)
            {
                filters._filters[policy.Kind] = SeccompFilter.Build(policy, pid, allThreads: false);
            }
            return filters;
        }
        catch
        {
            filters.Dispose();
            throw;
        }
    }

    /// <summary>Steps 1 and 2: the union on every thread, then the api list on this one.</summary>
    public void LoadOnAllThreadsThenApi()
    {
        _filters[Union].Load();
        _filters["api"].Load();
    }

    /// <summary>Step 1 only, for a thread that holds the union (the maker of vCPU and event-loop threads).</summary>
    public void LoadOnAllThreads() => _filters[Union].Load();

    /// <summary>Loads the api list on the calling thread.</summary>
    public void LoadApi() => _filters["api"].Load();

    /// <summary>Step 3: a thread kind's own list, on the calling thread.</summary>
    public void LoadOnThisThread(string kind)
    {
        if (kind == "api" || !_filters.TryGetValue(kind, out var filter))
        {
            throw new SandboxException($"seccomp: no thread list '{kind}' (known: {string.Join(", ", SeccompPolicy.Kinds.Skip(1))})");
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
