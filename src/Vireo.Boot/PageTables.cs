using System.Buffers.Binary;

namespace Vireo.Boot;

/// <summary>Identity page tables for the 64-bit entry: the first 4 GiB in 2 MiB pages.</summary>
public static class PageTables
{
    public const ulong Present = 1, Writable = 2, PageSize = 0x80;
    public const int Directories = 4;

    /// <summary>(guest address, bytes) for the PML4, the PDPT and the four page directories.</summary>
    public static IEnumerable<(ulong Address, byte[] Table)> Build()
    {
        var pml4 = new byte[4096];
        BinaryPrimitives.WriteUInt64LittleEndian(pml4, BootLayout.PdptAddr | Present | Writable);
        yield return (BootLayout.Pml4Addr, pml4);

        var pdpt = new byte[4096];
        for (int i = 0; i < Directories; i++)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(pdpt.AsSpan(i * 8), (BootLayout.PdAddr + (ulong)i * 4096) | Present | Writable);
        }
        yield return (BootLayout.PdptAddr, pdpt);

        for (int d = 0; d < Directories; d++)
        {
            var pd = new byte[4096];
            for (int i = 0; i < 512; i++)
            {
                ulong page = ((ulong)d * 512 + (ulong)i) << 21;
                BinaryPrimitives.WriteUInt64LittleEndian(pd.AsSpan(i * 8), page | Present | Writable | PageSize);
            }
            yield return (BootLayout.PdAddr + (ulong)d * 4096, pd);
        }
    }
}
