using System.CommandLine;
using System.Runtime.InteropServices;
using Vireo.Boot;
using Vireo.Interop;
using Vireo.Kvm;
using Vireo.Vmm;

namespace Vireo.Cli;

/// <summary>`vireo run`: one VM in the foreground with its serial console on this terminal (like `lkvm run`).</summary>
internal static class RunCommand
{
    /// <summary>Exit statuses of `vireo run` besides the guest's own.</summary>
    public const int ExitBadConfig = 2, ExitNoKvm = 3, ExitBadImage = 4;

    public static Command Create()
    {
        var kernel = new Option<string?>("--kernel") { Description = "Kernel to boot: bzImage, vmlinux or PVH ELF (default: the Debian guest where the CPU has VMX/SVM, else the test kit's hello guest)" };
        var initrd = new Option<string?>("--initrd") { Description = "Initial ramdisk" };
        var cmdline = new Option<string>("--cmdline") { Description = "Kernel command line", DefaultValueFactory = _ => "console=ttyS0 reboot=k panic=1" };
        var memory = new Option<string>("--memory", "-m") { Description = "Guest RAM, e.g. 256M or 2G", DefaultValueFactory = _ => "256M" };
        // Numbers are parsed here rather than as Option<int>: each value-type option costs JIT time at start-up.
        var vcpus = new Option<string>("--vcpus", "-c") { Description = "Number of vCPUs", DefaultValueFactory = _ => "1" };
        var debugExit = new Option<bool>("--debug-exit") { Description = "Add the test port 0xf4: a guest write of N ends the run with status N" };
        var timeout = new Option<string?>("--timeout") { Description = "Stop the VM after this many seconds (exit status 124)" };
        var disks = new Option<string[]>("--disk") { Description = "A virtio-blk disk: PATH[,ro][,direct][,queues=N][,id=NAME] (repeatable)", AllowMultipleArgumentsPerToken = false };
        var nets = new Option<string[]>("--net") { Description = "A virtio-net interface: tap=NAME[,mac=..] or unix=PATH,peer=PATH[,mac=..] (repeatable)" };
        var vsock = new Option<string?>("--vsock") { Description = "A virtio-vsock device: cid=N,socket=PATH (the host connects to PATH and writes CONNECT port)" };
        var rng = new Option<bool>("--rng") { Description = "Add a virtio-rng fed by the host's getrandom" };
        var console = new Option<string>("--console") { Description = "Console device: serial (COM1) or virtio (hvc0, and COM1 too)", DefaultValueFactory = _ => "serial" };
        console.AcceptOnlyFromAmong("serial", "virtio");
        var transport = new Option<string>("--transport") { Description = "virtio transport: pci (stock Linux binds to it) or mmio", DefaultValueFactory = _ => "pci" };
        transport.AcceptOnlyFromAmong("pci", "mmio");
        var noAcpi = new Option<bool>("--no-acpi") { Description = "No ACPI tables: the guest finds its CPUs in the MP table and can neither power off nor reboot through ACPI" };
        var onReboot = new Option<string>("--on-reboot") { Description = "When the guest reboots: restart it (as xl and libvirt do) or destroy the VM and exit", DefaultValueFactory = _ => "restart" };
        onReboot.AcceptOnlyFromAmong("restart", "destroy");
        var sandbox = new Option<bool>("--sandbox") { Description = "Run the VM in the jail vireod gives its VMMs: namespaces of its own, a root holding only what it needs, a uid of its own, no capabilities (root only)" };
        var command = new Command("run", "Boot a VM in the foreground; Ctrl-] then q quits")
        {
            kernel, initrd, cmdline, memory, vcpus, debugExit, timeout, disks, nets, vsock, rng, console, transport, noAcpi, onReboot, sandbox,
        };
        command.SetAction(parse =>
        {
            try
            {
                // No --kernel: the default guest, which also brings its own initrd, disk, command
                // line and memory size unless the user gave those.
                DefaultBoot? fallback = parse.GetValue(kernel) is null ? DefaultGuest.Resolve() : null;
                bool Given(Option option) => parse.GetResult(option) is { Implicit: false };
                string[] diskSpecs = parse.GetValue(disks) ?? [];
                if (diskSpecs.Length == 0 && fallback?.Disk is { } defaultDisk)
                {
                    diskSpecs = [defaultDisk];
                }
                var config = new VmConfig
                {
                    KernelPath = parse.GetValue(kernel) ?? fallback!.Kernel,
                    InitrdPath = parse.GetValue(initrd) ?? fallback?.Initrd,
                    Cmdline = fallback is not null && !Given(cmdline) ? fallback.Cmdline : parse.GetValue(cmdline)!,
                    MemoryBytes = fallback is not null && !Given(memory) ? fallback.MemoryBytes : VmConfig.ParseSize(parse.GetValue(memory)!),
                    Vcpus = ParseInt(parse.GetValue(vcpus)!, "vcpus"),
                    DebugExit = parse.GetValue(debugExit),
                    Disks = ParseDisks(diskSpecs),
                    Nets = ParseNets(parse.GetValue(nets) ?? []),
                    Vsock = parse.GetValue(vsock) is { } v ? ParseVsock(v) : null,
                    Rng = parse.GetValue(rng),
                    VirtioConsole = parse.GetValue(console) == "virtio",
                    Transport = parse.GetValue(transport) == "mmio" ? VirtioTransportKind.Mmio : VirtioTransportKind.Pci,
                    Acpi = !parse.GetValue(noAcpi),
                };
                string? seconds = parse.GetValue(timeout);
                if (parse.GetValue(sandbox))
                {
                    // Checked here first, as an unsandboxed run checks them, so that a refusal names the user's
                    // paths (the jail knows its files by their fd numbers) and comes before anything is said.
                    _ = seconds is null ? 0 : ParseSeconds(seconds);
                    using (VmFiles.Open(config))
                    {
                    }
                    if (fallback?.Note is { } said)
                    {
                        Console.Error.WriteLine($"vireo: {said}");
                    }
                    // What names no file goes to the jailed run as it was given; the files go open (SandboxedRun).
                    var passOn = new List<string> { "--vcpus", config.Vcpus.ToString(System.Globalization.CultureInfo.InvariantCulture),
                        "--console", parse.GetValue(console)!, "--transport", parse.GetValue(transport)!, "--on-reboot", parse.GetValue(onReboot)! };
                    passOn.AddRange(config.DebugExit ? ["--debug-exit"] : []);
                    passOn.AddRange(config.Rng ? ["--rng"] : []);
                    passOn.AddRange(config.Acpi ? [] : ["--no-acpi"]);
                    passOn.AddRange(seconds is null ? [] : ["--timeout", seconds]);
                    return SandboxedRun.Run(config, passOn);
                }
                return Run(config, seconds is null ? null : TimeSpan.FromSeconds(ParseSeconds(seconds)), restartOnReboot: parse.GetValue(onReboot) == "restart", note: fallback?.Note);
            }
            catch (VmConfigException e)
            {
                return Fail(ExitBadConfig, e.Message);
            }
            catch (CmdlineTooLongException e)
            {
                return Fail(ExitBadConfig, $"--cmdline: {e.Message}"); // the configuration is wrong, not the image
            }
            catch (BootException e)
            {
                return Fail(ExitBadImage, e.Message);
            }
            catch (KvmUnavailableException e)
            {
                return Fail(ExitNoKvm, e.Message);
            }
            catch (SysError e)
            {
                return Fail(1, e.Message);
            }
        });
        return command;
    }

    /// <summary>
    /// Runs the VM; a guest reboot builds it afresh from the same config (what xl does for
    /// on_reboot=restart), with the same console and the time limit counting across boots.
    /// </summary>
    /// <param name="note">Said once the VM is built, before it runs (why this default guest).</param>
    private static int Run(VmConfig config, TimeSpan? timeout, bool restartOnReboot, string? note)
    {
        // fd 1 is written directly: .NET's Console would first send terminal set-up sequences.
        using var stdout = new FileStream(new Microsoft.Win32.SafeHandles.SafeFileHandle(1, ownsHandle: false), FileAccess.Write, bufferSize: 0);
        using var console = new SerialConsole(stdout);
        Machine? current = null;
        bool hostStop = false;
        using var stopped = new ManualResetEventSlim();
        void Stop(string why)
        {
            Volatile.Write(ref hostStop, true); // from a signal or the stdin thread
            stopped.Set(); // a build in progress is abandoned
            Volatile.Read(ref current)?.RequestStop(new VmOutcome(StopReason.HostRequest, Message: why));
        }
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, ctx => { ctx.Cancel = true; Stop("SIGINT"); });
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, ctx => { ctx.Cancel = true; Stop("SIGTERM"); });
        var deadline = timeout is { } t ? DateTime.UtcNow + t : (DateTime?)null;
        VmOutcome outcome;
        // The files are opened once, here; every boot (a guest reboot restarts the VM) is built from them.
        using var files = BuildOrStop(() => VmFiles.Open(config), stopped);
        if (files is null)
        {
            return StoppedWhileBuilding();
        }
        using (Terminal.Attach(() => Volatile.Read(ref current), () => Stop("Ctrl-] q")))
        {
            for (int boot = 1; ; boot++)
            {
                using var machine = BuildOrStop(() => MachineBuilder.Boot(config, files, console.Transmit), stopped);
                if (machine is null)
                {
                    return StoppedWhileBuilding();
                }
                if (boot == 1 && note is not null)
                {
                    Console.Error.WriteLine($"vireo: {note}");
                }
                Volatile.Write(ref current, machine);
                if (Volatile.Read(ref hostStop))
                {
                    machine.RequestStop(new VmOutcome(StopReason.HostRequest, Message: "stopped between boots"));
                }
                outcome = machine.Run(deadline is { } d ? Max(d - DateTime.UtcNow, TimeSpan.FromMilliseconds(1)) : null);
                if (outcome.Reason == StopReason.Timeout)
                {
                    // The machine saw only what was left of the limit; say the limit the user gave.
                    outcome = outcome with { Message = $"no exit within {timeout!.Value.TotalSeconds:0.#} s" };
                }
                Volatile.Write(ref current, null);
                console.Flush();
                if (outcome.Reason != StopReason.Reset || !restartOnReboot || Volatile.Read(ref hostStop))
                {
                    break;
                }
                if (Environment.GetEnvironmentVariable("VIREO_VERBOSE") == "1")
                {
                    Console.Error.WriteLine($"vireo: {outcome} ({outcome.Message}); starting boot {boot + 1}");
                }
            }
        }
        if (!outcome.IsClean)
        {
            Console.Error.WriteLine($"vireo: {outcome}");
            if (outcome.RegisterDump is { } dump)
            {
                Console.Error.WriteLine(dump);
            }
        }
        else if (Environment.GetEnvironmentVariable("VIREO_VERBOSE") == "1")
        {
            Console.Error.WriteLine($"vireo: {outcome}");
        }
        return outcome.ExitCode;
    }

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;

    /// <summary>
    /// Runs a build step (opening files, building the machine) on its own thread, so that SIGINT
    /// or SIGTERM ends `vireo run` at once even while a step is slow or stuck in the kernel: null
    /// when <paramref name="stopped"/> came first. An abandoned result is disposed when it arrives.
    /// </summary>
    private static T? BuildOrStop<T>(Func<T> build, ManualResetEventSlim stopped) where T : class, IDisposable
    {
        var gate = new Lock();
        bool abandoned = false;
        T? result = null;
        System.Runtime.ExceptionServices.ExceptionDispatchInfo? error = null;
        using var done = new ManualResetEventSlim();
        var thread = new Thread(() =>
        {
            T? built = null;
            System.Runtime.ExceptionServices.ExceptionDispatchInfo? failed = null;
            try
            {
                built = build();
            }
            catch (Exception e)
            {
                failed = System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e);
            }
            lock (gate)
            {
                if (abandoned)
                {
                    built?.Dispose();
                    return;
                }
                (result, error) = (built, failed);
                done.Set();
            }
        }) { Name = "build", IsBackground = true }; // a build stuck in a system call cannot keep the process alive
        thread.Start();
        WaitHandle.WaitAny([done.WaitHandle, stopped.WaitHandle]);
        lock (gate)
        {
            if (!done.IsSet)
            {
                abandoned = true;
                return null;
            }
        }
        error?.Throw();
        return result;
    }

    /// <summary>A signal or Ctrl-] q before the VM ran: the same quiet, clean stop as one while it runs.</summary>
    private static int StoppedWhileBuilding()
    {
        var outcome = new VmOutcome(StopReason.HostRequest, Message: "stopped while building the VM");
        if (Environment.GetEnvironmentVariable("VIREO_VERBOSE") == "1")
        {
            Console.Error.WriteLine($"vireo: {outcome}");
        }
        return outcome.ExitCode;
    }

    private static Virtio.Block.BlockConfig[] ParseDisks(string[] specs)
    {
        try
        {
            return Array.ConvertAll(specs, Virtio.Block.BlockConfig.Parse);
        }
        catch (FormatException e)
        {
            throw new VmConfigException(e.Message);
        }
    }

    private static Virtio.Net.NetConfig[] ParseNets(string[] specs)
    {
        try
        {
            return specs.Select((s, i) => Virtio.Net.NetConfig.Parse(s, i)).ToArray();
        }
        catch (FormatException e)
        {
            throw new VmConfigException(e.Message);
        }
    }

    private static Virtio.Vsock.VsockConfig ParseVsock(string spec)
    {
        try
        {
            return Virtio.Vsock.VsockConfig.Parse(spec);
        }
        catch (FormatException e)
        {
            throw new VmConfigException(e.Message);
        }
    }

    private static int ParseInt(string text, string field) =>
        int.TryParse(text, out int n) ? n : throw new VmConfigException($"{field}: '{text}' is not a whole number");

    private static double ParseSeconds(string text) =>
        double.TryParse(text, System.Globalization.CultureInfo.InvariantCulture, out double s) && s > 0 && s < 1e7
            ? s
            : throw new VmConfigException($"timeout: '{text}' is not a number of seconds");

    private static int Fail(int code, string message)
    {
        Console.Error.WriteLine($"vireo: {message}");
        return code;
    }
}
