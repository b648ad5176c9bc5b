using System.Buffers.Binary;

namespace Vireo.Tests;

/// <summary>Files that are not what a VMM expects: FIFOs, sparse giants, kernels with huge segments.</summary>
internal static class HostileFiles
{
    /// <summary>A new FIFO (nobody ever opens its other end).</summary>
    public static string Fifo(string name = "fifo")
    {
        string path = Path.Combine(TempDirectory.Create("vireo-fifo"), name);
        var r = TestEnvironment.Run("mkfifo", path);
        Assert.True(r.ExitCode == 0, r.Error);
        return path;
    }

    /// <summary>A sparse regular file of <paramref name="bytes"/> bytes (costs no disk), named <paramref name="name"/> in a directory of its own.</summary>
    public static string Sparse(long bytes, string name = "big")
    {
        string path = Path.Combine(TempDirectory.Create("vireo-sparse"), name);
        using var f = File.Create(path);
        f.SetLength(bytes);
        return path;
    }

    /// <summary>A copy of a test guest (ELF64) whose first PT_LOAD has <paramref name="memsz"/> bytes in memory: a huge bss.</summary>
    public static string WithBss(string guestElf, ulong memsz)
    {
        var f = File.ReadAllBytes(guestElf);
        Assert.Equal(2, f[4]); // ELF64
        ulong phoff = BinaryPrimitives.ReadUInt64LittleEndian(f.AsSpan(32));
        int phentsize = BinaryPrimitives.ReadUInt16LittleEndian(f.AsSpan(54));
        int phnum = BinaryPrimitives.ReadUInt16LittleEndian(f.AsSpan(56));
        for (int i = 0; i < phnum; i++)
        {
            var ph = f.AsSpan((int)phoff + i * phentsize);
            if (BinaryPrimitives.ReadUInt32LittleEndian(ph) == 1)
            {
                BinaryPrimitives.WriteUInt64LittleEndian(ph[40..], memsz);
                string path = Path.Combine(TempDirectory.Create("vireo-bss"), Path.GetFileName(guestElf));
                File.WriteAllBytes(path, f);
                return path;
            }
        }
        throw new InvalidOperationException($"{guestElf} has no PT_LOAD");
    }

    /// <summary>A copy of <paramref name="file"/> in a directory of its own, for a test to delete or replace.</summary>
    public static string Copy(string file)
    {
        string path = Path.Combine(TempDirectory.Create("vireo-copy"), Path.GetFileName(file));
        File.Copy(file, path);
        return path;
    }
}
