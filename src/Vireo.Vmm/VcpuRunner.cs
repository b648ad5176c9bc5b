using System.Collections.Concurrent;
using Vireo.Devices;
using Vireo.Interop;
using Vireo.Kvm;

namespace Vireo.Vmm;

/// <summary>
/// One vCPU on its own thread: KVM_RUN, dispatch the exit to the buses, repeat until asked to
/// stop. Faults end the run with a register dump instead of hanging or crashing. The thread is
/// steered only by the requests it takes from its queue (<see cref="Send"/>) between two
/// KVM_RUNs, and it answers each on <see cref="TakeResponse"/>.
/// </summary>
internal sealed class VcpuRunner
{
    private readonly KvmVcpu _vcpu;
    private readonly Bus _pio;
    private readonly Bus _mmio;
    private readonly Machine _machine;
    private readonly Thread _thread;
    private nuint _pthread;
    private int _tid;
    private readonly ManualResetEventSlim _started = new();
    private readonly BlockingCollection<VcpuRequest> _requests = new();
    private readonly BlockingCollection<VcpuResponse> _responses = new();
    private int _pending; // requests sent and not yet taken: one read per exit says whether to look
    private long _exits;
    private VcpuState? _saved;
    private string? _saveError;
    private long _allocatedBytes;

    public int Id => _vcpu.Id;
    public long Exits => Interlocked.Read(ref _exits);

    /// <summary>Managed bytes this vCPU's thread allocated while running (the exit path should add none).</summary>
    public long AllocatedBytes => Interlocked.Read(ref _allocatedBytes);

    public VcpuRunner(KvmVcpu vcpu, Bus pio, Bus mmio, Machine machine)
    {
        _vcpu = vcpu;
        _pio = pio;
        _mmio = mmio;
        _machine = machine;
        _thread = new Thread(Loop) { Name = $"vcpu{vcpu.Id}", IsBackground = true };
    }

    public void Start()
    {
        VmmThreads.Start(_thread);
        _started.Wait();
    }

    /// <summary>The thread's id once it runs, else 0.</summary>
    public int ThreadId => Volatile.Read(ref _tid);

    /// <summary>True once the thread runs (it then answers every request it is sent).</summary>
    public bool IsStarted => _started.IsSet;

    public void Join() => _thread.Join();

    /// <summary>Queues a request and brings the vCPU out of KVM_RUN to take it. Safe from any thread.</summary>
    public void Send(VcpuRequest request)
    {
        Interlocked.Increment(ref _pending);
        _requests.Add(request);
        Kick();
    }

    /// <summary>
    /// The vCPU's next answer, waiting up to <paramref name="timeout"/>; false when none came. Once
    /// the thread has ended, every call answers Exited.
    /// </summary>
    public bool TakeResponse(TimeSpan timeout, out VcpuResponse response)
    {
        if (_responses.TryTake(out response, timeout))
        {
            return true;
        }
        response = VcpuResponse.Exited;
        return _responses.IsCompleted;
    }

    /// <summary>What the last Save request captured (read after its Saved answer), or why it could not.</summary>
    public (VcpuState? State, string? Error) LastSaved => (_saved, _saveError);

    /// <summary>
    /// A Save on the calling thread, without waking this vCPU's: only while its thread is parked
    /// (it answered Pause and nothing has resumed it), when the vCPU is out of KVM_RUN with its
    /// state all in KVM, which takes the ioctls from any thread. <see cref="LastSaved"/> has it after.
    /// </summary>
    public void SaveWhileParked()
    {
        try
        {
            (_saved, _saveError) = (_vcpu.SaveState(), null);
        }
        catch (Exception e) when (e is SysError or InvalidOperationException or ObjectDisposedException)
        {
            (_saved, _saveError) = (null, $"vCPU {Id}: {e.Message}");
        }
    }

    /// <summary>Brings the vCPU out of KVM_RUN: immediate_exit for the next entry, a signal for the current one.</summary>
    private void Kick()
    {
        _vcpu.ImmediateExit = true;
        if (_pthread != 0 && _thread.IsAlive)
        {
            Signals.Kick(_pthread);
        }
    }

    private void Loop()
    {
        _pthread = Signals.PthreadSelf();
        _tid = Libc.GetTid();
        string? refused = VmmThreads.Started("vcpu"); // its seccomp list, in vireo-vmm
        _started.Set();
        long allocatedAtStart = GC.GetAllocatedBytesForCurrentThread();
        try
        {
            if (refused is not null)
            {
                _machine.RequestStop(new VmOutcome(StopReason.HostError, Message: $"vCPU {Id} cannot start: {refused}"));
                return;
            }
            while (true)
            {
                if (Volatile.Read(ref _pending) != 0 && !TakeRequests())
                {
                    return;
                }
                if (!_vcpu.TryRun(out int errno))
                {
                    if (errno is Libc.EINTR or Libc.EAGAIN)
                    {
                        _vcpu.ImmediateExit = false;
                        continue;
                    }
                    _machine.RequestStop(new VmOutcome(StopReason.HostError, Message: $"vCPU {Id}: KVM_RUN failed: {Libc.StrError(errno)}", RegisterDump: Dump()));
                    return;
                }
                _exits++;
                if (!HandleExit())
                {
                    return;
                }
            }
        }
        catch (Exception e)
        {
            _machine.RequestStop(new VmOutcome(StopReason.HostError, Message: $"vCPU {Id}: {e.Message}", RegisterDump: SafeDump()));
        }
        finally
        {
            Interlocked.Exchange(ref _allocatedBytes, GC.GetAllocatedBytesForCurrentThread() - allocatedAtStart);
            _responses.Add(VcpuResponse.Exited);
            _responses.CompleteAdding(); // and Exited from then on: see TakeResponse
        }
    }

    /// <summary>
    /// Takes what was sent, out of KVM_RUN (so the vCPU's state is all in KVM); while paused, waits
    /// here for the next request. False when the thread is to end.
    /// </summary>
    private bool TakeRequests()
    {
        bool paused = false;
        while (paused ? _requests.TryTake(out var request, Timeout.Infinite) : _requests.TryTake(out request))
        {
            Interlocked.Decrement(ref _pending);
            switch (request)
            {
                case VcpuRequest.Stop:
                    return false;
                case VcpuRequest.Pause:
                    paused = true;
                    _responses.Add(VcpuResponse.Paused);
                    break;
                case VcpuRequest.Resume:
                    paused = false;
                    _responses.Add(VcpuResponse.Resumed);
                    break;
                case VcpuRequest.Save:
                    SaveWhileParked(); // out of KVM_RUN, and parked between requests: its state is all in KVM
                    _responses.Add(VcpuResponse.Saved);
                    break;
            }
        }
        return true;
    }

    /// <summary>Returns false when the exit ends this vCPU's run.</summary>
    private bool HandleExit()
    {
        var exit = _vcpu.Exit;
        switch (exit.Reason)
        {
            case KvmAbi.KVM_EXIT_IO:
            {
                ref readonly var io = ref exit.Io;
                var data = exit.IoData;
                int size = io.size;
                for (int i = 0; i + size <= data.Length; i += size)
                {
                    var chunk = data.Slice(i, size);
                    if (io.direction == KvmAbi.KVM_EXIT_IO_OUT)
                    {
                        _pio.Write(io.port, chunk);
                    }
                    else
                    {
                        _pio.Read(io.port, chunk);
                    }
                }
                return true;
            }
            case KvmAbi.KVM_EXIT_MMIO:
                if (exit.MmioIsWrite)
                {
                    _mmio.Write(exit.MmioAddress, exit.MmioData);
                }
                else
                {
                    _mmio.Read(exit.MmioAddress, exit.MmioData);
                }
                return true;
            case KvmAbi.KVM_EXIT_INTR:
                return true;
            case KvmAbi.KVM_EXIT_HLT:
                // Only reached without an in-kernel LAPIC; a halted CPU with nothing to wake it is the end.
                _machine.RequestStop(new VmOutcome(StopReason.PowerOff, Message: $"vCPU {Id} halted"));
                return false;
            case KvmAbi.KVM_EXIT_SHUTDOWN:
                _machine.RequestStop(new VmOutcome(StopReason.TripleFault, Message: $"vCPU {Id}: triple fault (CPU shutdown)", RegisterDump: Dump()));
                return false;
            case KvmAbi.KVM_EXIT_SYSTEM_EVENT:
            {
                var reason = exit.SystemEvent.type switch
                {
                    KvmAbi.KVM_SYSTEM_EVENT_SHUTDOWN => StopReason.PowerOff,
                    KvmAbi.KVM_SYSTEM_EVENT_RESET => StopReason.Reset,
                    _ => StopReason.GuestCrash,
                };
                _machine.RequestStop(new VmOutcome(reason, Message: $"vCPU {Id}: system event {exit.SystemEvent.type}"));
                return false;
            }
            case KvmAbi.KVM_EXIT_FAIL_ENTRY:
                _machine.RequestStop(new VmOutcome(StopReason.InternalError,
                    Message: $"vCPU {Id}: VM entry failed, hardware reason 0x{exit.FailEntry.hardware_entry_failure_reason:x}", RegisterDump: Dump()));
                return false;
            case KvmAbi.KVM_EXIT_INTERNAL_ERROR:
            {
                uint sub = exit.Internal.suberror;
                var reason = sub == KvmAbi.KVM_INTERNAL_ERROR_EMULATION ? StopReason.EmulationFailure : StopReason.InternalError;
                string what = sub switch
                {
                    KvmAbi.KVM_INTERNAL_ERROR_EMULATION => "instruction emulation failed",
                    KvmAbi.KVM_INTERNAL_ERROR_SIMUL_EX => "exception while delivering an exception",
                    KvmAbi.KVM_INTERNAL_ERROR_DELIVERY_EV => "event delivery failed",
                    _ => $"internal error, suberror {sub}",
                };
                _machine.RequestStop(new VmOutcome(reason, Message: $"vCPU {Id}: {what}", RegisterDump: Dump()));
                return false;
            }
            default:
                _machine.RequestStop(new VmOutcome(StopReason.InternalError, Message: $"vCPU {Id}: unexpected exit reason {exit.Reason}", RegisterDump: Dump()));
                return false;
        }
    }

    private string Dump() => RegisterDump.Format(_vcpu);

    private string? SafeDump()
    {
        try
        {
            return Dump();
        }
        catch (SysError)
        {
            return null;
        }
    }
}
