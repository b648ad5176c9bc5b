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
    public static E820Entry[] Build(GuestMemory memory)
    {
        var map = new E820Entry[2 + memory.Regions.Count];
        map[0] = new E820Entry(0, BootLayout.EbdaStart, E820Type.Ram);
        map[1] = new E820Entry(BootLayout.EbdaStart, BootLayout.HighMemStart - BootLayout.EbdaStart, E820Type.Reserved);
        int n = 2;
        foreach (var region in memory.Regions)
        {
            ulong start = Math.Max(region.Start.Value, BootLayout.HighMemStart);
            if (region.End.Value > start)
            {
                map[n++] = new E820Entry(start, region.End.Value - start, E820Type.Ram);
            }
        }
        return n == map.Length ? map : map[..n];
    }
}
