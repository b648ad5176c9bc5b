/*
 * vireo-vmm's SIGSYS handler. A thread that makes a system call its seccomp list does not allow
 * gets SIGSYS (SECCOMP_RET_TRAP); this handler writes one line naming the call and the thread's
 * kind to standard error (the VMM's log, which vireod reads), then ends the process by SIGSYS, as
 * the kernel's own kill would. It is C because it runs in a signal handler, on any thread and in
 * whatever state the .NET runtime is in there: no managed code may run at that moment, and only
 * async-signal-safe calls (raw write, prctl, getpid, gettid, tgkill) are made. Linked into vireo-vmm by
 * its project file.
 */
#define _GNU_SOURCE
#include <signal.h>
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

static void on_sigsys(int sig, siginfo_t *info, void *context)
{
    (void)sig;
    (void)context;
    char line[256];
    size_t n = 0, size = sizeof line - 1;
    int nr = info->si_syscall;
    const char *name = nr >= 0 && nr < syscall_count && syscall_names[nr] ? syscall_names[nr] : "an unknown call";
    n = put(line, n, size, "vireo-vmm: seccomp: the ");
    n = put(line, n, size, thread_kind ? thread_kind : "api");
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
    n = put(line, n, size, ")\n");
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

/* The calling thread's kind, for the handler's line ("vcpu", "io"); kind must live for ever. */
void vireo_sigsys_thread_kind(const char *kind)
{
    thread_kind = kind;
}
