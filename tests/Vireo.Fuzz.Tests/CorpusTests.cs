using Vireo.Tests;

namespace Vireo.Fuzz.Tests;

/// <summary>
/// The fuzz targets' inputs kept in the repository, replayed on every test run: the seed corpus
/// (fuzz/corpus), and every input a fuzzer found a bug with (fuzz/regressions), so a bug that was
/// fixed stays fixed. The fuzzing itself is `fuzz/run`; ./test runs each target briefly.
/// </summary>
public class CorpusTests
{
    private static string Dir(string name) => Path.Combine(TestEnvironment.Root, "fuzz", name);

    public static TheoryData<string> Targets() => [.. FuzzTarget.All.Select(t => t.Name)];

    [Theory]
    [MemberData(nameof(Targets))]
    public void The_seed_corpus_replays_and_holds_every_seed_the_target_makes(string name)
    {
        var target = FuzzTarget.Named(name)!;
        string dir = Path.Combine(Dir("corpus"), name);
        Assert.True(Directory.Exists(dir), $"{dir}: no seed corpus (vireo-fuzz seeds fuzz/corpus makes it)");
        var files = Directory.GetFiles(dir);
        Assert.NotEmpty(files);
        foreach (var file in files)
        {
            byte[] input = File.ReadAllBytes(file);
            Assert.True(input.Length <= target.MaxLength, $"{file}: {input.Length} bytes, above the target's {target.MaxLength}");
            target.Run(input); // an exception here is a bug the seed reaches
        }
        Vireo.Fuzz.Targets.SeedDir.Path = Dir("corpus");
        foreach (var (seed, bytes) in target.Seeds())
        {
            string path = Path.Combine(dir, seed);
            Assert.True(File.Exists(path) && File.ReadAllBytes(path).AsSpan().SequenceEqual(bytes),
                $"{path}: missing or out of date; run `fuzz/Vireo.Fuzz/bin/Release/net10.0/vireo-fuzz seeds fuzz/corpus` after changing a target's seeds");
        }
    }

    [Fact]
    public void Every_input_a_fuzzer_crashed_vireo_with_is_refused_cleanly_now()
    {
        var dirs = Directory.GetDirectories(Dir("regressions"));
        Assert.NotEmpty(dirs);
        int replayed = 0;
        foreach (var dir in dirs)
        {
            var target = FuzzTarget.Named(Path.GetFileName(dir));
            Assert.True(target is not null, $"{dir}: no target of that name");
            foreach (var file in Directory.GetFiles(dir))
            {
                try
                {
                    target.Run(File.ReadAllBytes(file));
                }
                catch (Exception e)
                {
                    Assert.Fail($"{file}: {e}");
                }
                replayed++;
            }
        }
        Assert.True(replayed >= 3, $"{replayed} regressions");
    }

    [Fact]
    public void The_harness_replays_files_and_refuses_what_it_cannot_run()
    {
        // The replay path (fuzz/run --replay, a crash report checked): files in a directory, one by one.
        string dir = Path.Combine(Path.GetTempPath(), $"vireo-fuzz-{Guid.NewGuid():n}");
        Directory.CreateDirectory(dir);
        try
        {
            File.WriteAllBytes(Path.Combine(dir, "ok"), "name: a\nkernel: /k\nmemory_mib: 64\n"u8.ToArray());
            string harness = Path.Combine(AppContext.BaseDirectory, "vireo-fuzz");
            var ok = TestEnvironment.Run(harness, $"definition {dir}");
            Assert.True(ok.ExitCode == 0 && ok.Output.Contains("1 input(s), none threw"), ok.Output + ok.Error);
            var usage = TestEnvironment.Run(harness, "no-such-target");
            Assert.True(usage.ExitCode == 2 && usage.Error.Contains("targets: virtqueue"), usage.Error);
            var alone = TestEnvironment.Run(harness, "definition");
            Assert.True(alone.ExitCode == 2 && alone.Error.Contains("not under libFuzzer"), alone.Error);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
