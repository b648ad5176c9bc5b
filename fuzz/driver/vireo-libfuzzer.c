// libFuzzer's side of a .NET fuzz target: libFuzzer runs in this process, the target in a .NET
// child (fuzz/Vireo.Fuzz, instrumented by SharpFuzz), and the two speak SharpFuzz's libFuzzer
// protocol. See fuzz/DESIGN.md.
//
//   vireo-libfuzzer [libFuzzer's flags] [CORPUS...] --harness=PATH --target=NAME
//
// At start this process makes a System V shared memory segment (64 KiB of edge counters, then the
// input, up to 1 MiB) and two pipes, and starts `PATH NAME` with the segment's id and the pipes'
// numbers in __LIBFUZZER_SHM_ID, __LIBFUZZER_CONTROL_PIPE_ID and __LIBFUZZER_STATUS_PIPE_ID; the
// child writes one 4-byte status when it is ready. Then for each input: the counters are zeroed,
// the input is copied in and its length (4 bytes) written to the control pipe; the child runs the
// target and answers a 4-byte status (0 ok, 2 an exception escaped); its counters are copied into
// this process's extra-counters section, which libFuzzer reads as coverage. A crash, or the child
// gone, is an abort here, so libFuzzer keeps the input as a crash artifact.
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <unistd.h>

enum { COUNTERS = 1 << 16, MAX_INPUT = 1 << 20, CONTROL_FD = 198, STATUS_FD = 199 };

// libFuzzer takes the bytes of this section as extra coverage counters.
__attribute__((used, section("__libfuzzer_extra_counters"))) static uint8_t counters[COUNTERS];

static int control_fd = -1, status_fd = -1, segment = -1;
static uint8_t *shared;
static pid_t child;

static void fail(const char *what)
{
    fprintf(stderr, "vireo-libfuzzer: %s: %s\n", what, strerror(errno));
    exit(1);
}

static const char *flag(int argc, char **argv, const char *name)
{
    size_t n = strlen(name);
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], name, n) == 0 && argv[i][n] == '=') {
            return argv[i] + n + 1;
        }
    }
    return NULL;
}

static void remove_segment(void)
{
    if (segment >= 0) {
        shmctl(segment, IPC_RMID, NULL);
    }
    if (child > 0) {
        kill(child, SIGKILL);
    }
}

// Reads or writes exactly four bytes; false when the other end is gone.
static int exchange(int fd, int32_t *value, int writing)
{
    size_t done = 0;
    while (done < sizeof *value) {
        ssize_t n = writing ? write(fd, (char *)value + done, sizeof *value - done)
                            : read(fd, (char *)value + done, sizeof *value - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return 0;
        }
        done += (size_t)n;
    }
    return 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *harness = flag(*argc, *argv, "--harness"), *target = flag(*argc, *argv, "--target");
    if (harness == NULL || target == NULL) {
        fprintf(stderr, "usage: vireo-libfuzzer [libFuzzer flags] [CORPUS...] --harness=PATH --target=NAME\n");
        exit(2);
    }
    int control[2], status[2];
    if (pipe(control) != 0 || pipe(status) != 0) {
        fail("pipe");
    }
    segment = shmget(IPC_PRIVATE, COUNTERS + MAX_INPUT, IPC_CREAT | IPC_EXCL | 0600);
    if (segment < 0) {
        fail("shmget");
    }
    atexit(remove_segment);
    shared = shmat(segment, NULL, 0);
    if (shared == (void *)-1) {
        fail("shmat");
    }
    child = fork();
    if (child < 0) {
        fail("fork");
    }
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); // a timed-out or killed fuzzer leaves no harness behind
        if (dup2(control[0], CONTROL_FD) < 0 || dup2(status[1], STATUS_FD) < 0) {
            fail("dup2");
        }
        close(control[0]);
        close(control[1]);
        close(status[0]);
        close(status[1]);
        char id[16];
        snprintf(id, sizeof id, "%d", segment);
        setenv("__LIBFUZZER_SHM_ID", id, 1);
        setenv("__LIBFUZZER_CONTROL_PIPE_ID", "198", 1);
        setenv("__LIBFUZZER_STATUS_PIPE_ID", "199", 1);
        execl(harness, harness, target, (char *)NULL);
        fail(harness);
    }
    close(control[0]);
    close(status[1]);
    control_fd = control[1];
    status_fd = status[0];
    int32_t ready;
    if (!exchange(status_fd, &ready, 0)) {
        fprintf(stderr, "vireo-libfuzzer: the harness %s %s ended before it was ready (its error is above)\n", harness, target);
        exit(1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_INPUT) {
        return 0; // -max_len keeps inputs far below this; a larger one is not tried
    }
    memset(shared, 0, COUNTERS);
    memcpy(shared + COUNTERS, data, size);
    int32_t length = (int32_t)size, status;
    if (!exchange(control_fd, &length, 1) || !exchange(status_fd, &status, 0)) {
        int code = 0;
        waitpid(child, &code, WNOHANG);
        fprintf(stderr, "vireo-libfuzzer: the harness died (status %d)\n", code);
        child = 0;
        abort();
    }
    memcpy(counters, shared, COUNTERS);
    if (status != 0) {
        fprintf(stderr, "vireo-libfuzzer: the target threw (its exception is above)\n");
        abort();
    }
    return 0;
}
