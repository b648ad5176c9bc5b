/*
 * vireo-vmm's SIGSYS handler. A thread that makes a system call its seccomp list does not allow
 * gets SIGSYS (SECCOMP_RET_TRAP); this handler writes one line naming the call and the thread's
 * kind to standard error (the VMM's log, which vireod reads), then ends the process by SIGSYS, as
 * the kernel's own kill would. It is C because it runs in a signal handler, on any thread and in
 * whatever state the .NET runtime is in there: no managed code may run at that moment, and only
 * async-signal-safe calls (raw write, prctl, getpid, gettid, tgkill) are made. A refused ioctl's
 * line names its request too (read from the call's register in the signal's context). Linked into vireo-vmm by
 * its project file.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <ucontext.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

/* x86-64's call names by number, made from <asm/unistd_64.h> when vireo-vmm is built. */
static const char *const syscall_names[] = {
#include "syscall_names.h"
};
static const int syscall_count = (int)(sizeof syscall_names / sizeof syscall_names[0]);
static __thread const char *thread_kind;

/* The ioctl requests the lists may name (SeccompNames), so that a refused ioctl names its request. */
#define MAX_IOCTL_NAMES 128
static struct { unsigned long request; const char *name; } ioctl_names[MAX_IOCTL_NAMES];
static int ioctl_name_count;

static size_t put(char *line, size_t at, size_t size, const char *text)
{
    while (*text && at < size)
        line[at++] = *text++;
    return at;
}

static size_t put_number(char *line, size_t at, size_t size, long value)
{
    char digits[24];
    int n = 0;
    unsigned long v = value < 0 ? (unsigned long)-value : (unsigned long)value;
    do digits[n++] = (char)('0' + v % 10); while ((v /= 10) && n < (int)sizeof digits);
    if (value < 0 && at < size)
        line[at++] = '-';
    while (n > 0 && at < size)
        line[at++] = digits[--n];
    return at;
}

static size_t put_hex(char *line, size_t at, size_t size, unsigned long value)
{
    char digits[16];
    int n = 0;
    do digits[n++] = "0123456789abcdef"[value % 16]; while ((value /= 16) && n < (int)sizeof digits);
    at = put(line, at, size, "0x");
    while (n > 0 && at < size)
        line[at++] = digits[--n];
    return at;
}

static void on_sigsys(int sig, siginfo_t *info, void *context)
{
    (void)sig;
    char line[256];
    size_t n = 0, size = sizeof line - 1;
    int nr = info->si_syscall;
    const char *name = nr >= 0 && nr < syscall_count && syscall_names[nr] ? syscall_names[nr] : "an unknown call";
    n = put(line, n, size, "vireo-vmm: seccomp: the ");
    n = put(line, n, size, thread_kind ? thread_kind : "vmm");
    n = put(line, n, size, " thread ");
    n = put_number(line, n, size, syscall(SYS_gettid));
    char thread_name[17] = { 0 };
    if (syscall(SYS_prctl, PR_GET_NAME, thread_name, 0, 0, 0) == 0) {
        n = put(line, n, size, " (");
        n = put(line, n, size, thread_name);
        n = put(line, n, size, ")");
    }
    n = put(line, n, size, " made a system call its list does not allow: ");
    n = put(line, n, size, name);
    n = put(line, n, size, " (");
    n = put_number(line, n, size, nr);
    n = put(line, n, size, ")");
    if (nr == SYS_ioctl && context) {
        /* The call's second argument, still in its register (x86-64: rdi, rsi, rdx, r10, r8, r9). */
        unsigned long request = (unsigned int)((ucontext_t *)context)->uc_mcontext.gregs[REG_RSI];
        const char *request_name = 0;
        for (int i = 0; i < ioctl_name_count; i++)
            if (ioctl_names[i].request == request)
                request_name = ioctl_names[i].name;
        n = put(line, n, size, " with request ");
        if (request_name) {
            n = put(line, n, size, request_name);
            n = put(line, n, size, " ");
        }
        n = put(line, n, size, "(");
        n = put_hex(line, n, size, request);
        n = put(line, n, size, ")");
    }
    n = put(line, n, size, "\n");
    syscall(SYS_write, 2, line, n);
    /* SA_RESETHAND made SIGSYS's action the default again and SA_NODEFER left it unblocked: this
       signal ends the process, as killed by SIGSYS. */
    syscall(SYS_tgkill, syscall(SYS_getpid), syscall(SYS_gettid), SIGSYS);
}

int vireo_sigsys_install(void)
{
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_sigsys;
    action.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_NODEFER;
    sigfillset(&action.sa_mask);
    sigdelset(&action.sa_mask, SIGSYS);
    return sigaction(SIGSYS, &action, NULL);
}

/* Names an ioctl request for the handler's line; name must live for ever. Called before the
   filters go on. Returns -1 once the table is full. */
int vireo_sigsys_ioctl_name(unsigned long request, const char *name)
{
    if (ioctl_name_count == MAX_IOCTL_NAMES)
        return -1;
    ioctl_names[ioctl_name_count].request = request;
    ioctl_names[ioctl_name_count].name = name;
    ioctl_name_count++;
    return 0;
}

/* The calling thread's kind, for the handler's line ("vcpu", "io"); kind must live for ever. */
void vireo_sigsys_thread_kind(const char *kind)
{
    thread_kind = kind;
}
