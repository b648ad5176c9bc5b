/* idle: says it is up, then halts its CPU for good (no exits, no CPU time): a VM that just
 * exists, for tests that run many at once (the daemon's). */
#include "runtime/rt.h"

int main(void)
{
    printf("idle: up\n");
    cpu_halt_forever();
}
