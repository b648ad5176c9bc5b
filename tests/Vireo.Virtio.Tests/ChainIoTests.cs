using Vireo.Virtio.Queue;

namespace Vireo.Virtio.Tests;

public class ChainIoTests
{
    private static readonly Queue.Buffer[] Chain =
    [
        new(0x1000, 16, false), new(0x2000, 0, false), new(0x3000, 512, false),
        new(0x4000, 100, true), new(0x5000, 1, true),
    ];

    private static List<Piece> Pieces(bool writable, ulong skip, ulong length)
    {
        var list = new List<Piece>();
        foreach (var p in ChainIo.Pieces(Chain, writable, skip, length))
        {
            list.Add(p);
        }
        return list;
    }

    [Fact]
    public void Pieces_skip_across_buffers_pass_empty_ones_and_stop_at_the_limit()
    {
        Assert.Equal([new Piece(0x1000, 16), new Piece(0x3000, 512)], Pieces(writable: false, 0, ulong.MaxValue));
        Assert.Equal([new Piece(0x1008, 8), new Piece(0x3000, 100)], Pieces(writable: false, 8, 108));
        Assert.Equal([new Piece(0x3004, 508)], Pieces(writable: false, 20, 1000));
        Assert.Equal([new Piece(0x4000, 100), new Piece(0x5000, 1)], Pieces(writable: true, 0, 101));
        Assert.Equal([new Piece(0x5000, 1)], Pieces(writable: true, 100, 1));
        Assert.Empty(Pieces(writable: true, 101, 10));
        Assert.Empty(Pieces(writable: false, 0, 0));
    }

    [Fact]
    public void Lengths_count_one_direction()
    {
        Assert.Equal(528UL, ChainIo.Length(Chain, writable: false));
        Assert.Equal(101UL, ChainIo.Length(Chain, writable: true));
    }
}
