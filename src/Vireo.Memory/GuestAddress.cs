namespace Vireo.Memory;

/// <summary>A guest-physical address. A distinct type so that host and guest addresses never mix.</summary>
public readonly record struct GuestAddress(ulong Value) : IComparable<GuestAddress>
{
    public GuestAddress Add(ulong offset) => new(Value + offset);

    /// <summary>Adds without wrapping; false when the sum passes 2^64.</summary>
    public bool TryAdd(ulong offset, out GuestAddress result)
    {
        ulong sum = Value + offset;
        result = new GuestAddress(sum);
        return sum >= Value;
    }

    public int CompareTo(GuestAddress other) => Value.CompareTo(other.Value);

    public override string ToString() => $"0x{Value:x}";
}
