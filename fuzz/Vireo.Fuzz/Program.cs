using Vireo.Fuzz;

// vireo-fuzz list                 the targets, and what each covers
// vireo-fuzz TARGET               under fuzz/driver's vireo-libfuzzer: one input after another
// vireo-fuzz TARGET PATH...       replays files (a directory: every file in it); exit 1 at the first that throws
// vireo-fuzz seeds DIR            writes each target's seed corpus to DIR/TARGET/
// vireo-fuzz max-len TARGET       the largest input worth trying for TARGET
// The instrumented assemblies count edges into SharpFuzz's map: under libFuzzer it is the shared
// memory; otherwise (list, seeds, a replay) a map of this process's own, or they would write through null.
unsafe
{
    SharpFuzz.Common.Trace.SharedMem = (byte*)System.Runtime.InteropServices.NativeMemory.AllocZeroed(1 << 16);
}
if (args is ["list"])
{
    foreach (var t in FuzzTarget.All)
    {
        Console.WriteLine($"{t.Name,-14} {t.Covers}");
    }
    return 0;
}
if (args is ["seeds", var dir])
{
    Vireo.Fuzz.Targets.SeedDir.Path = dir;
    foreach (var t in FuzzTarget.All)
    {
        string into = Path.Combine(dir, t.Name);
        Directory.CreateDirectory(into);
        foreach (var (name, bytes) in t.Seeds())
        {
            File.WriteAllBytes(Path.Combine(into, name), bytes);
        }
    }
    return 0;
}
if (args is ["max-len", var named] && FuzzTarget.Named(named) is { } sized)
{
    Console.WriteLine(sized.MaxLength);
    return 0;
}
if (args.Length == 0 || FuzzTarget.Named(args[0]) is not { } target)
{
    Console.Error.WriteLine($"usage: vireo-fuzz list | seeds DIR | max-len TARGET | TARGET [PATH...]\n  targets: {string.Join(", ", FuzzTarget.All.Select(t => t.Name))}");
    return 2;
}
if (args.Length == 1)
{
    if (Environment.GetEnvironmentVariable("__LIBFUZZER_SHM_ID") is null)
    {
        Console.Error.WriteLine($"vireo-fuzz {target.Name}: not under libFuzzer (run fuzz/run {target.Name}), and no input given to replay");
        return 2;
    }
    SharpFuzz.Fuzzer.LibFuzzer.Run(input => target.Run(input));
    return 0;
}
// Replay: each file once, not instrumented; the first that throws is reported with its exception.
int replayed = 0;
foreach (var path in args.Skip(1).SelectMany(p => Directory.Exists(p) ? Directory.EnumerateFiles(p).Order(StringComparer.Ordinal) : (IEnumerable<string>)[p]))
{
    try
    {
        target.Run(File.ReadAllBytes(path));
        replayed++;
    }
    catch (Exception e)
    {
        Console.Error.WriteLine($"vireo-fuzz {target.Name}: {path} throws:\n{e}");
        return 1;
    }
}
Console.WriteLine($"vireo-fuzz {target.Name}: {replayed} input(s), none threw");
return 0;
