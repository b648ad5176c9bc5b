using System.Globalization;
using Vireo.Interop;
using static Vireo.Interop.Namespaces;

namespace Vireo.Sandbox;

/// <summary>
/// vireo-vmm's `--jail uid=U,gid=G,nofile=N,nproc=N`: what a VMM started by <see cref="Jail.Start"/>
/// does first, before it reads anything it is sent.
/// </summary>
public sealed record JailOption(uint Uid, uint Gid, ulong MaxFiles, ulong MaxProcesses)
{
    public static string Format(JailSpec spec) =>
        string.Create(CultureInfo.InvariantCulture, $"uid={spec.Uid},gid={spec.Gid},nofile={spec.MaxFiles},nproc={spec.MaxProcesses}");

    /// <summary>The option's value parsed, or null and what is wrong with it.</summary>
    public static JailOption? Parse(string value, out string? error)
    {
        error = null;
        var keys = new Dictionary<string, ulong>();
        foreach (var part in value.Split(','))
        {
            int eq = part.IndexOf('=');
            string key = eq < 0 ? part : part[..eq];
            if (key is not ("uid" or "gid" or "nofile" or "nproc"))
            {
                error = $"unknown key '{key}' (uid, gid, nofile, nproc)";
                return null;
            }
            if (eq < 0 || !ulong.TryParse(part[(eq + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out ulong n))
            {
                error = $"{key}: a whole number is needed";
                return null;
            }
            if (!keys.TryAdd(key, n))
            {
                error = $"{key} is given twice";
                return null;
            }
        }
        foreach (var key in new[] { "uid", "gid", "nofile", "nproc" })
        {
            if (!keys.ContainsKey(key))
            {
                error = $"{key} is missing";
                return null;
            }
        }
        if (keys["uid"] is 0 or > uint.MaxValue - 1 || keys["gid"] is 0 or > uint.MaxValue - 1)
        {
            error = "uid and gid must be between 1 and 4294967294";
            return null;
        }
        return new JailOption((uint)keys["uid"], (uint)keys["gid"], keys["nofile"], keys["nproc"]);
    }

    /// <summary>
    /// Spends the privilege this process was started with: mounts its /proc (it is PID 1 of a PID
    /// namespace of its own), sets its rlimits, empties its capability bounding set, takes the
    /// VM's uid and gid (which clears every capability of every thread), sets no_new_privs, and
    /// checks that all of it took. Throws <see cref="SandboxException"/> naming the step.
    /// </summary>
    public void Enter()
    {
        try
        {
            if (Libc.GetPid() == 1)
            {
                Check.Io(Mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, null), "mount(/proc)");
            }
            Check.Io(SetRlimit(RLIMIT_NOFILE, MaxFiles), "setrlimit(RLIMIT_NOFILE)");
            Check.Io(SetRlimit(RLIMIT_NPROC, MaxProcesses), "setrlimit(RLIMIT_NPROC)");
            Check.Io(SetRlimit(RLIMIT_CORE, 0), "setrlimit(RLIMIT_CORE)"); // a core would hold the guest's RAM
            for (int cap = 0; Prctl(PR_CAPBSET_READ, (ulong)cap, 0, 0, 0) >= 0; cap++)
            {
                Check.Io(Prctl(PR_CAPBSET_DROP, (ulong)cap, 0, 0, 0), $"prctl(PR_CAPBSET_DROP, {cap})");
            }
            Check.Io(Prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "prctl(PR_CAP_AMBIENT_CLEAR_ALL)");
            Check.Io(ClearGroups(), "setgroups");
            Check.Io(SetResGid(Gid, Gid, Gid), "setresgid");
            Check.Io(SetResUid(Uid, Uid, Uid), "setresuid");
            Check.Io(ClearCapabilities(), "capset");
            Check.Io(Prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)");
            // Leaving uid 0 made the process undumpable, which gives its /proc/self files to root: its own
            // pagemap (which snapshots read) and status would be closed to it. No other process has its uid.
            Check.Io(Prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "prctl(PR_SET_DUMPABLE)");
        }
        catch (SysError e)
        {
            throw new SandboxException($"cannot enter the sandbox: {e.Message}", e);
        }
        if (SetResUid(0, 0, 0) == 0)
        {
            throw new SandboxException("cannot enter the sandbox: uid 0 could be taken back after the drop");
        }
    }
}
