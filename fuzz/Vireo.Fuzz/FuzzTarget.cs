namespace Vireo.Fuzz;

/// <summary>
/// One parser that takes guest or file input, driven by a fuzzer's bytes. <see cref="Run"/> refuses
/// bad input the way Vireo does (a device in NEEDS_RESET, an exception of the documented kind, an
/// error string); anything else that escapes it is a bug, and libFuzzer keeps the input.
/// </summary>
public abstract class FuzzTarget
{
    /// <summary>The name `fuzz/run NAME` takes, and the corpus folder's.</summary>
    public abstract string Name { get; }

    /// <summary>What the target drives, in a line.</summary>
    public abstract string Covers { get; }

    /// <summary>Runs one input. Throws only when Vireo has a bug.</summary>
    public abstract void Run(ReadOnlySpan<byte> input);

    /// <summary>Valid and near-valid inputs the fuzzer starts from (written to fuzz/corpus/NAME by `vireo-fuzz seeds`).</summary>
    public abstract IEnumerable<(string Name, byte[] Bytes)> Seeds();

    /// <summary>The largest input worth trying (libFuzzer's -max_len).</summary>
    public virtual int MaxLength => 64 * 1024;

    public static readonly FuzzTarget[] All =
    [
        new Targets.QueueTarget(),
        new Targets.BlockTarget(),
        new Targets.NetTarget(),
        new Targets.ConsoleTarget(),
        new Targets.RngTarget(),
        new Targets.VsockTarget(),
        new Targets.PciTarget(),
        new Targets.MmioTarget(),
        new Targets.ElfTarget(),
        new Targets.BzImageTarget(),
        new Targets.DefinitionTarget(),
        new Targets.XlTarget(),
        new Targets.VmmBodyTarget(),
        new Targets.DaemonBodyTarget(),
        new Targets.DeviceOptionTarget(),
        new Targets.SnapshotTarget(),
        new Targets.MigrationTarget(),
    ];

    public static FuzzTarget? Named(string name) => All.FirstOrDefault(t => t.Name == name);
}
