namespace Vireo.Tests;

/// <summary>Polls a condition until it holds or a time limit passes (then the test fails, naming what it waited for).</summary>
public static class Eventually
{
    public static async Task Until(Func<Task<bool>> condition, string what, int seconds = 30)
    {
        var deadline = DateTime.UtcNow.AddSeconds(seconds);
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting for {what}");
            await Task.Delay(20);
        }
    }
}
