using System.Runtime.InteropServices;

namespace Vireo.Kvm.Tests;

/// <summary>The bytes of a kernel struct, for comparing two of them whole.</summary>
internal static class StructBytes
{
    public static byte[] Of<T>(in T value) where T : unmanaged => MemoryMarshal.AsBytes(new ReadOnlySpan<T>(in value)).ToArray();

    public static byte[] OfArray<T>(T[] values) where T : unmanaged => MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
}
