using System.Diagnostics.Tracing;

namespace Vireo.Cli;

/// <summary>
/// Prints each method the JIT compiles (VIREO_JIT_TRACE=1). ReadyToRun precompiles Vireo, but
/// not generic instantiations across assemblies; this shows which ones slow the start-up.
/// </summary>
internal sealed class JitTrace : EventListener
{
    private const EventKeywords JitKeyword = (EventKeywords)0x10;

    protected override void OnEventSourceCreated(EventSource source)
    {
        if (source.Name == "Microsoft-Windows-DotNETRuntime")
        {
            EnableEvents(source, EventLevel.Verbose, JitKeyword);
        }
    }

    protected override void OnEventWritten(EventWrittenEventArgs e)
    {
        if (e.EventName == "MethodJittingStarted_V1" && e.Payload is { Count: > 5 } p)
        {
            Console.Error.WriteLine($"vireo: JIT {p[4]}::{p[5]}");
        }
    }
}
