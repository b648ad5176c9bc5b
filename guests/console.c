/* console: an interactive echo over COM1. Type a line; "q" on its own quits (the kit's exit:
 * power-off). It also honours the ACPI power button, as powerbutton does, so that a managed VM
 * running it (the README's vireod walkthrough) shuts down when asked instead of being destroyed
 * at the end of the timeout. Without ACPI (--no-acpi) it only echoes. */
#include "runtime/rt.h"

#define PWRBTN (1u << 8)

int main(void)
{
    u16 evt = 0;
    const u8 *fadt = acpi_table("FACP");
    if (fadt) {
        evt = (u16)*(const u32 *)(fadt + 56);       /* PM1a_EVT_BLK: status, then enable */
        u16 enable = (u16)(evt + fadt[88] / 2);     /* PM1_EVT_LEN */
        outw(enable, (u16)(inw(enable) | PWRBTN));
    }
    printf("console: type; a line \"q\" quits\n> ");
    char line[128];
    int len = 0;
    for (;;) {
        if (evt && (inw(evt) & PWRBTN)) {
            outw(evt, PWRBTN);
            printf("\nconsole: power button pressed; powering off\n");
            return 0;
        }
        int c = serial_getc();
        if (c < 0) { cpu_relax(); continue; }
        if (c == '\r' || c == '\n') {
            line[len] = 0;
            printf("\necho: %s\n", line);
            if (len == 1 && line[0] == 'q')
                return 0;
            len = 0;
            printf("> ");
        } else if (len < (int)sizeof line - 1) {
            line[len++] = (char)c;
            putc((char)c);
        }
    }
}
