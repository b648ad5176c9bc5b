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
    private readonly Dictionary<string, string> _tenants = []; // the last tenant each VM was seen with: an undefined VM's events still go to its own
    private long _seq;

    /// <summary>The tenant a defined VM belongs to (null once it is undefined); set once the store is open.</summary>
    public Func<string, string?>? TenantOf { get; set; }

    /// <summary>Publishes an event of <paramref name="vm"/>, its <paramref name="tenant"/>'s (looked up when not given).</summary>
    public void Publish(string vm, string evt, string state, string? detail = null, string? tenant = null)
    {
        tenant ??= TenantOf?.Invoke(vm);
        lock (_lock)
        {
            if (tenant is not null)
            {
                _tenants[vm] = tenant;
            }
            else
            {
                tenant = _tenants.GetValueOrDefault(vm, Tenants.Default);
            }
            if (evt is "undefined" or "migrated")
            {
                _tenants.Remove(vm); // its last event here: the name may be another tenant's next
            }
            var e = new LifecycleEvent(++_seq, DateTime.UtcNow, vm, evt, state, detail, tenant);
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

    /// <summary>Events after <paramref name="afterSeq"/> that are still kept, then every new one, until cancelled; only those <paramref name="sees"/> lets through.</summary>
    public async IAsyncEnumerable<LifecycleEvent> Follow(long afterSeq, Func<LifecycleEvent, bool> sees, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
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
            foreach (var e in backlog.Where(sees))
            {
                yield return e;
            }
            while (await channel.Reader.WaitToReadAsync(ct).ConfigureAwait(false))
            {
                while (channel.Reader.TryRead(out var e))
                {
                    if (sees(e))
                    {
                        yield return e;
                    }
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
