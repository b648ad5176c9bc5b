/* console: an interactive echo over COM1. Type a line; "q" on its own quits (the kit's exit: power-off). */
#include "runtime/rt.h"

int main(void)
{
    printf("console: type; a line \"q\" quits\n> ");
    char line[128];
    int len = 0;
    for (;;) {
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
