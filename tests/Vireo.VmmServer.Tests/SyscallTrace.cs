using System.Text.RegularExpressions;

namespace Vireo.VmmServer.Tests;

/// <summary>
/// What each thread of a vireo-vmm run with --no-seccomp called from the point where its lists
/// would be on, from strace -ff's files (one per thread). A thread's kind is read from its name,
/// which it sets first thing (prctl PR_SET_NAME): vcpuN is "vcpu", vireo-io is "io", vireo-starter
/// and .NET's finalizer (made before the filters) hold only the union and are left out, and every
/// other thread is "api". The main thread (the one that ran execve) counts from its lstat of the
/// API socket's path (the removal of a stale one: its lists go on just before), any other thread from its naming: a vCPU and the event
/// loop load theirs next, the rest inherit their maker's at birth.
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
            string? kind = main ? "api"
                : name is null ? null
                : name.StartsWith("vcpu", StringComparison.Ordinal) ? "vcpu"
                : name == "vireo-io" ? "io"
                : name is "vireo-starter" or ".NET Finalizer" ? null
                : "api";
            if (kind is null)
            {
                continue;
            }
            // A thread's first calls, before it names itself, are made under its maker's lists: an
            // api thread's maker is an api thread; a vCPU's or the event loop's is vireo-starter.
            int from = main
                ? Array.FindIndex(lines, l => l.StartsWith($"lstat(\"{ApiSocket().Match(lines[0]).Groups[1].Value}\"", StringComparison.Ordinal)) - 1
                : kind == "api" ? -1
                : Array.FindIndex(lines, l => NameLine().IsMatch(l));
            if (from < -1 || (from == -1 && kind != "api"))
            {
                continue; // a thread that ended before its lists were on
            }
            var set = calls.TryGetValue(kind, out var s) ? s : calls[kind] = new HashSet<string>(StringComparer.Ordinal);
            foreach (string line in lines.Skip(from + 1))
            {
                var m = CallLine().Match(line);
                if (!m.Success)
                {
                    continue; // signals (---), the end (+++)
                }
                string call = m.Groups[1].Value;
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

    [GeneratedRegex(@"^([a-z_0-9]+)\(")]
    private static partial Regex CallLine();

    [GeneratedRegex(@"^ioctl\(\d+, ([A-Za-z_0-9]+)")]
    private static partial Regex IoctlRequest();
}
