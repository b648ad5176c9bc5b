using System.Text.RegularExpressions;

namespace Vireo.VmmServer.Tests;

/// <summary>
/// What each thread of a vireo-vmm run with --no-seccomp called from the point where its lists
/// would be on, from strace -ff's files (one per thread). A thread's kind is read from its name,
/// which it sets first thing (prctl PR_SET_NAME): vcpuN is "vcpu", vireo-io is "io", vireo-api is
/// "api", vireo-starter and .NET's finalizer (made before the filters) hold only the union and are
/// left out, and every other thread is "vmm", as the main thread is. The main thread (the one that
/// ran execve) counts from its lstat of the API socket's path (the removal of a stale one: its
/// lists go on just before); a vCPU, the event loop and the API's thread from their naming (they
/// load theirs next); the rest from their birth (they inherit their maker's).
/// </summary>
internal static partial class SyscallTrace
{
    /// <summary>kind → calls: "name", or "ioctl REQUEST" with strace's name for the request.</summary>
    public static Dictionary<string, HashSet<string>> Read(IEnumerable<string> directories)
    {
        var calls = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal);
        foreach (string[] lines in directories.SelectMany(d => Directory.GetFiles(d, "t.*")).SelectMany(Lives))
        {
            string? name = lines.Select(l => NameLine().Match(l)).FirstOrDefault(m => m.Success)?.Groups[1].Value;
            bool main = lines.Length > 0 && lines[0].StartsWith("execve(", StringComparison.Ordinal);
            string? kind = main ? "vmm"
                : name is null ? null
                : name.StartsWith("vcpu", StringComparison.Ordinal) ? "vcpu"
                : name == "vireo-io" ? "io"
                : name == "vireo-api" ? "api"
                : name is "vireo-starter" or ".NET Finalizer" ? null
                : "vmm";
            if (kind is null)
            {
                continue;
            }
            // A thread's first calls, before it names itself, are made under its maker's lists: a
            // vmm thread's maker is a vmm thread; a vCPU's, the event loop's or the API's is vireo-starter.
            int from = main
                ? Array.FindIndex(lines, l => l.StartsWith($"lstat(\"{ApiSocket().Match(lines[0]).Groups[1].Value}\"", StringComparison.Ordinal)) - 1
                : kind == "vmm" ? -1
                : Array.FindIndex(lines, l => NameLine().IsMatch(l));
            if (from < -1 || (from == -1 && kind != "vmm"))
            {
                continue; // a thread that ended before its lists were on
            }
            var set = calls.TryGetValue(kind, out var s) ? s : calls[kind] = new HashSet<string>(StringComparer.Ordinal);
            string? meminfo = null; // the fd of the GC's /proc/meminfo, on a list that refuses it (openat fails): its stat, read and close never happen there
            foreach (string line in lines.Skip(from + 1))
            {
                var m = CallLine().Match(line);
                if (!m.Success)
                {
                    continue; // signals (---), the end (+++)
                }
                string call = m.Groups[1].Value;
                if (kind is "api" or "vcpu" or "io" && MeminfoOpen().Match(line) is { Success: true } opened)
                {
                    meminfo = opened.Groups[1].Value;
                    set.Add(call);
                    continue;
                }
                if (meminfo is not null && line.StartsWith($"{call}({meminfo},", StringComparison.Ordinal))
                {
                    if (call == "close")
                    {
                        meminfo = null;
                    }
                    continue;
                }
                if (call == "ioctl")
                {
                    var request = IoctlRequest().Match(line);
                    call = "ioctl " + (request.Success ? request.Groups[1].Value : "?");
                }
                set.Add(call);
            }
        }
        return calls;
    }

    /// <summary>
    /// A file's threads: where thread ids come round again, strace -ff appends a later thread to
    /// an earlier one's file, after the earlier one's end (+++ exited, or its exit call).
    /// </summary>
    private static IEnumerable<string[]> Lives(string file)
    {
        var life = new List<string>();
        foreach (string line in File.ReadLines(file))
        {
            life.Add(line);
            if (line.StartsWith("+++ ", StringComparison.Ordinal) || line.StartsWith("exit(", StringComparison.Ordinal))
            {
                yield return [.. life];
                life.Clear();
            }
        }
        if (life.Count > 0)
        {
            yield return [.. life];
        }
    }

    [GeneratedRegex("""prctl\(PR_SET_NAME, "([^"]*)"\)""")]
    private static partial Regex NameLine();

    [GeneratedRegex(""""--api-sock", "([^"]*)"""")]
    private static partial Regex ApiSocket();

    [GeneratedRegex(@"^openat\(AT_FDCWD, ""/proc/meminfo"", [^)]*\) = (\d+)")]
    private static partial Regex MeminfoOpen();

    [GeneratedRegex(@"^([a-z_0-9]+)\(")]
    private static partial Regex CallLine();

    [GeneratedRegex(@"^ioctl\(\d+, ([A-Za-z_0-9]+)")]
    private static partial Regex IoctlRequest();
}
