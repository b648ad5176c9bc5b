using Vireo.Boot;
using Vireo.Interop;
using Vireo.Kvm;
using Vireo.Memory;

namespace Vireo.Vmm;

/// <summary>
/// Builds a <see cref="Machine"/>. Two doors into one house (ARCHITECTURE.md #14): <see cref="Boot"/>
/// from a config and its files, and restore from a saved machine state; both lay the machine out
/// from the same <see cref="DeviceMap"/> and build the same devices, so a restore is never a boot
/// with patches.
/// </summary>
public static class MachineBuilder
{
    /// <summary>
    /// Builds a VM ready to boot: validates the config, loads the kernel (nothing is created if the
    /// image is bad), then creates the VM, its memory, devices and vCPUs. Every file (and /dev/kvm)
    /// comes from <paramref name="files"/>, which stay the caller's: no path is opened again.
    /// </summary>
    public static Machine Boot(VmConfig config, VmFiles files, Action<byte> serialOut)
    {
        config.ValidateSettings(); // not the paths: they were opened into files, and may be gone by now
        // The images' bytes for this boot only: unmapped when the machine is built (a reboot reads them again).
        using var kernel = files.ReadKernel();
        using var initrd = files.ReadInitrd();
        var image = KernelImage.Parse(kernel.GetSpan()); // a malformed image fails before any KVM object exists
        var devices = DeviceManager.Open(config, files, serialOut);
        var source = new BootSource(
            kernel.Memory,
            initrd?.Memory,
            config.Cmdline + devices.Map.CmdlineSuffix,
            config.Vcpus,
            config.Acpi ? devices.Map.AcpiPlatform(config.Vcpus) : null);
        return Build(config, files, devices, serialOut, () => config.ResolvedMemoryBacking == MemoryBacking.Memfd ? GuestMemory.Create(config.MemoryBytes) : GuestMemory.CreateAnonymous(config.MemoryBytes), (machine, kvm) =>
        {
            var boot = BootLoader.Load(machine.Memory, image, source);
            CreateVcpus(machine, kvm, boot);
        });
    }

    /// <summary>
    /// Builds a saved machine again: the same map from the same config, the same devices, then each
    /// vCPU, device and KVM's VM-wide state from <paramref name="state"/> (untrusted: every part is
    /// validated before it is applied, and a part that does not fit ends the restore with a
    /// <see cref="Snapshot.SnapshotException"/> naming it). <paramref name="memory"/> holds the
    /// guest's RAM and becomes the machine's (disposed here if the restore fails). Nothing boots:
    /// the guest goes on where it was.
    /// </summary>
    public static Machine Restore(Snapshot.MachineState state, VmFiles files, GuestMemory memory, Action<byte> serialOut, bool resume)
    {
        if (state.Config is null)
        {
            memory.Dispose();
            throw new Snapshot.SnapshotException("the config is missing");
        }
        return Prepare(state.Config, files, memory, serialOut).Apply(state, resume);
    }

    /// <summary>
    /// The first half of a restore, from the config alone: the VM, its RAM registered, the
    /// irqchip and PIT, every device where the map puts it and the vCPUs, nothing of the saved
    /// state applied yet. A migration's destination prepares while the RAM arrives, so that
    /// only <see cref="PreparedRestore.Apply"/> is left for the guest's pause. <paramref name="memory"/>
    /// becomes the machine's (disposed here if this fails).
    /// </summary>
    public static PreparedRestore Prepare(VmConfig config, VmFiles files, GuestMemory memory, Action<byte> serialOut)
    {
        DeviceManager devices;
        try
        {
            try
            {
                config.ValidateSettings();
            }
            catch (VmConfigException e)
            {
                throw new Snapshot.SnapshotException($"config: {e.Message}");
            }
            if (memory.Size != config.MemoryBytes)
            {
                throw new Snapshot.SnapshotException($"memory: the snapshot's VM has {config.MemoryBytes >> 20} MiB, its memory file {memory.Size >> 20} MiB");
            }
            devices = DeviceManager.Open(config, files, serialOut);
        }
        catch
        {
            memory.Dispose();
            throw;
        }
        var machine = Build(config, files, devices, serialOut, () => memory, (machine, kvm) =>
        {
            var cpuid = Cpuid(kvm);
            for (int id = 0; id < config.Vcpus; id++)
            {
                var vcpu = machine.Vm.CreateVcpu(id);
                machine.AddVcpu(vcpu);
                // The CPUID this host gives such a vCPU: a state saved on a like host carries the very
                // same, and the restore then need not set it in the guest's pause (0.2 ms here). A
                // state with another sets its own; a vCPU that has never run takes a second one.
                vcpu.SetCpuid(cpuid(id, config.Vcpus));
            }
        });
        return new PreparedRestore(machine, files);
    }

    /// <summary>A machine built for a saved state that has not been applied yet; disposing it before <see cref="Apply"/> throws it away.</summary>
    public sealed class PreparedRestore(Machine machine, VmFiles files) : IDisposable
    {
        private bool _applied;

        /// <summary>
        /// Checks <paramref name="state"/> (untrusted) against this machine and applies it: the
        /// vCPUs, the devices, then the VM's clock and irqchips. Throws
        /// <see cref="Snapshot.SnapshotException"/> naming what does not fit; the machine is disposed then.
        /// </summary>
        public Machine Apply(Snapshot.MachineState state, bool resume)
        {
            ObjectDisposedException.ThrowIf(_applied, this);
            _applied = true;
            try
            {
                if (state.Config is null || (!machine.Config.Equals(state.Config) && !SameConfig(machine.Config, state.Config)))
                {
                    throw new Snapshot.SnapshotException(state.Config is null ? "the config is missing" : "config: the state is not of the machine that was prepared for it");
                }
                CheckRestorable(state, files);
                for (int i = 0; i < state.Vcpus.Length; i++)
                {
                    try
                    {
                        machine.Vcpus[i].RestoreState(state.Vcpus[i]);
                    }
                    catch (Exception e) when (e is SysError or InvalidOperationException or ArgumentException)
                    {
                        throw new Snapshot.SnapshotException($"vcpu {i}: KVM refused the saved state: {e.Message}");
                    }
                }
                machine.Devices.Restore(state.Devices);
                try
                {
                    machine.Vm.RestoreState(state.Vm); // after the vCPUs: the clock and the irqchips' routes to them
                }
                catch (Exception e) when (e is SysError or InvalidOperationException or ArgumentException)
                {
                    throw new Snapshot.SnapshotException($"vm: KVM refused the saved state: {e.Message}");
                }
            }
            catch
            {
                machine.Dispose();
                throw;
            }
            machine.Restored = true;
            machine.StartPaused = !resume;
            return machine;
        }

        /// <summary>
        /// Encodes this machine's own state, read and never applied, and decodes it again, so that the
        /// code the real state goes through runs warm in the guest's pause: the first decoding in a
        /// process cost a quarter to half a millisecond of it (code run for the first time, the
        /// serializer's caches filled), against a few hundredths after. The vCPUs must be parked or
        /// not started. Best effort: a machine whose state cannot be read is only colder.
        /// </summary>
        public void WarmUpDecoding()
        {
            try
            {
                var own = new Snapshot.MachineState(machine.Config, machine.Vm.SaveState(), [.. machine.Vcpus.Select(v => v.SaveState())], machine.Devices.SaveState());
                var (decoded, _) = Snapshot.SnapshotFile.Decode(Snapshot.SnapshotFile.Encode(own, Snapshot.SnapshotFile.LayoutOf(machine.Memory, Snapshot.SnapshotKind.Full)));
                _ = SameConfig(machine.Config, decoded.Config);
            }
            catch (Exception e) when (e is SysError or InvalidOperationException or Snapshot.SnapshotException)
            {
                // the real state is decoded all the same, only colder
            }
        }

        /// <summary>Makes the vCPU threads now, parked (<see cref="Machine.StartVcpusParked"/>), while the state is still to come.</summary>
        public void StartVcpusParked() => machine.StartVcpusParked();

        /// <summary>Raises this thread and the parked vCPUs (<see cref="Migration.Urgency"/>) until the machine runs.</summary>
        internal void Hurry(int thisThread) => machine.Hurry(thisThread);

        private static bool SameConfig(VmConfig a, VmConfig b) =>
            System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(a, Snapshot.SnapshotJson.Default.VmConfig).AsSpan()
                .SequenceEqual(System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(b, Snapshot.SnapshotJson.Default.VmConfig));

        public void Dispose()
        {
            if (!_applied)
            {
                _applied = true;
                machine.Dispose();
            }
        }
    }

    /// <summary>The state's parts against its config (which <see cref="Prepare"/> checked, with the memory's size).</summary>
    private static void CheckRestorable(Snapshot.MachineState state, VmFiles files)
    {
        var config = state.Config;
        if (state.Vcpus is null || state.Vcpus.Length != config.Vcpus)
        {
            throw new Snapshot.SnapshotException($"vcpus: {state.Vcpus?.Length ?? 0} saved for a VM of {config.Vcpus}");
        }
        if (state.Vm is null || state.Devices is null)
        {
            throw new Snapshot.SnapshotException("the VM's or the devices' state is missing");
        }
        if (state.Vm.Problem() is { } vmProblem)
        {
            throw new Snapshot.SnapshotException(vmProblem); // it names the VM already ("vm: ...")
        }
        var supported = files.Kvm.GetSupportedCpuid();
        for (int i = 0; i < state.Vcpus.Length; i++)
        {
            var v = state.Vcpus[i] ?? throw new Snapshot.SnapshotException($"vcpu {i}: missing");
            if (v.Problem() is { } problem)
            {
                throw new Snapshot.SnapshotException(problem);
            }
            if (v.Id != i)
            {
                throw new Snapshot.SnapshotException($"vcpu {i}: saved as vCPU {v.Id}");
            }
            if (CpuFeatures.Missing(v.Cpuid, supported) is { } missing)
            {
                throw new Snapshot.SnapshotException($"the snapshot was taken on a CPU with {missing}, which this host does not offer");
            }
        }
    }

    /// <summary>
    /// The part both doors share: the VM, its memory (registered before the irqchip exists), the
    /// in-kernel irqchip and PIT, every device where the map puts it; then <paramref name="furnish"/>
    /// (load and set up the vCPUs, or restore them).
    /// </summary>
    private static Machine Build(VmConfig config, VmFiles files, DeviceManager devices, Action<byte> serialOut,
        Func<GuestMemory> createMemory, Action<Machine, Kvm.Kvm> furnish)
    {
        KvmVm? vm = null;
        GuestMemory? memory = null;
        Machine? machine = null;
        try
        {
            var kvm = files.Kvm;
            if (config.Vcpus > kvm.MaxVcpus)
            {
                throw new VmConfigException($"vcpus: {config.Vcpus} exceeds this host's KVM limit of {kvm.MaxVcpus}");
            }
            vm = kvm.CreateVm();
            vm.SetIdentityMapAddress(MemoryLayout.KvmIdentityMapAddr);
            vm.SetTssAddress(MemoryLayout.KvmTssAddr);
            memory = createMemory();
            // Guest RAM is registered before the in-kernel irqchip exists, as Firecracker does: once
            // it does, KVM makes a memory-slot change wait for its readers, 4 to 11 ms on this host
            // against 0.1 ms before (the largest single cost between exec and the guest's first instruction).
            vm.RegisterMemory(memory, logDirty: config.TrackDirtyPages);
            vm.CreateIrqchip();
            vm.CreatePit2();
            machine = new Machine(config, vm, memory, devices);
            devices.Attach(vm, memory, machine.Pio, machine.Mmio, serialOut, machine.RequestStop,
                e => machine.RequestStop(new VmOutcome(StopReason.HostError, Message: $"device thread: {e.Message}")));
            furnish(machine, kvm);
            return machine;
        }
        catch
        {
            if (machine is not null)
            {
                machine.Dispose();
            }
            else
            {
                devices.Dispose();
                memory?.Dispose();
                vm?.Dispose();
            }
            throw;
        }
    }

    /// <summary>The CPUID a booted vCPU gets on this host, by its id and the VM's vCPU count.</summary>
    private static Func<int, int, kvm_cpuid_entry2[]> Cpuid(Kvm.Kvm kvm)
    {
        var supported = kvm.GetSupportedCpuid();
        bool tscDeadline = kvm.CheckExtension(KvmAbi.KVM_CAP_TSC_DEADLINE_TIMER) > 0;
        return (id, count) => CpuidTemplate.For(supported, id, count, tscDeadline);
    }

    private static void CreateVcpus(Machine machine, Kvm.Kvm kvm, BootCpuState boot)
    {
        var config = machine.Config;
        var cpuid = Cpuid(kvm);
        for (int id = 0; id < config.Vcpus; id++)
        {
            var vcpu = machine.Vm.CreateVcpu(id);
            machine.AddVcpu(vcpu);
            vcpu.SetCpuid(cpuid(id, config.Vcpus));
            vcpu.SetMsrs([new kvm_msr_entry { index = 0x1a0, data = 1 }]); // IA32_MISC_ENABLE: fast strings
            var fpu = vcpu.GetFpu();
            fpu.fcw = 0x37f;
            fpu.mxcsr = 0x1f80;
            vcpu.SetFpu(fpu);
            Lapic.ConfigureLint(vcpu);
            if (id == 0)
            {
                var sregs = vcpu.GetSregs();
                boot.ApplyTo(ref sregs);
                vcpu.SetSregs(sregs);
                vcpu.SetRegs(boot.Regs);
            }
            // Application processors wait in KVM for the guest's INIT/SIPI.
        }
    }
}
