namespace Vireo.Tests;

/// <summary>Temporary directories for a test run, removed when the test process exits.</summary>
internal static class TempDirectory
{
    private static readonly List<string> Created = [];

    static TempDirectory() => AppDomain.CurrentDomain.ProcessExit += (_, _) =>
    {
        lock (Created)
        {
            foreach (var dir in Created)
            {
                try
                {
                    Directory.Delete(dir, recursive: true);
                }
                catch (IOException)
                {
                    // Still in use by a process the test started: left for the system's cleaner.
                }
            }
        }
    };

    /// <summary>A new directory in the system's temporary folder, or under <paramref name="under"/>.</summary>
    public static string Create(string prefix, string? under = null)
    {
        string dir = under is null
            ? Directory.CreateTempSubdirectory(prefix).FullName
            : Directory.CreateDirectory(Path.Combine(under, $"{prefix}-{Guid.NewGuid():n}")).FullName;
        lock (Created)
        {
            Created.Add(dir);
        }
        return dir;
    }
}
