using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Vireo.Api;

namespace Vireo.Daemon;

/// <summary>
/// Lifecycle events: numbered, logged as structured log records, kept (the last 1024) so that an
/// SSE client reconnecting with Last-Event-ID misses nothing, and fanned out to live subscribers.
/// A subscriber that does not keep up loses its oldest events, never blocks the publisher.
/// </summary>
internal sealed class EventHub(ILogger<EventHub> log)
{
    private const int Kept = 1024;
    private readonly Queue<LifecycleEvent> _recent = new();
    private readonly List<Channel<LifecycleEvent>> _subscribers = [];
    private readonly Lock _lock = new();
    private long _seq;

    public void Publish(string vm, string evt, string state, string? detail = null)
    {
        lock (_lock)
        {
            var e = new LifecycleEvent(++_seq, DateTime.UtcNow, vm, evt, state, detail);
            _recent.Enqueue(e);
            if (_recent.Count > Kept)
            {
                _recent.Dequeue();
            }
            foreach (var s in _subscribers)
            {
                s.Writer.TryWrite(e);
            }
            log.LogInformation("vm {Vm} {Event}: state {State}{Detail}", vm, evt, state, detail is null ? "" : $" ({detail})");
        }
    }

    /// <summary>Events after <paramref name="afterSeq"/> that are still kept, then every new one, until cancelled.</summary>
    public async IAsyncEnumerable<LifecycleEvent> Follow(long afterSeq, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
    {
        var channel = Channel.CreateBounded<LifecycleEvent>(new BoundedChannelOptions(Kept) { FullMode = BoundedChannelFullMode.DropOldest });
        LifecycleEvent[] backlog;
        lock (_lock)
        {
            backlog = [.. _recent.Where(e => e.Seq > afterSeq)];
            _subscribers.Add(channel);
        }
        try
        {
            foreach (var e in backlog)
            {
                yield return e;
            }
            while (await channel.Reader.WaitToReadAsync(ct).ConfigureAwait(false))
            {
                while (channel.Reader.TryRead(out var e))
                {
                    yield return e;
                }
            }
        }
        finally
        {
            lock (_lock)
            {
                _subscribers.Remove(channel);
            }
        }
    }
}
