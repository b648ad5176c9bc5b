namespace Vireo.Cli;

/// <summary>The guest `vireo run` boots when no --kernel is given: the test kit's hello guest.</summary>
internal static class DefaultGuest
{
    public static string Path()
    {
        if (Environment.GetEnvironmentVariable("VIREO_DEFAULT_KERNEL") is { Length: > 0 } env)
        {
            return env;
        }
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = System.IO.Path.Combine(dir.FullName, "guests", "build", "hello.elf");
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }
        throw new Vmm.VmConfigException("kernel: no --kernel given and the built-in guest is not built (run `make -C guests`, or use ./vireo which builds it)");
    }
}
