/* triplefault: empties the IDT, then faults at CPL3: #UD -> #GP -> #DF -> CPU shutdown. */
#include "runtime/rt.h"

int main(void)
{
    printf("triplefault: breaking the IDT\n");
    break_idt();
    __asm__ volatile("ud2");
    printf("triplefault: STILL ALIVE\n");
    return 1;
}
