using Vireo.Devices;
using Vireo.Interop;
using Vireo.Kvm;

namespace Vireo.Vmm;

/// <summary>
/// One vCPU on its own thread: KVM_RUN, dispatch the exit to the buses, repeat until the
/// machine stops. Faults end the run with a register dump instead of hanging or crashing.
/// </summary>
internal sealed class VcpuRunner
{
    private readonly KvmVcpu _vcpu;
    private readonly Bus _pio;
    private readonly Bus _mmio;
    private readonly Machine _machine;
    private readonly Thread _thread;
    private nuint _pthread;
    private readonly ManualResetEventSlim _started = new();
    private long _exits;
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
        _thread.Start();
        _started.Wait();
    }

    public void Join() => _thread.Join();

    /// <summary>Brings the vCPU out of KVM_RUN: immediate_exit for the next entry, a signal for the current one.</summary>
    public void Kick()
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
        _started.Set();
        long allocatedAtStart = GC.GetAllocatedBytesForCurrentThread();
        try
        {
            while (!_machine.IsStopping)
            {
                if (_machine.IsPaused)
                {
                    // Out of KVM_RUN (a kick brought it here), so the vCPU's state is all in KVM.
                    _machine.WaitWhilePaused();
                    continue;
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
        }
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
