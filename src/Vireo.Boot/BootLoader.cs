using System.Text;
using Vireo.Boot.Acpi;
using Vireo.Memory;

namespace Vireo.Boot;

/// <summary>
/// What to boot: the raw kernel, an optional initrd, the command line and the vCPU count, and the
/// platform the ACPI tables describe (null: no ACPI, the guest finds its CPUs through the MP table).
/// </summary>
public sealed record BootSource(ReadOnlyMemory<byte> Kernel, ReadOnlyMemory<byte>? Initrd, string Cmdline, int Vcpus, AcpiPlatform? Acpi = null);

/// <summary>
/// Puts a kernel into guest RAM with every structure its entry expects. Everything is
/// checked before the first byte is written, so a bad image leaves memory untouched.
/// </summary>
public static class BootLoader
{
    private const ulong PageMask = 0xfff;

    public static BootCpuState Load(GuestMemory memory, BootSource source) =>
        Load(memory, KernelImage.Parse(source.Kernel.Span), source);

    /// <summary>Loads an image already parsed from <c>source.Kernel</c>.</summary>
    public static BootCpuState Load(GuestMemory memory, KernelImage image, BootSource source)
    {
        var plan = Plan(memory, image, source);
        return Write(memory, image, source, plan);
    }

    private readonly record struct LoadPlan(byte[] Cmdline, ulong InitrdAddr, E820Entry[] E820, byte[]? Acpi);

    private static LoadPlan Plan(GuestMemory memory, KernelImage image, BootSource source)
    {
        if (source.Vcpus < 1 || source.Vcpus > MpTable.MaxVcpus)
        {
            throw new BootException($"vCPU count {source.Vcpus} is outside 1..{MpTable.MaxVcpus}");
        }
        foreach (var seg in image.Segments)
        {
            if (seg.GuestAddress < BootLayout.HighMemStart)
            {
                throw new BootException($"{image.Format} segment at 0x{seg.GuestAddress:x} lies below 1 MiB, where Vireo keeps the boot structures");
            }
            if (!memory.IsValidRange(new GuestAddress(seg.GuestAddress), seg.MemSize))
            {
                throw new BootException($"{image.Format} segment at 0x{seg.GuestAddress:x} (0x{seg.MemSize:x} bytes) lies outside guest RAM ({memory.Size / MemoryLayout.MiB} MiB)");
            }
        }
        if (!image.Covers(image.Entry))
        {
            throw new BootException($"{image.Format} entry point 0x{image.Entry:x} is not inside any loaded segment");
        }
        if (image.Mode == EntryMode.Pvh && image.Entry >= MemoryLayout.PciHoleStart)
        {
            throw new BootException($"PVH entry point 0x{image.Entry:x} is not reachable from 32-bit mode");
        }

        var cmdline = Encoding.UTF8.GetBytes(source.Cmdline + "\0");
        // cmdline_size is the kernel's limit without the NUL; it is a u32 from the file, so the
        // + 1 is done in 64 bits (0xffffffff must not wrap to 0) and capped by Vireo's own area.
        ulong cmdlineMax = image.BzImage is { CmdlineSize: > 0 } bz
            ? Math.Min((ulong)bz.CmdlineSize + 1, BootLayout.CmdlineMax)
            : BootLayout.CmdlineMax;
        if ((ulong)cmdline.Length > cmdlineMax)
        {
            throw new CmdlineTooLongException($"command line is {cmdline.Length - 1} bytes; this kernel accepts at most {cmdlineMax - 1}");
        }

        ulong initrdAddr = 0;
        if (source.Initrd is { } initrd)
        {
            if (initrd.Length == 0)
            {
                throw new BootException("initrd is empty");
            }
            ulong ceiling = memory.LowRamEnd;
            if (image.BzImage is { } h && h.InitrdAddrMax != 0)
            {
                ceiling = Math.Min(ceiling, (ulong)h.InitrdAddrMax + 1);
            }
            ulong kernelEnd = (image.HighestEnd + PageMask) & ~PageMask;
            ulong size = (ulong)initrd.Length;
            if (size > ceiling || ((ceiling - size) & ~PageMask) < kernelEnd)
            {
                ulong free = ceiling > kernelEnd ? ceiling - kernelEnd : 0;
                throw new BootException($"initrd is too large: {size / MemoryLayout.MiB} MiB does not fit in the {free / MemoryLayout.MiB} MiB of RAM between the kernel and 0x{ceiling:x}");
            }
            initrdAddr = (ceiling - size) & ~PageMask;
        }
        byte[]? acpi = null;
        if (source.Acpi is { } platform)
        {
            acpi = AcpiTables.Build(platform, BootLayout.AcpiAddr);
            if ((ulong)acpi.Length > BootLayout.AcpiMax)
            {
                throw new BootException($"the ACPI tables take {acpi.Length} bytes; at most {BootLayout.AcpiMax} fit below the MP table");
            }
        }
        return new LoadPlan(cmdline, initrdAddr, E820.Build(memory), acpi);
    }

    /// <summary>
    /// Zeroes a segment's memory-only part, which may be larger than one span (2 GiB): in chunks,
    /// and only where a chunk is not zero already, so that a large bss in fresh guest RAM (which
    /// reads as the shared zero page) costs the host no memory.
    /// </summary>
    private static void ZeroFill(GuestMemory memory, ulong address, ulong length)
    {
        const ulong Chunk = 1UL << 20;
        while (length > 0)
        {
            ulong n = Math.Min(length, Chunk);
            var span = memory.GetSpan(new GuestAddress(address), n);
            if (span.IndexOfAnyExcept((byte)0) >= 0)
            {
                span.Clear();
            }
            address += n;
            length -= n;
        }
    }

    private static BootCpuState Write(GuestMemory memory, KernelImage image, BootSource source, LoadPlan plan)
    {
        foreach (var seg in image.Segments)
        {
            memory.Write(new GuestAddress(seg.GuestAddress), source.Kernel.Span.Slice(seg.FileOffset, seg.FileSize));
            ZeroFill(memory, seg.GuestAddress + (ulong)seg.FileSize, seg.MemSize - (ulong)seg.FileSize);
        }
        if (source.Initrd is { } initrd)
        {
            memory.Write(new GuestAddress(plan.InitrdAddr), initrd.Span);
        }
        memory.Write(new GuestAddress(BootLayout.GdtAddr), Gdt.Bytes());
        memory.GetSpan(new GuestAddress(BootLayout.IdtAddr), 8).Clear();
        memory.Write(new GuestAddress(BootLayout.CmdlineAddr), plan.Cmdline);
        memory.Write(new GuestAddress(BootLayout.MpTableAddr), MpTable.Build(BootLayout.MpTableAddr, source.Vcpus));
        ulong rsdp = 0;
        if (plan.Acpi is { } acpi)
        {
            memory.Write(new GuestAddress(BootLayout.AcpiAddr), acpi);
            rsdp = BootLayout.AcpiAddr;
        }

        ulong initrdSize = (ulong)(source.Initrd?.Length ?? 0);
        if (image.Mode == EntryMode.Pvh)
        {
            int modules = 0;
            if (source.Initrd is not null)
            {
                memory.Write(new GuestAddress(BootLayout.PvhModlistAddr), PvhStartInfo.BuildModule(plan.InitrdAddr, initrdSize));
                modules = 1;
            }
            memory.Write(new GuestAddress(BootLayout.PvhMemmapAddr), PvhStartInfo.BuildMemmap(plan.E820));
            memory.Write(new GuestAddress(BootLayout.PvhStartInfoAddr), PvhStartInfo.Build(
                BootLayout.CmdlineAddr, modules > 0 ? BootLayout.PvhModlistAddr : 0, modules,
                BootLayout.PvhMemmapAddr, plan.E820.Length, rsdp));
            return CpuSetup.Pvh(image.Entry, BootLayout.PvhStartInfoAddr);
        }

        foreach (var (address, table) in PageTables.Build())
        {
            memory.Write(new GuestAddress(address), table);
        }
        memory.Write(new GuestAddress(BootLayout.ZeroPageAddr), ZeroPage.Build(
            image.BzImage, BootLayout.CmdlineAddr, plan.InitrdAddr, initrdSize, plan.E820, rsdp));
        return CpuSetup.Linux64(image.Entry, BootLayout.ZeroPageAddr);
    }
}
