/* measure: runs a command and prints its wall time and peak RSS, as
 *   measure-result: wall-ns N maxrss-kib N status N
 * on stderr. A launcher of its own because a process's ru_maxrss starts from the memory of
 * whoever forked it (Linux carries the old mm's high-water mark over exec): python's
 * subprocess would put its own ~14 MiB under every VMM. This one is about 1 MiB.
 * The command's stdin is /dev/null; its stdout and stderr are this program's. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: measure COMMAND [ARG...]\n");
        return 2;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_RDONLY);
        dup2(null, 0);
        execvp(argv[1], argv + 1);
        perror(argv[1]);
        _exit(127);
    }
    int status;
    struct rusage ru;
    if (pid < 0 || wait4(pid, &status, 0, &ru) < 0) {
        perror("measure");
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long long ns = (t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    fprintf(stderr, "measure-result: wall-ns %lld maxrss-kib %ld status %d\n", ns, ru.ru_maxrss, code);
    return 0;
}
