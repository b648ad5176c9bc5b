using Vireo.Tests;

namespace Vireo.Vmm.Tests;

[CollectionDefinition(nameof(AllocationCollection), DisableParallelization = true)]
public sealed class AllocationCollection;

/// <summary>The vCPU exit path allocates nothing: 20,000 more port-I/O exits cost no more heap.</summary>
[Collection(nameof(AllocationCollection))]
public class ExitPathTests
{
    [KvmFact]
    public void Port_io_exits_allocate_nothing()
    {
        Measure(100); // warm up: JIT and type loading happen once
        long few = Measure(100);
        long many = Measure(20_100);
        // One 24-byte object an exit would be 480 KB; the serial output differs by two digits.
        Assert.True(many - few < 1024, $"20,000 extra exits allocated {many - few} bytes on the vCPU thread ({few} vs {many})");
    }

    private static long Measure(int exits)
    {
        var run = GuestRun.Boot("pio", cmdline: $"exits={exits}").ExitedWith(0);
        Assert.Contains($"pio: {exits} exits", run.Output);
        Assert.True(run.Exits > exits, $"only {run.Exits} exits reached Vireo");
        return run.VcpuAllocatedBytes;
    }
}
