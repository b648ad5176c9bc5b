/* vsock-client: connects from the guest to a host port over AF_VSOCK, sends its message, and
 * prints what the host answers. Built static from glibc, so the busybox initramfs can run it.
 *   vsock-client CID PORT MESSAGE */
#include <linux/vm_sockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: vsock-client CID PORT MESSAGE\n");
        return 2;
    }
    int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (fd < 0) { perror("vsock-client: socket"); return 1; }
    struct sockaddr_vm addr = { .svm_family = AF_VSOCK, .svm_cid = (unsigned)atoi(argv[1]), .svm_port = (unsigned)atoi(argv[2]) };
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("vsock-client: connect"); return 1; }
    size_t len = strlen(argv[3]);
    if (write(fd, argv[3], len) != (ssize_t)len || write(fd, "\n", 1) != 1) { perror("vsock-client: write"); return 1; }
    shutdown(fd, SHUT_WR);
    char reply[512];
    size_t have = 0;
    ssize_t n;
    while (have < sizeof reply - 1 && (n = read(fd, reply + have, sizeof reply - 1 - have)) > 0)
        have += (size_t)n;
    reply[have] = 0;
    printf("%s", reply);
    return have > 0 ? 0 : 1;
}
