using System.Buffers.Binary;

namespace Vireo.Boot;

/// <summary>
/// ELF kernels: 32- or 64-bit, little-endian x86. A XEN_ELFNOTE_PHYS32_ENTRY note makes it a
/// PVH image (how Debian's vmlinux and small PVH guests boot); an ELF64 without it is entered
/// at e_entry through the Linux 64-bit boot protocol, as Firecracker boots a vmlinux.
/// </summary>
public static class ElfKernel
{
    private const uint PT_LOAD = 1, PT_NOTE = 4;
    private const ushort EM_386 = 3, EM_X86_64 = 62;
    private const uint XEN_ELFNOTE_PHYS32_ENTRY = 18;

    public static KernelImage Parse(ReadOnlySpan<byte> f)
    {
        if (f.Length < 52)
        {
            throw new BootException($"ELF image is truncated: {f.Length} bytes is less than an ELF header");
        }
        bool is64 = f[4] switch
        {
            1 => false,
            2 => true,
            _ => throw new BootException($"ELF image has an invalid class {f[4]} (expected 1 for ELF32 or 2 for ELF64)"),
        };
        if (f[5] != 1)
        {
            throw new BootException("ELF image is not little-endian");
        }
        if (is64 && f.Length < 64)
        {
            throw new BootException($"ELF64 image is truncated: {f.Length} bytes is less than an ELF64 header");
        }
        ushort machine = U16(f, 18);
        if (machine != EM_386 && machine != EM_X86_64)
        {
            throw new BootException($"ELF image is for machine {machine}, not x86 (3) or x86-64 (62)");
        }
        ulong entry = is64 ? U64(f, 24) : U32(f, 24);
        ulong phoff = is64 ? U64(f, 32) : U32(f, 28);
        int phentsize = U16(f, is64 ? 54 : 42);
        int phnum = U16(f, is64 ? 56 : 44);
        int minEntSize = is64 ? 56 : 32;
        if (phnum == 0)
        {
            throw new BootException("ELF image has no program headers");
        }
        if (phentsize < minEntSize)
        {
            throw new BootException($"ELF program header size {phentsize} is smaller than {minEntSize}");
        }
        if (phoff > (ulong)f.Length || (ulong)phnum * (ulong)phentsize > (ulong)f.Length - phoff)
        {
            throw new BootException("ELF program headers lie beyond the end of the file (truncated image?)");
        }

        var segments = new LoadSegment[phnum];
        int count = 0;
        ulong? pvhEntry = null;
        for (int i = 0; i < phnum; i++)
        {
            var ph = f.Slice((int)phoff + i * phentsize, minEntSize);
            uint type = U32(ph, 0);
            ulong offset = is64 ? U64(ph, 8) : U32(ph, 4);
            ulong paddr = is64 ? U64(ph, 24) : U32(ph, 12);
            ulong filesz = is64 ? U64(ph, 32) : U32(ph, 16);
            ulong memsz = is64 ? U64(ph, 40) : U32(ph, 20);
            if (type != PT_LOAD && type != PT_NOTE)
            {
                continue;
            }
            if (offset > (ulong)f.Length || filesz > (ulong)f.Length - offset)
            {
                throw new BootException($"ELF segment {i} (offset 0x{offset:x}, size 0x{filesz:x}) lies beyond the end of the file (truncated image?)");
            }
            if (type == PT_NOTE)
            {
                pvhEntry ??= FindPvhEntry(f.Slice((int)offset, (int)filesz));
                continue;
            }
            if (filesz > memsz)
            {
                throw new BootException($"ELF segment {i} has a file size 0x{filesz:x} larger than its memory size 0x{memsz:x}");
            }
            if (memsz == 0)
            {
                continue;
            }
            if (paddr + memsz < paddr)
            {
                throw new BootException($"ELF segment {i} wraps around the address space");
            }
            segments[count++] = new LoadSegment(paddr, (int)offset, (int)filesz, memsz);
        }
        segments = segments[..count];
        if (count == 0)
        {
            throw new BootException("ELF image has no loadable segments");
        }
        if (pvhEntry is { } pvh)
        {
            return new KernelImage(is64 ? "ELF64 (PVH)" : "ELF32 (PVH)", EntryMode.Pvh, pvh, segments);
        }
        if (!is64)
        {
            throw new BootException("ELF32 image has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); Vireo cannot tell how to enter it");
        }
        return new KernelImage("ELF64", EntryMode.Linux64, entry, segments);
    }

    /// <summary>Walks the notes of a PT_NOTE segment for the "Xen" PHYS32_ENTRY note.</summary>
    private static ulong? FindPvhEntry(ReadOnlySpan<byte> notes)
    {
        int pos = 0;
        while (notes.Length - pos >= 12)
        {
            uint namesz = U32(notes, pos), descsz = U32(notes, pos + 4), type = U32(notes, pos + 8);
            ulong nameStart = (ulong)pos + 12;
            ulong descStart = nameStart + Align4(namesz);
            ulong next = descStart + Align4(descsz);
            if (next > (ulong)notes.Length)
            {
                throw new BootException("ELF note runs past the end of its segment");
            }
            var name = notes.Slice((int)nameStart, (int)namesz);
            if (type == XEN_ELFNOTE_PHYS32_ENTRY && name.SequenceEqual("Xen\0"u8))
            {
                var desc = notes.Slice((int)descStart, (int)descsz);
                return descsz switch
                {
                    4 => U32(desc, 0),
                    8 => U64(desc, 0),
                    _ => throw new BootException($"PVH entry note has a {descsz}-byte value (expected 4 or 8)"),
                };
            }
            pos = (int)next;
        }
        return null;
    }

    private static ulong Align4(uint n) => ((ulong)n + 3) & ~3UL;
    private static ushort U16(ReadOnlySpan<byte> b, int o) => BinaryPrimitives.ReadUInt16LittleEndian(b[o..]);
    private static uint U32(ReadOnlySpan<byte> b, int o) => BinaryPrimitives.ReadUInt32LittleEndian(b[o..]);
    private static ulong U64(ReadOnlySpan<byte> b, int o) => BinaryPrimitives.ReadUInt64LittleEndian(b[o..]);
}
