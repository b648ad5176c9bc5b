using Vireo.Sandbox;
using Vireo.Sandbox.Seccomp;

namespace Vireo.Sandbox.Tests;

/// <summary>The seccomp lists' files: what they allow, and how a bad line is refused.</summary>
public class SeccompPolicyTests
{
    private static SeccompPolicy Parse(string text, string? runtime = null) =>
        SeccompPolicy.Parse("test", text, name => name == "runtime" && runtime is not null ? runtime : SeccompPolicy.Text(name));

    [Fact]
    public void The_shipped_lists_read_and_the_guest_facing_threads_cannot_open_or_exec_anything()
    {
        var lists = SeccompPolicy.Kinds.ToDictionary(k => k, SeccompPolicy.Load);
        foreach (var (kind, policy) in lists)
        {
            Assert.Contains("futex", policy.Syscalls); // runtime.policy is in every list
            Assert.DoesNotContain("execve", policy.Syscalls);
            Assert.DoesNotContain("execveat", policy.Syscalls);
            Assert.DoesNotContain("ptrace", policy.Syscalls);
            Assert.DoesNotContain("mount", policy.Syscalls);
            Assert.DoesNotContain("getppid", policy.Syscalls); // --seccomp-check's call
        }
        // The threads that parse what a guest writes open no file and make no KVM object.
        foreach (string kind in new[] { "vcpu", "io", "api" })
        {
            Assert.DoesNotContain("openat", lists[kind].Syscalls);
            Assert.Contains(lists[kind].Rules, r => r.Syscall == "openat" && r.Errno == 1); // EPERM for the GC's /proc/meminfo
            Assert.DoesNotContain("memfd_create", lists[kind].Syscalls);
            Assert.DoesNotContain(lists[kind].Rules, r => r.Syscall == "ioctl" && r.Value == Vireo.Interop.KvmAbi.KVM_CREATE_VM);
            Assert.All(lists[kind].Rules.Where(r => r.Syscall is "clone" or "clone3"), r => Assert.Equal(1, r.Errno)); // EPERM, never a thread
        }
        // KVM_RUN is a vCPU's alone; every ioctl is checked by its request.
        Assert.Contains(lists["vcpu"].Rules, r => r.Syscall == "ioctl" && r.Value == Vireo.Interop.KvmAbi.KVM_RUN);
        Assert.DoesNotContain(lists["vmm"].Rules, r => r.Syscall == "ioctl" && r.Value == Vireo.Interop.KvmAbi.KVM_RUN);
        // The API's thread, which parses what a client sends, makes no ioctl and opens no socket.
        Assert.DoesNotContain("ioctl", lists["api"].Syscalls);
        Assert.DoesNotContain("socket", lists["api"].Syscalls);
        Assert.All(lists.Values.SelectMany(p => p.Rules).Where(r => r.Syscall == "ioctl"), r => Assert.Equal(1, r.Arg));
    }

    [Fact]
    public void A_rule_reads_with_its_argument_check()
    {
        var p = Parse("""
            # a comment
            read
            ioctl arg1 == KVM_RUN   # with a comment
            mmap arg2 & PROT_EXEC == 0
            tgkill arg0 == self
            socket arg0 == 0x1
            clone3 fails with EPERM
            """, runtime: "");
        Assert.Collection(p.Rules,
            r => Assert.Equal(("read", (int?)null), (r.Syscall, r.Arg)),
            r => Assert.Equal(("ioctl", (int?)1, 0xFFFF_FFFFUL, (ulong)Vireo.Interop.KvmAbi.KVM_RUN), (r.Syscall, r.Arg, r.Mask, r.Value)),
            r => Assert.Equal(("mmap", (int?)2, 4UL, 0UL), (r.Syscall, r.Arg, r.Mask, r.Value)),
            r => Assert.Equal(("tgkill", true), (r.Syscall, r.Self)),
            r => Assert.Equal(("socket", 1UL), (r.Syscall, r.Value)),
            r => Assert.Equal(("clone3", (int?)1, false), (r.Syscall, r.Errno, r.Allows)));
        Assert.Equal("test.policy line 3: ioctl arg1 == KVM_RUN   # with a comment", p.Rules[1].Source);
    }

    [Theory]
    [InlineData("readd", "test.policy line 1: 'readd' is not a system call on this architecture")]
    [InlineData("ioctl arg1 == KVM_RUNN", "test.policy line 1: 'KVM_RUNN' is neither a number nor a name SeccompNames knows")]
    [InlineData("ioctl arg6 == 1", "test.policy line 1: 'arg6' is not an argument (arg0 to arg5)")]
    [InlineData("ioctl 1 == 1", "test.policy line 1: '1' is not an argument (arg0 to arg5)")]
    [InlineData("ioctl arg1 = 1", "test.policy line 1: expected 'NAME', 'NAME argN == VALUE', 'NAME argN & MASK == VALUE' or 'NAME fails with ERRNO'")]
    [InlineData("mmap arg2 & 0x100000000 == 0", "test.policy line 1: a mask covers the argument's low 32 bits only")]
    [InlineData("clone3 fails with EBADF", "test.policy line 1: 'EBADF' is not an error a list may give (EPERM, EAGAIN or ENOSYS)")]
    [InlineData("\n\ninclude", "test.policy line 3: 'include' takes one list's name")]
    [InlineData("include nothing", "seccomp: there is no list named 'nothing'")]
    [InlineData("include test", "test.policy line 1: 'test' is included twice or includes itself")]
    public void A_bad_line_is_refused_with_its_file_and_line(string text, string expected)
    {
        var e = Assert.Throws<SandboxException>(() => Parse(text));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void The_union_every_thread_gets_first_holds_each_allowing_rule_once()
    {
        var lists = SeccompPolicy.Kinds.Select(SeccompPolicy.Load).ToList();
        var union = SeccompPolicy.UnionOf("union", lists);
        Assert.All(lists, p => Assert.Subset(union.Syscalls.ToHashSet(), p.Syscalls.ToHashSet()));
        Assert.DoesNotContain(union.Rules, r => !r.Allows); // the vCPU's refused clone3 stays the vCPU's
        Assert.Equal(union.Rules.Count, union.Rules.Select(r => (r.Number, r.Arg, r.Mask, r.Value, r.Self)).Distinct().Count());
    }
}
