using System.Buffers.Binary;
using System.Text;

namespace Vireo.Sandbox;

/// <summary>
/// The files a dynamically linked executable needs to start: its interpreter (PT_INTERP) and the
/// libraries it names (DT_NEEDED), found where the loader looks on this host. A jail holds exactly
/// these, read-only: a Native AOT vireo-vmm needs the loader, libc and libm, nothing else.
/// </summary>
internal static class ElfLibraries
{
    private const uint PT_LOAD = 1, PT_DYNAMIC = 2, PT_INTERP = 3;
    private const long DT_NULL = 0, DT_NEEDED = 1, DT_STRTAB = 5;

    /// <summary>The directories the loader searches when it has no cache (as in a jail), in its order.</summary>
    internal static readonly string[] SearchDirs =
        ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"];

    /// <summary>An executable's interpreter and libraries, by the path the jail gives each.</summary>
    internal sealed record Files(string? Interpreter, List<string> Libraries)
    {
        public IEnumerable<string> All => Interpreter is null ? Libraries : Libraries.Prepend(Interpreter);
    }

    private static readonly Dictionary<(string, DateTime, long), Files> Seen = [];

    /// <summary><see cref="Of"/>, read once for each version of the file (the executable is 10 MiB or more).</summary>
    public static Files Cached(string path)
    {
        var info = new FileInfo(path);
        var key = (path, info.LastWriteTimeUtc, info.Length);
        lock (Seen)
        {
            if (!Seen.TryGetValue(key, out var files))
            {
                files = Closure(path);
                Seen[key] = files;
            }
            return files;
        }
    }

    /// <summary><see cref="Of"/>, with the libraries the libraries need, each once.</summary>
    public static Files Closure(string path)
    {
        var top = Of(path);
        var all = new List<string>();
        var pending = new Queue<string>(top.Libraries);
        while (pending.TryDequeue(out var library))
        {
            if (!all.Contains(library))
            {
                all.Add(library);
                Of(library).Libraries.ForEach(pending.Enqueue);
            }
        }
        return new Files(top.Interpreter, all);
    }

    /// <summary>The interpreter's path and each needed library's path (as the jail will name it); throws <see cref="InvalidDataException"/> for a file that is not a 64-bit ELF or names a library not found.</summary>
    public static Files Of(string path)
    {
        byte[] elf = File.ReadAllBytes(path);
        if (elf.Length < 64 || BinaryPrimitives.ReadUInt32BigEndian(elf) != 0x7f454c46 || elf[4] != 2 || elf[5] != 1)
        {
            throw new InvalidDataException($"{path} is not a 64-bit little-endian ELF executable");
        }
        ulong phoff = U64(elf, 32);
        int phentsize = U16(elf, 54), phnum = U16(elf, 56);
        string? interpreter = null;
        ulong dynOffset = 0, dynSize = 0;
        var loads = new List<(ulong Vaddr, ulong Offset, ulong Size)>();
        for (int i = 0; i < phnum; i++)
        {
            int at = checked((int)phoff + (i * phentsize));
            Need(elf, at, 56, path);
            uint type = U32(elf, at);
            ulong offset = U64(elf, at + 8), vaddr = U64(elf, at + 16), fileSize = U64(elf, at + 32);
            switch (type)
            {
                case PT_INTERP:
                    Need(elf, (int)offset, (int)fileSize, path);
                    interpreter = Encoding.ASCII.GetString(elf, (int)offset, (int)fileSize).TrimEnd('\0');
                    break;
                case PT_DYNAMIC:
                    (dynOffset, dynSize) = (offset, fileSize);
                    break;
                case PT_LOAD:
                    loads.Add((vaddr, offset, fileSize));
                    break;
            }
        }
        var neededOffsets = new List<ulong>();
        ulong strtab = 0;
        for (ulong at = dynOffset; at + 16 <= dynOffset + dynSize; at += 16)
        {
            Need(elf, (int)at, 16, path);
            long tag = (long)U64(elf, (int)at);
            ulong value = U64(elf, (int)at + 8);
            if (tag == DT_NULL)
            {
                break;
            }
            if (tag == DT_NEEDED)
            {
                neededOffsets.Add(value);
            }
            else if (tag == DT_STRTAB)
            {
                strtab = value;
            }
        }
        var libraries = new List<string>();
        if (neededOffsets.Count > 0)
        {
            var load = loads.FirstOrDefault(l => strtab >= l.Vaddr && strtab < l.Vaddr + l.Size);
            if (load.Size == 0)
            {
                throw new InvalidDataException($"{path}: its string table (0x{strtab:x}) is in no loaded segment");
            }
            ulong strtabOffset = strtab - load.Vaddr + load.Offset;
            foreach (ulong n in neededOffsets)
            {
                int start = checked((int)(strtabOffset + n));
                int end = Array.IndexOf(elf, (byte)0, start);
                string name = Encoding.ASCII.GetString(elf, start, end - start);
                libraries.Add(Find(name) ?? throw new InvalidDataException($"{path} needs {name}, which is in none of {string.Join(", ", SearchDirs)}"));
            }
        }
        return new Files(interpreter, libraries);
    }

    private static string? Find(string name) =>
        name.Contains('/') ? name : SearchDirs.Select(d => Path.Combine(d, name)).FirstOrDefault(File.Exists);

    private static void Need(byte[] elf, int at, int length, string path)
    {
        if (at < 0 || length < 0 || at + length > elf.Length)
        {
            throw new InvalidDataException($"{path}: truncated ELF (byte {at}, {length} bytes, of {elf.Length})");
        }
    }

    private static ushort U16(byte[] b, int at) => BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan(at));

    private static uint U32(byte[] b, int at) => BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(at));

    private static ulong U64(byte[] b, int at) => BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(at));
}
