#!/usr/bin/env python3
"""Runs inside the rig (rig/rig exec): Debian's kernel saved by one vireo-vmm and restored by another.
   snapshot-linux.py WORKDIR KERNEL
Boots the Linux guest's shell (its disk on virtio-blk) under vireo-vmm's API, has the shell write a
file and a line, pauses the VM, PUT /snapshot/create, kills that process, PUT /snapshot/load
into a fresh vireo-vmm with resume_vm, and has the same shell go on: it reads back the file,
writes more and powers off cleanly. Prints both consoles; exits 0 when every step held."""
import os, sys, time

work, kernel = sys.argv[1], sys.argv[2]
images = ".build/images"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vmm_api import Vmm

disk = os.path.join(work, "disk.ext4")
mem, snap = "/tmp/linux.mem", "/tmp/linux.snap"
a = Vmm("vmm-a", who="snapshot-linux")
a.call("PUT", "/boot-source", {"kernel_image_path": kernel, "initrd_path": f"{images}/initramfs.gz",
     "boot_args": "console=ttyS0 panic=1 script=shell"})
a.call("PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 256})
a.call("PUT", "/drives/rootfs", {"drive_id": "rootfs", "path_on_host": disk, "is_read_only": False})
a.call("PUT", "/actions", {"action_type": "InstanceStart"})
a.wait_for("exit the shell to stop the VM")
time.sleep(2)
a.type("mkdir -p /mnt && mount /dev/vda /mnt && echo before-snapshot > /mnt/snap.txt && sync && echo wrote-$((40+2))\n")
a.wait_for("wrote-42")
a.call("PATCH", "/vm", {"state": "Paused"})
t = time.time()
a.call("PUT", "/snapshot/create", {"snapshot_type": "Full", "snapshot_path": snap, "mem_file_path": mem})
print(f"\nsnapshot-linux: snapshot created in {(time.time() - t) * 1000:.0f} ms", flush=True)
a.p.kill()
a.p.wait()

b = Vmm("vmm-b", who="snapshot-linux")
t = time.time()
b.call("PUT", "/snapshot/load", {"snapshot_path": snap, "mem_backend": {"backend_type": "File", "backend_path": mem}, "resume_vm": True})
print(f"\nsnapshot-linux: restored in {(time.time() - t) * 1000:.0f} ms", flush=True)
b.type("cat /mnt/snap.txt; echo after-$((2+2)) >> /mnt/snap.txt; sync; umount /mnt && echo restored-$((50+5)) && sleep 1 && exit\n")
b.wait_for("restored-55")
b.wait_for("reboot: Power down")
status = b.p.wait(timeout=120)
print(f"\nsnapshot-linux: second vmm exited {status}", flush=True)
sys.exit(0 if "before-snapshot" in b.text() and status == 0 else 1)
