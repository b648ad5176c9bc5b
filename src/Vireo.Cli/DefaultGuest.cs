namespace Vireo.Cli;

/// <summary>What `vireo run` boots when no --kernel is given.</summary>
/// <param name="Note">Said on stderr before booting: why this guest and not the Debian one.</param>
internal sealed record DefaultBoot(string Kernel, string? Initrd, string? Disk, string Cmdline, ulong MemoryBytes, string? Note);

/// <summary>
/// The default guest: Debian's cloud kernel with the project's initramfs and disk (built by
/// guests/linux/build), on a shell, where the CPU offers VMX or SVM so that KVM can run a stock
/// kernel; otherwise the test kit's hello guest, which does its work at CPL3 and so runs on
/// KVM without hardware virtualization too (a nested host like the CI machine).
/// </summary>
internal static class DefaultGuest
{
    public static DefaultBoot Resolve()
    {
        if (Environment.GetEnvironmentVariable("VIREO_DEFAULT_KERNEL") is { Length: > 0 } env)
        {
            return new DefaultBoot(env, null, null, DefaultCmdline, DefaultMemory, null);
        }
        string? images = FindUp(System.IO.Path.Combine(".build", "images"));
        if (HasHardwareVirtualization())
        {
            if (images is not null && File.Exists(System.IO.Path.Combine(images, "vmlinuz")))
            {
                return new DefaultBoot(
                    System.IO.Path.Combine(images, "vmlinuz"),
                    System.IO.Path.Combine(images, "initramfs.gz"),
                    System.IO.Path.Combine(images, "disk.ext4"),
                    "console=ttyS0 panic=1 script=shell",
                    512UL << 20,
                    null);
            }
            return Hello("the Debian guest is not built (guests/linux/build makes it; ./vireo does so by itself)");
        }
        return Hello("this CPU offers KVM no VMX or SVM (a nested host without hardware virtualization), so a stock "
            + "Linux kernel's CPL0 code would be emulated here and stop. The Debian guest boots in the rig: "
            + "rig/rig exec -- ./vireo run");
    }

    private const string DefaultCmdline = "console=ttyS0 reboot=k panic=1";
    private const ulong DefaultMemory = 256UL << 20;

    private static DefaultBoot Hello(string why)
    {
        string? guests = FindUp(System.IO.Path.Combine("guests", "build"));
        string? hello = guests is null ? null : System.IO.Path.Combine(guests, "hello.elf");
        if (hello is null || !File.Exists(hello))
        {
            throw new Vmm.VmConfigException("kernel: no --kernel given and the built-in guest is not built (run `make -C guests`, or use ./vireo which builds it)");
        }
        return new DefaultBoot(hello, null, null, DefaultCmdline, DefaultMemory, $"no --kernel: booting the test kit's hello guest, because {why}");
    }

    /// <summary>True when /proc/cpuinfo lists vmx (Intel VT-x) or svm (AMD-V).</summary>
    public static bool HasHardwareVirtualization()
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/cpuinfo"))
            {
                if (line.StartsWith("flags", StringComparison.Ordinal))
                {
                    var flags = line.Split([' ', '\t', ':'], StringSplitOptions.RemoveEmptyEntries);
                    return flags.Contains("vmx") || flags.Contains("svm");
                }
            }
        }
        catch (IOException)
        {
        }
        return false;
    }

    /// <summary>The directory <paramref name="relative"/> under the first ancestor of the binary that has it.</summary>
    private static string? FindUp(string relative)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = System.IO.Path.Combine(dir.FullName, relative);
            if (Directory.Exists(candidate))
            {
                return candidate;
            }
        }
        return null;
    }
}
