using Vireo.Virtio.Block;

namespace Vireo.Virtio.Tests;

public class BlockConfigTests
{
    [Fact]
    public void Parses_every_option()
    {
        Assert.Equal(new BlockConfig("/d.img"), BlockConfig.Parse("/d.img"));
        Assert.Equal(new BlockConfig("/d.img", ReadOnly: true, Direct: true, Queues: 4, Id: "root"),
            BlockConfig.Parse("/d.img,ro,direct,queues=4,id=root"));
    }

    [Theory]
    [InlineData(",ro", "a path is required")]
    [InlineData("/d.img,fast", "unknown option 'fast'")]
    [InlineData("/d.img,queues=0", "queues must be 1..16")]
    [InlineData("/d.img,queues=x", "queues must be 1..16")]
    [InlineData("/d.img,id=", "1 to 20 characters")]
    [InlineData("/d.img,id=abcdefghijklmnopqrstuvwxyz", "1 to 20 characters")]
    public void Refuses_bad_options_by_name(string text, string message) =>
        Assert.Contains(message, Assert.Throws<FormatException>(() => BlockConfig.Parse(text)).Message);
}
