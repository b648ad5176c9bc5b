using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Vireo.Interop;

/// <summary>Native memory aligned for O_DIRECT, handed out as a span; freed on Dispose.</summary>
public sealed unsafe class AlignedBuffer : IDisposable
{
    private byte* _p;

    public int Length { get; }

    public AlignedBuffer(int length, int alignment = 4096)
    {
        Length = length;
        _p = (byte*)NativeMemory.AlignedAlloc((nuint)length, (nuint)alignment);
    }

    // SAFETY: _p points at Length bytes until Dispose, after which this throws.
    public Span<byte> Span => _p != null ? new Span<byte>(_p, Length) : throw new ObjectDisposedException(nameof(AlignedBuffer));

    /// <summary>True when the span starts on a multiple of <paramref name="alignment"/> and its length is one too.</summary>
    public static bool IsAligned(ReadOnlySpan<byte> span, int alignment) =>
        span.Length % alignment == 0 && (nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(span)) % alignment == 0;

    public void Dispose()
    {
        if (_p != null)
        {
            NativeMemory.AlignedFree(_p);
            _p = null;
        }
    }
}
