using Vireo.Tests;

namespace Vireo.Sandbox.Tests;

public sealed class ElfLibrariesTests
{
    [Fact]
    public void The_shipped_VMM_needs_the_loader_libc_libm_and_libseccomp_and_each_is_found()
    {
        var files = ElfLibraries.Closure(TestEnvironment.Shipped("vireo-vmm"));
        Assert.Equal("/lib64/ld-linux-x86-64.so.2", files.Interpreter);
        Assert.Equal(["ld-linux-x86-64.so.2", "libc.so.6", "libm.so.6", "libseccomp.so.2"], files.Libraries.Select(p => Path.GetFileName(p)!).Order().ToArray());
        Assert.All(files.All, f => Assert.True(File.Exists(f), f));
    }

    [Fact]
    public void A_file_that_is_not_an_ELF_or_is_cut_short_is_refused_in_words()
    {
        string dir = TempDirectory.Create("vireo-elf");
        string text = Path.Combine(dir, "script");
        File.WriteAllText(text, "#!/bin/sh\necho hi\n");
        Assert.Contains("not a 64-bit little-endian ELF", Assert.Throws<InvalidDataException>(() => ElfLibraries.Of(text)).Message);
        string cut = Path.Combine(dir, "cut");
        File.WriteAllBytes(cut, File.ReadAllBytes(TestEnvironment.Shipped("vireo-vmm"))[..80]);
        Assert.Contains("truncated ELF", Assert.Throws<InvalidDataException>(() => ElfLibraries.Of(cut)).Message);
    }
}
