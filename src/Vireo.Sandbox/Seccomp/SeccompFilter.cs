using Vireo.Interop;
using Lib = Vireo.Interop.Seccomp;

namespace Vireo.Sandbox.Seccomp;

/// <summary>
/// A policy compiled by libseccomp into a filter, ready to load on the calling thread (or, with
/// <c>allThreads</c>, on all of the process's threads at once). A call the policy does not allow
/// raises SIGSYS (SECCOMP_RET_TRAP), whose handler names it and ends the process; a call from
/// another architecture or the x32 ABI ends the process at once. Loading can only narrow what a
/// thread may do: a second filter adds to the first.
/// </summary>
public sealed unsafe class SeccompFilter : IDisposable
{
    private nint _ctx;
    private readonly Lock _load = new(); // libseccomp builds the program from its context at each load

    public string Kind { get; }

    private SeccompFilter(string kind, nint ctx) => (Kind, _ctx) = (kind, ctx);

    /// <param name="policy">the list</param>
    /// <param name="pid">the id that <c>self</c> stands for (this process's, in its PID namespace)</param>
    /// <param name="allThreads">load on every thread of the process (TSYNC), and set no_new_privs</param>
    public static SeccompFilter Build(SeccompPolicy policy, int pid, bool allThreads)
    {
        nint ctx = Lib.Init(Lib.SCMP_ACT_TRAP);
        if (ctx == 0)
        {
            throw new SandboxException("seccomp: libseccomp could not make a filter");
        }
        var filter = new SeccompFilter(policy.Kind, ctx);
        try
        {
            Check(Lib.AttrSet(ctx, Lib.SCMP_FLTATR_ACT_BADARCH, Lib.SCMP_ACT_KILL_PROCESS), "the action for other architectures");
            // A thread's own filter is loaded on top of the one all threads got, which set no_new_privs
            // for them all: asking again would be a prctl that list does not allow.
            Check(Lib.AttrSet(ctx, Lib.SCMP_FLTATR_CTL_NNP, allThreads ? 1u : 0u), "no_new_privs");
            // A binary tree of the calls' numbers, not a list: every call of every thread runs the
            // filter, the vCPU's KVM_RUN above all (libseccomp 2.5 and later; an older one keeps the list).
            _ = Lib.AttrSet(ctx, Lib.SCMP_FLTATR_CTL_OPTIMIZE, 2);
            if (allThreads)
            {
                Check(Lib.AttrSet(ctx, Lib.SCMP_FLTATR_CTL_TSYNC, 1), "loading on every thread");
            }
            foreach (var rule in policy.Rules)
            {
                int rc;
                if (rule.Errno is int errno)
                {
                    rc = Lib.RuleAddArray(ctx, Lib.SCMP_ACT_ERRNO | (uint)errno, rule.Number, 0, null);
                }
                else if (rule.Arg is int arg)
                {
                    var cmp = new Lib.scmp_arg_cmp
                    {
                        arg = (uint)arg,
                        op = Lib.SCMP_CMP_MASKED_EQ,
                        datum_a = rule.Mask,
                        datum_b = rule.Self ? (ulong)(uint)pid : rule.Value,
                    };
                    rc = Lib.RuleAddArray(ctx, Lib.SCMP_ACT_ALLOW, rule.Number, 1, &cmp);
                }
                else
                {
                    rc = Lib.RuleAddArray(ctx, Lib.SCMP_ACT_ALLOW, rule.Number, 0, null);
                }
                Check(rc, rule.Source);
            }
            return filter;
        }
        catch
        {
            filter.Dispose();
            throw;
        }
    }

    /// <summary>Installs the filter on the calling thread (or on all threads, if built so).</summary>
    public void Load()
    {
        lock (_load)
        {
            ObjectDisposedException.ThrowIf(_ctx == 0, this);
            Check(Lib.Load(_ctx), $"loading the {Kind} list");
        }
    }

    private static void Check(int rc, string what)
    {
        if (rc < 0)
        {
            throw new SandboxException($"seccomp: {what}: {Libc.StrError(-rc)}");
        }
    }

    public void Dispose()
    {
        if (_ctx != 0)
        {
            Lib.Release(_ctx);
            _ctx = 0;
        }
    }
}
