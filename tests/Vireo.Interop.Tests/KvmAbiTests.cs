using System.Reflection;
using System.Runtime.InteropServices;
using Vireo.Interop;
using Vireo.Tests;

namespace Vireo.Interop.Tests;

/// <summary>
/// Every struct, field offset, constant and ioctl number of the KVM binding (and of the epoll,
/// TUN and AIO bindings), checked against the kernel's own headers by compiling and running a C program.
/// </summary>
public class KvmAbiTests
{
    private static readonly (Type Type, string CName)[] Structs =
    [
        (typeof(kvm_regs), "struct kvm_regs"),
        (typeof(kvm_segment), "struct kvm_segment"),
        (typeof(kvm_dtable), "struct kvm_dtable"),
        (typeof(kvm_sregs), "struct kvm_sregs"),
        (typeof(kvm_fpu), "struct kvm_fpu"),
        (typeof(kvm_msr_entry), "struct kvm_msr_entry"),
        (typeof(kvm_msrs), "struct kvm_msrs"),
        (typeof(kvm_cpuid_entry2), "struct kvm_cpuid_entry2"),
        (typeof(kvm_cpuid2), "struct kvm_cpuid2"),
        (typeof(kvm_lapic_state), "struct kvm_lapic_state"),
        (typeof(kvm_pit_config), "struct kvm_pit_config"),
        (typeof(kvm_userspace_memory_region), "struct kvm_userspace_memory_region"),
        (typeof(kvm_irqfd), "struct kvm_irqfd"),
        (typeof(kvm_ioeventfd), "struct kvm_ioeventfd"),
        (typeof(kvm_dirty_log), "struct kvm_dirty_log"),
        (typeof(kvm_irq_level), "struct kvm_irq_level"),
        (typeof(kvm_mp_state), "struct kvm_mp_state"),
        (typeof(kvm_msi), "struct kvm_msi"),
        (typeof(kvm_irq_routing_entry), "struct kvm_irq_routing_entry"),
        (typeof(kvm_irq_routing), "struct kvm_irq_routing"),
        (typeof(kvm_xsave), "struct kvm_xsave"),
        (typeof(kvm_msr_list), "struct kvm_msr_list"),
        (typeof(kvm_xcr), "struct kvm_xcr"),
        (typeof(kvm_xcrs), "struct kvm_xcrs"),
        (typeof(kvm_debugregs), "struct kvm_debugregs"),
        (typeof(kvm_vcpu_events), "struct kvm_vcpu_events"),
        (typeof(kvm_pic_state), "struct kvm_pic_state"),
        (typeof(kvm_ioapic_state), "struct kvm_ioapic_state"),
        (typeof(kvm_irqchip), "struct kvm_irqchip"),
        (typeof(kvm_pit_channel_state), "struct kvm_pit_channel_state"),
        (typeof(kvm_pit_state2), "struct kvm_pit_state2"),
        (typeof(kvm_clock_data), "struct kvm_clock_data"),
        (typeof(epoll_event), "struct epoll_event"),
        (typeof(iocb), "struct iocb"),
        (typeof(io_event), "struct io_event"),
        (typeof(iovec), "struct iovec"),
        (typeof(OpenAt2.open_how), "struct open_how"),
        (typeof(Namespaces.rlimit), "struct rlimit"),
        (typeof(Namespaces.__user_cap_header_struct), "struct __user_cap_header_struct"),
        (typeof(Namespaces.__user_cap_data_struct), "struct __user_cap_data_struct"),
    ];

    /// <summary>The exit-union members of kvm_run, checked relative to the union.</summary>
    private static readonly (Type Type, string Member)[] RunUnion =
    [
        (typeof(kvm_run_io), "io"),
        (typeof(kvm_run_mmio), "mmio"),
        (typeof(kvm_run_internal), "internal"),
        (typeof(kvm_run_fail_entry), "fail_entry"),
        (typeof(kvm_run_system_event), "system_event"),
    ];

    /// <summary>Anonymous member structs, checked relative to their member of the named C struct.</summary>
    private static readonly (Type Type, string CName, string Member)[] Nested =
    [
        (typeof(kvm_vcpu_events_exception), "struct kvm_vcpu_events", "exception"),
        (typeof(kvm_vcpu_events_interrupt), "struct kvm_vcpu_events", "interrupt"),
        (typeof(kvm_vcpu_events_nmi), "struct kvm_vcpu_events", "nmi"),
        (typeof(kvm_vcpu_events_smi), "struct kvm_vcpu_events", "smi"),
        (typeof(kvm_vcpu_events_triple_fault), "struct kvm_vcpu_events", "triple_fault"),
    ];

    /// <summary>C names for the C# fields that split a C array (kvm_dtable's padding[3], kvm_pit_state2's channels[3]).</summary>
    private static string CField(Type type, string name) =>
        type == typeof(kvm_dtable) && name.StartsWith("padding", StringComparison.Ordinal) ? $"padding[{name[^1]}]"
        : type == typeof(kvm_pit_state2) && name.StartsWith("channel", StringComparison.Ordinal) ? $"channels[{name[^1]}]"
        : name;

    private static IEnumerable<FieldInfo> Fields(Type t) => t.GetFields(BindingFlags.Instance | BindingFlags.Public);

    /// <summary>(C expression, value the binding uses) for everything checked.</summary>
    private static List<(string Expr, ulong Expected)> Checks()
    {
        var checks = new List<(string, ulong)>();
        foreach (var (type, cname) in Structs)
        {
            checks.Add(($"sizeof({cname})", (ulong)Marshal.SizeOf(type)));
            foreach (var f in Fields(type))
            {
                checks.Add(($"offsetof({cname}, {CField(type, f.Name)})", (ulong)Marshal.OffsetOf(type, f.Name)));
            }
        }
        foreach (var (type, cname, member) in Nested)
        {
            checks.Add(($"sizeof((({cname} *)0)->{member})", (ulong)Marshal.SizeOf(type)));
            foreach (var f in Fields(type))
            {
                checks.Add(($"offsetof({cname}, {member}.{f.Name}) - offsetof({cname}, {member})", (ulong)Marshal.OffsetOf(type, f.Name)));
            }
        }
        checks.Add(("sizeof(((struct kvm_irqchip *)0)->chip)", KvmAbi.IrqchipPayloadSize));
        foreach (var f in Fields(typeof(kvm_run)))
        {
            checks.Add(($"offsetof(struct kvm_run, {f.Name})", (ulong)Marshal.OffsetOf<kvm_run>(f.Name)));
        }
        checks.Add(("offsetof(struct kvm_run, io)", KvmAbi.RunExitUnionOffset));
        foreach (var (type, member) in RunUnion)
        {
            foreach (var f in Fields(type))
            {
                checks.Add(($"offsetof(struct kvm_run, {member}.{f.Name}) - offsetof(struct kvm_run, {member})", (ulong)Marshal.OffsetOf(type, f.Name)));
            }
        }
        checks.Add(("sizeof(struct stat)", (ulong)Libc.StatSize));
        checks.Add(("offsetof(struct stat, st_mode)", (ulong)Libc.StatModeOffset));
        checks.Add(("offsetof(struct stat, st_size)", (ulong)Libc.StatSizeOffset));
        checks.Add(("offsetof(struct stat, st_blocks)", (ulong)Libc.StatBlocksOffset));
        checks.Add(("offsetof(struct stat, st_nlink)", (ulong)Libc.StatNlinkOffset));
        checks.Add(("offsetof(struct stat, st_uid)", (ulong)Libc.StatUidOffset));
        checks.Add(("offsetof(struct stat, st_dev)", (ulong)Libc.StatDevOffset));
        checks.Add(("offsetof(struct stat, st_ino)", (ulong)Libc.StatInoOffset));
        foreach (var f in typeof(Libc).GetFields(BindingFlags.Static | BindingFlags.Public)
                     .Where(f => f.Name.StartsWith("S_IF", StringComparison.Ordinal) || f.Name.StartsWith("O_", StringComparison.Ordinal) || f.Name.StartsWith("F_", StringComparison.Ordinal)))
        {
            checks.Add(($"(unsigned long)({f.Name})", f.GetValue(null) switch { int i => (ulong)i, uint u => u, var o => throw new InvalidOperationException($"{f.Name}: {o}") }));
        }
        foreach (var f in typeof(KvmAbi).GetFields(BindingFlags.Static | BindingFlags.Public).Where(f => f.Name.StartsWith("KVM", StringComparison.Ordinal))
                     .Concat(typeof(Epoll).GetFields(BindingFlags.Static | BindingFlags.Public))
                     .Concat(typeof(Tun).GetFields(BindingFlags.Static | BindingFlags.Public))
                     .Concat(typeof(Aio).GetFields(BindingFlags.Static | BindingFlags.Public))
                     .Concat(typeof(OpenAt2).GetFields(BindingFlags.Static | BindingFlags.Public))
                     .Concat(typeof(Namespaces).GetFields(BindingFlags.Static | BindingFlags.Public))
                     .Concat(typeof(Spawn).GetFields(BindingFlags.Static | BindingFlags.Public).Where(f => f.Name.StartsWith("POSIX_", StringComparison.Ordinal) || f.Name == "WNOHANG")))
        {
            ulong value = f.GetValue(null) switch
            {
                nuint n => n,
                int i => (ulong)i,
                uint u => u,
                ulong l => l,
                long l => (ulong)l,
                byte b => b,
                short sh => (ulong)sh,
                ushort us => us,
                var other => throw new InvalidOperationException($"{f.Name} has an unexpected type {other?.GetType()}"),
            };
            checks.Add(($"(unsigned long)({f.Name})", value));
        }
        // glibc's opaque spawn types must fit the room Spawn gives them (the check is 1 when they do).
        checks.Add(($"sizeof(posix_spawn_file_actions_t) <= {Spawn.FileActionsSize}", 1));
        checks.Add(($"sizeof(posix_spawnattr_t) <= {Spawn.AttrSize}", 1));
        checks.Add(($"sizeof(sigset_t) <= {Spawn.SigsetSize}", 1));
        return checks;
    }

    [Fact]
    public void Binding_matches_linux_kvm_h()
    {
        var checks = Checks();
        Assert.True(checks.Count > 150, $"only {checks.Count} checks were generated");
        string dir = Vireo.Tests.TempDirectory.Create("vireo-abi");
        string source = Path.Combine(dir, "abi.c");
        var lines = new List<string> { "#define _GNU_SOURCE", "#include <stdio.h>", "#include <errno.h>", "#include <fcntl.h>", "#include <sys/syscall.h>", "#include <linux/openat2.h>", "#include <stddef.h>", "#include <sys/epoll.h>", "#include <sys/stat.h>", "#include <linux/kvm.h>", "#include <linux/if_tun.h>", "#include <linux/aio_abi.h>", "#include <sys/uio.h>", "#include <sched.h>", "#include <sys/mount.h>", "#include <sys/prctl.h>", "#include <sys/resource.h>", "#include <linux/capability.h>", "#include <spawn.h>", "#include <signal.h>", "#include <sys/wait.h>", "int main(void) {" };
        lines.AddRange(checks.Select((c, i) => $"    printf(\"{i} %lu\\n\", (unsigned long)({c.Expr}));"));
        lines.Add("    return 0;\n}");
        File.WriteAllLines(source, lines);
        var build = TestEnvironment.Run("gcc", $"-o {dir}/abi {source}");
        Assert.True(build.ExitCode == 0, build.Error);
        var run = TestEnvironment.Run($"{dir}/abi", "");
        Assert.Equal(0, run.ExitCode);
        var actual = run.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Split(' '))
            .ToDictionary(p => int.Parse(p[0]), p => ulong.Parse(p[1]));
        var mismatches = checks.Select((c, i) => (c.Expr, c.Expected, Actual: actual[i]))
            .Where(x => x.Expected != x.Actual)
            .Select(x => $"{x.Expr}: binding has {x.Expected}, <linux/kvm.h> has {x.Actual}")
            .ToList();
        Assert.True(mismatches.Count == 0, string.Join("\n", mismatches));
    }

    [Fact]
    public void Ioctl_encoding_matches_the_generic_macros()
    {
        // _IOWR(0xAE, 0x05, 8) = KVM_GET_SUPPORTED_CPUID, known from the header: 0xc008ae05.
        Assert.Equal((nuint)0xc008ae05, KvmAbi.KVM_GET_SUPPORTED_CPUID);
        Assert.Equal((nuint)0xae80, KvmAbi.KVM_RUN);
    }
}
