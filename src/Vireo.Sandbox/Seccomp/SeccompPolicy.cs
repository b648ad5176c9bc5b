using System.Globalization;
using System.Reflection;
using Vireo.Interop;

namespace Vireo.Sandbox.Seccomp;

/// <summary>
/// One line of a policy: a system call, allowed always or when <c>(arg &amp; Mask) == Value</c>.
/// <see cref="Self"/> stands for this process's id, known only when the filter is built.
/// </summary>
public sealed record SeccompRule(string Syscall, int Number, int? Arg, ulong Mask, ulong Value, bool Self, string Source, int? Errno = null)
{
    /// <summary>True when the call is allowed; false when it fails with <see cref="Errno"/> instead.</summary>
    public bool Allows => Errno is null;

    /// <summary>The line as a reader finds it: the file and line number, then the text.</summary>
    public override string ToString() => Source;
}

/// <summary>
/// A thread kind's allow-list, read from its file (Seccomp/KIND.policy, embedded in the assembly,
/// runtime.policy included where it says so). The files' form is described at the top of
/// runtime.policy. Every name is resolved when the list is read, so a typo is an error with its
/// file and line, never a call silently left out.
/// </summary>
public sealed class SeccompPolicy
{
    /// <summary>
    /// The thread kinds, each with its file: vmm (the main thread and every thread it makes), and
    /// api, vcpu and io, each on its own threads (made by a thread that holds only their union).
    /// </summary>
    public static readonly string[] Kinds = ["vmm", "api", "vcpu", "io"];

    /// <summary>The main thread's kind, loaded on it first; its descendants inherit it.</summary>
    public const string Main = "vmm";

    public string Kind { get; }
    public IReadOnlyList<SeccompRule> Rules { get; }

    private SeccompPolicy(string kind, IReadOnlyList<SeccompRule> rules) => (Kind, Rules) = (kind, rules);

    /// <summary>The system calls the list allows in some form.</summary>
    public IReadOnlySet<string> Syscalls => Rules.Where(r => r.Allows).Select(r => r.Syscall).ToHashSet(StringComparer.Ordinal);

    /// <summary>
    /// What any of <paramref name="policies"/> allows, for the filter every thread gets first (a
    /// thread's own list then narrows it): their rules that allow, each once.
    /// </summary>
    public static SeccompPolicy UnionOf(string name, IEnumerable<SeccompPolicy> policies)
    {
        var seen = new HashSet<(int, int?, ulong, ulong, bool)>();
        var rules = new List<SeccompRule>();
        foreach (var rule in policies.SelectMany(p => p.Rules).Where(r => r.Allows))
        {
            if (seen.Add((rule.Number, rule.Arg, rule.Mask, rule.Value, rule.Self)))
            {
                rules.Add(rule);
            }
        }
        return new SeccompPolicy(name, rules);
    }

    /// <summary>The list shipped for <paramref name="kind"/>.</summary>
    public static SeccompPolicy Load(string kind) => Parse(kind, Text(kind), Text);

    /// <summary>The text of a shipped list (Seccomp/NAME.policy).</summary>
    public static string Text(string name)
    {
        using var stream = typeof(SeccompPolicy).Assembly.GetManifestResourceStream($"Vireo.Sandbox.Seccomp.{name}.policy")
            ?? throw new SandboxException($"seccomp: there is no list named '{name}'");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    /// <summary>Reads a list; <paramref name="include"/> gives the text of a list it includes.</summary>
    public static SeccompPolicy Parse(string kind, string text, Func<string, string> include)
    {
        var rules = new List<SeccompRule>();
        Read(kind, text, include, rules, [kind]);
        return new SeccompPolicy(kind, rules);
    }

    private static void Read(string file, string text, Func<string, string> include, List<SeccompRule> rules, HashSet<string> seen)
    {
        string[] lines = text.Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            string where = $"{file}.policy line {i + 1}";
            string line = lines[i];
            int hash = line.IndexOf('#');
            string[] words = (hash >= 0 ? line[..hash] : line).Split([' ', '\t', '\r'], StringSplitOptions.RemoveEmptyEntries);
            if (words.Length == 0)
            {
                continue;
            }
            if (words[0] == "include")
            {
                if (words.Length != 2)
                {
                    throw new SandboxException($"seccomp: {where}: 'include' takes one list's name");
                }
                if (!seen.Add(words[1]))
                {
                    throw new SandboxException($"seccomp: {where}: '{words[1]}' is included twice or includes itself");
                }
                Read(words[1], include(words[1]), include, rules, seen);
                continue;
            }
            int number = Number(words[0]);
            if (number < 0)
            {
                throw new SandboxException($"seccomp: {where}: '{words[0]}' is not a system call on this architecture");
            }
            string source = $"{where}: {line.Trim()}";
            if (words.Length == 4 && words[1] == "fails" && words[2] == "with")
            {
                int errno = words[3] switch { "EPERM" => 1, "EAGAIN" => 11, "ENOSYS" => 38, _ => -1 };
                if (errno < 0)
                {
                    throw new SandboxException($"seccomp: {where}: '{words[3]}' is not an error a list may give (EPERM, EAGAIN or ENOSYS)");
                }
                rules.Add(new SeccompRule(words[0], number, null, 0, 0, false, source, errno));
                continue;
            }
            if (words.Length == 1)
            {
                rules.Add(new SeccompRule(words[0], number, null, 0, 0, false, source));
                continue;
            }
            // argN == V, or argN & M == V
            bool masked = words.Length == 6 && words[2] == "&" && words[4] == "==";
            if (!(words.Length == 4 && words[2] == "==") && !masked)
            {
                throw new SandboxException($"seccomp: {where}: expected 'NAME', 'NAME argN == VALUE', 'NAME argN & MASK == VALUE' or 'NAME fails with ERRNO'");
            }
            if (!words[1].StartsWith("arg", StringComparison.Ordinal) || !int.TryParse(words[1].AsSpan(3), NumberStyles.None, CultureInfo.InvariantCulture, out int arg) || arg > 5)
            {
                throw new SandboxException($"seccomp: {where}: '{words[1]}' is not an argument (arg0 to arg5)");
            }
            ulong mask = masked ? Value(words[3], where) : 0xFFFF_FFFF;
            string valueWord = masked ? words[5] : words[3];
            bool self = valueWord == "self";
            ulong value = self ? 0 : Value(valueWord, where);
            if (masked && (mask & 0xFFFF_FFFF) != mask)
            {
                throw new SandboxException($"seccomp: {where}: a mask covers the argument's low 32 bits only");
            }
            rules.Add(new SeccompRule(words[0], number, arg, mask, value, self, source));
        }
    }

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, int> Numbers = new(StringComparer.Ordinal);

    /// <summary>A call's number by libseccomp (a walk of its table), each name once a process.</summary>
    private static int Number(string name) => Numbers.GetOrAdd(name, Vireo.Interop.Seccomp.ResolveName);

    private static ulong Value(string word, string where)
    {
        if (SeccompNames.TryGet(word, out ulong named))
        {
            return named;
        }
        if (word.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
            ? ulong.TryParse(word.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong hex)
            : ulong.TryParse(word, NumberStyles.None, CultureInfo.InvariantCulture, out hex))
        {
            return hex;
        }
        throw new SandboxException($"seccomp: {where}: '{word}' is neither a number nor a name SeccompNames knows");
    }
}
