/*
 * The floor for exit cost: the least C that can run a test guest on KVM. Loads the PVH ELF's
 * segments, enters it in 32-bit mode with an in-kernel irqchip, and loops on KVM_RUN,
 * printing COM1 and stopping at the debug-exit port. No devices, no checks, no threads.
 * Usage: kvmloop GUEST.elf   (exit status: the guest's)
 */
#include <elf.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MEM (128UL << 20)

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: kvmloop GUEST.elf\n"); return 2; }
    int fd = open(argv[1], O_RDONLY);
    struct stat st;
    fstat(fd, &st);
    unsigned char *img = mmap(0, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    Elf64_Ehdr *eh = (Elf64_Ehdr *)img;

    int kvm = open("/dev/kvm", O_RDWR);
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000);
    ioctl(vm, KVM_CREATE_IRQCHIP, 0);
    unsigned char *mem = mmap(0, MEM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    struct kvm_userspace_memory_region region = { .slot = 0, .guest_phys_addr = 0, .memory_size = MEM, .userspace_addr = (unsigned long)mem };
    ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region);
    Elf64_Phdr *ph = (Elf64_Phdr *)(img + eh->e_phoff);
    for (int i = 0; i < eh->e_phnum; i++)
        if (ph[i].p_type == PT_LOAD)
            memcpy(mem + ph[i].p_paddr, img + ph[i].p_offset, ph[i].p_filesz);

    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    struct kvm_cpuid2 *cpuid = calloc(1, sizeof(*cpuid) + 256 * sizeof(struct kvm_cpuid_entry2));
    cpuid->nent = 256;
    ioctl(kvm, KVM_GET_SUPPORTED_CPUID, cpuid);
    ioctl(vcpu, KVM_SET_CPUID2, cpuid);
    struct kvm_run *run = mmap(0, ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0), PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);

    struct kvm_sregs sr;
    ioctl(vcpu, KVM_GET_SREGS, &sr);
    struct kvm_segment code = { .base = 0, .limit = 0xffffffff, .selector = 0x08, .type = 11, .present = 1, .db = 1, .s = 1, .g = 1 };
    struct kvm_segment data = code;
    data.selector = 0x10;
    data.type = 3;
    sr.cs = code;
    sr.ds = sr.es = sr.fs = sr.gs = sr.ss = data;
    sr.cr0 = 0x11;
    ioctl(vcpu, KVM_SET_SREGS, &sr);
    struct kvm_regs regs = { .rip = eh->e_entry, .rflags = 2 };
    ioctl(vcpu, KVM_SET_REGS, &regs);

    for (;;) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0) { perror("KVM_RUN"); return 1; }
        if (run->exit_reason == KVM_EXIT_IO) {
            unsigned char *d = (unsigned char *)run + run->io.data_offset;
            if (run->io.direction == KVM_EXIT_IO_OUT && run->io.port == 0x3f8) putchar(*d);
            else if (run->io.direction == KVM_EXIT_IO_OUT && run->io.port == 0xf4) { fflush(stdout); return *d; }
            else if (run->io.direction == KVM_EXIT_IO_IN) memset(d, 0xff, run->io.size);
            continue;
        }
        if (run->exit_reason == KVM_EXIT_MMIO) continue;
        fprintf(stderr, "kvmloop: exit reason %u\n", run->exit_reason);
        return 1;
    }
}
