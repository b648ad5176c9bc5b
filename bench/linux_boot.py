#!/usr/bin/env python3
"""Runs inside the rig (rig/rig exec): boots Debian's cloud kernel with the project's initramfs
under Vireo and under QEMU, interleaved, on the rig's /dev/kvm, and prints one line a boot:

  bench-linux: VMM init-at SECONDS marker-wall SECONDS exit-wall SECONDS

init-at is the guest's own uptime when its init wrote the boot marker (kernel entry to init);
marker-wall and exit-wall are host time from starting the VMM to the marker and to its exit
(firmware and VMM start-up included). usage: bench/linux_boot.py RUNS"""
import os, re, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES = os.path.join(ROOT, ".build", "images")
CMDLINE = "console=ttyS0 panic=1 script=none"
COMMANDS = {
    "vireo": [os.path.join(ROOT, ".build", "vireo", "vireo"), "run", "--kernel", f"{IMAGES}/vmlinuz",
              "--initrd", f"{IMAGES}/initramfs.gz", "--memory", "512M", "--timeout", "300", "--cmdline", CMDLINE],
    "qemu": ["qemu-system-x86_64", "-M", "q35", "-accel", "kvm", "-cpu", "host", "-m", "512M", "-smp", "1",
             "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio", "-no-reboot",
             "-kernel", f"{IMAGES}/vmlinuz", "-initrd", f"{IMAGES}/initramfs.gz", "-append", CMDLINE],
}
MARKER = re.compile(rb"vireo-guest: init reached at ([0-9.]+) s")


def boot(name):
    start = time.perf_counter()
    p = subprocess.Popen(COMMANDS[name], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    out, marker_at = b"", None
    for line in p.stdout:
        out += line
        m = MARKER.search(line)
        if m and marker_at is None:
            marker_at = time.perf_counter() - start
            init_at = float(m.group(1))
    code = p.wait()
    exit_at = time.perf_counter() - start
    if marker_at is None or code != 0:
        sys.exit(f"bench-linux: {name} exited {code} without the boot marker\n{out.decode(errors='replace')[-3000:]}")
    print(f"bench-linux: {name} init-at {init_at:.3f} marker-wall {marker_at:.3f} exit-wall {exit_at:.3f}", flush=True)


for _ in range(int(sys.argv[1])):
    for name in ("vireo", "qemu"):
        boot(name)
