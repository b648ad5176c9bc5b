/*
 * A stand-alone PVH kernel, written without Vireo's guest kit, the way anyone would write
 * a first PVH "hello": 32-bit, no paging, a stack of its own, COM1 by polling, then a
 * reset through the keyboard controller. Build it with plain gcc:
 *
 *   gcc -m32 -nostdlib -static -no-pie -fno-pic -ffreestanding -O2 \
 *       -Wl,-Ttext-segment=0x100000 -Wl,--build-id=none -o pvh32.elf pvh32.c
 */
__asm__(
    ".pushsection .note.Xen, \"a\", @note\n"
    "  .align 4\n"
    "  .long 4, 4, 18\n"          /* XEN_ELFNOTE_PHYS32_ENTRY */
    "  .asciz \"Xen\"\n"
    "  .long _start\n"
    ".popsection\n"
    ".text\n"
    ".globl _start\n"
    "_start:\n"
    "  movl $stack_top, %esp\n"
    "  pushl %ebx\n"               /* struct hvm_start_info * */
    "  call kmain\n"
    "1: hlt\n"
    "  jmp 1b\n");

unsigned char stack[8192] __attribute__((aligned(16), used));
__asm__(".set stack_top, stack + 8192");

struct start_info { unsigned magic, version, flags, nr_modules; unsigned long long modlist, cmdline; };

static inline void outb(unsigned short port, unsigned char v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline unsigned char inb(unsigned short port) { unsigned char v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static void serial_putc(char c)
{
    while (!(inb(0x3f8 + 5) & 0x20))
        ;
    outb(0x3f8, (unsigned char)c);
}

static void serial_puts(const char *s)
{
    for (; *s; s++) {
        if (*s == '\n')
            serial_putc('\r');
        serial_putc(*s);
    }
}

void kmain(const struct start_info *si)
{
    serial_puts("pvh32: hello from a 32-bit PVH guest\n");
    serial_puts(si && si->magic == 0x336ec578 ? "pvh32: start info ok\n" : "pvh32: NO START INFO\n");
    while (inb(0x64) & 0x02)
        ;
    outb(0x64, 0xfe);             /* pulse the CPU reset line */
    for (;;)
        __asm__ volatile("hlt");
}
