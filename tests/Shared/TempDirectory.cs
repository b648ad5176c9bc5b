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

    public static string Create(string prefix)
    {
        string dir = Directory.CreateTempSubdirectory(prefix).FullName;
        lock (Created)
        {
            Created.Add(dir);
        }
        return dir;
    }
}
