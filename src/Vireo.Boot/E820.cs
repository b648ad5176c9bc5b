using Vireo.Memory;

namespace Vireo.Boot;

public enum E820Type : uint
{
    Ram = 1,
    Reserved = 2,
}

public readonly record struct E820Entry(ulong Address, ulong Size, E820Type Type);

/// <summary>The e820 map every boot path hands the guest, derived from the RAM regions.</summary>
public static class E820
{
    public static IReadOnlyList<E820Entry> Build(GuestMemory memory)
    {
        var map = new List<E820Entry>
        {
            new(0, BootLayout.EbdaStart, E820Type.Ram),
            new(BootLayout.EbdaStart, BootLayout.HighMemStart - BootLayout.EbdaStart, E820Type.Reserved),
        };
        foreach (var region in memory.Regions)
        {
            ulong start = Math.Max(region.Start.Value, BootLayout.HighMemStart);
            if (region.End.Value > start)
            {
                map.Add(new E820Entry(start, region.End.Value - start, E820Type.Ram));
            }
        }
        return map;
    }
}
