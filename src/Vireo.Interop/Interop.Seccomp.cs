using System.Runtime.InteropServices;

namespace Vireo.Interop;

/// <summary>
/// libseccomp (&lt;seccomp.h&gt;, libseccomp.so.2, on every host that runs systemd): it compiles a
/// list of rules into the classic BPF program that seccomp(2) runs at every system call, with the
/// checks on the architecture and the x32 ABI that a hand-written program gets wrong, and loads it
/// on the calling thread or on all of them. Calls return 0 or a negative errno.
/// </summary>
public static unsafe partial class Seccomp
{
    private const string Lib = "libseccomp.so.2";

    public const uint SCMP_ACT_KILL_PROCESS = 0x80000000, SCMP_ACT_TRAP = 0x00030000, SCMP_ACT_ALLOW = 0x7fff0000,
        SCMP_ACT_ERRNO = 0x00050000; // SCMP_ACT_ERRNO | errno

    /// <summary>enum scmp_filter_attr.</summary>
    public const int SCMP_FLTATR_ACT_BADARCH = 2, SCMP_FLTATR_CTL_NNP = 3,
        SCMP_FLTATR_CTL_TSYNC = 4, SCMP_FLTATR_CTL_OPTIMIZE = 8;

    /// <summary>enum scmp_compare.</summary>
    public const int SCMP_CMP_EQ = 4, SCMP_CMP_MASKED_EQ = 7;

#pragma warning disable CS8981 // C's name
    /// <summary>struct scmp_arg_cmp: argument <c>arg</c> compared by <c>op</c> with datum_a (and datum_b).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct scmp_arg_cmp
    {
        public uint arg;
        public int op;
        public ulong datum_a;
        public ulong datum_b;
    }
#pragma warning restore CS8981

    [LibraryImport(Lib, EntryPoint = "seccomp_init")]
    public static partial nint Init(uint defaultAction);

    [LibraryImport(Lib, EntryPoint = "seccomp_release")]
    public static partial void Release(nint ctx);

    [LibraryImport(Lib, EntryPoint = "seccomp_attr_set")]
    public static partial int AttrSet(nint ctx, int attr, uint value);

    [LibraryImport(Lib, EntryPoint = "seccomp_rule_add_array")]
    public static partial int RuleAddArray(nint ctx, uint action, int syscall, uint argCount, scmp_arg_cmp* args);

    [LibraryImport(Lib, EntryPoint = "seccomp_load")]
    public static partial int Load(nint ctx);

    /// <summary>A system call's number on this architecture, or a negative number if there is none by that name.</summary>
    [LibraryImport(Lib, EntryPoint = "seccomp_syscall_resolve_name", StringMarshalling = StringMarshalling.Utf8)]
    public static partial int ResolveName(string name);
}
