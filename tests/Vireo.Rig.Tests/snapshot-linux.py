#!/usr/bin/env python3
"""Runs inside the rig (rig/rig exec): Debian's kernel saved by one vireo-vmm and restored by another.
   snapshot-linux.py WORKDIR KERNEL
Boots the Linux guest's shell (its disk on virtio-blk) under vireo-vmm's API, has the shell write a
file and a line, pauses the VM, PUT /snapshot/create, kills that process, PUT /snapshot/load
into a fresh vireo-vmm with resume_vm, and has the same shell go on: it reads back the file,
writes more and powers off cleanly. Prints both consoles; exits 0 when every step held."""
import http.client, json, os, socket, subprocess, sys, threading, time

work, kernel = sys.argv[1], sys.argv[2]
vmm = ".build/vireo/vireo-vmm"
images = ".build/images"

class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=120)
        self.path = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(120)
        self.sock.connect(self.path)

def call(sock, method, path, body):
    c = UnixHTTP(sock)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    c.request(method, path, body=data, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    text = r.read().decode(errors="replace")
    if r.status != 204:
        sys.exit(f"snapshot-linux: {method} {path}: {r.status} {text}")

class Vmm:
    def __init__(self, name):
        self.sock = f"/tmp/{name}.sock"
        self.out = bytearray()
        self.lock = threading.Lock()
        self.p = subprocess.Popen([vmm, "--api-sock", self.sock], stdout=subprocess.PIPE)
        threading.Thread(target=self.read, daemon=True).start()
        for _ in range(500):
            if os.path.exists(self.sock):
                return
            time.sleep(0.02)
        sys.exit("snapshot-linux: no API socket")
    def read(self):
        while True:
            b = self.p.stdout.read1(4096)
            if not b:
                return
            with self.lock:
                self.out += b
            sys.stdout.buffer.write(b)
            sys.stdout.flush()
    def text(self):
        with self.lock:
            return self.out.decode(errors="replace")
    def wait_for(self, text, seconds=400):
        deadline = time.time() + seconds
        while text not in self.text():
            if time.time() > deadline or self.p.poll() is not None:
                sys.exit(f"snapshot-linux: no '{text}' (vmm exit {self.p.poll()})")
            time.sleep(0.1)
    def type(self, line):
        call(self.sock, "PUT", "/console/input", line.encode())

disk = os.path.join(work, "disk.ext4")
mem, snap = "/tmp/linux.mem", "/tmp/linux.snap"
a = Vmm("vmm-a")
call(a.sock, "PUT", "/boot-source", {"kernel_image_path": kernel, "initrd_path": f"{images}/initramfs.gz",
     "boot_args": "console=ttyS0 panic=1 script=shell"})
call(a.sock, "PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 256})
call(a.sock, "PUT", "/drives/rootfs", {"drive_id": "rootfs", "path_on_host": disk, "is_read_only": False})
call(a.sock, "PUT", "/actions", {"action_type": "InstanceStart"})
a.wait_for("exit the shell to stop the VM")
time.sleep(2)
a.type("mkdir -p /mnt && mount /dev/vda /mnt && echo before-snapshot > /mnt/snap.txt && sync && echo wrote-$((40+2))\n")
a.wait_for("wrote-42")
call(a.sock, "PATCH", "/vm", {"state": "Paused"})
t = time.time()
call(a.sock, "PUT", "/snapshot/create", {"snapshot_type": "Full", "snapshot_path": snap, "mem_file_path": mem})
print(f"\nsnapshot-linux: snapshot created in {(time.time() - t) * 1000:.0f} ms", flush=True)
a.p.kill()
a.p.wait()

b = Vmm("vmm-b")
t = time.time()
call(b.sock, "PUT", "/snapshot/load", {"snapshot_path": snap, "mem_backend": {"backend_type": "File", "backend_path": mem}, "resume_vm": True})
print(f"\nsnapshot-linux: restored in {(time.time() - t) * 1000:.0f} ms", flush=True)
b.type("cat /mnt/snap.txt; echo after-$((2+2)) >> /mnt/snap.txt; sync; umount /mnt && echo restored-$((50+5)) && sleep 1 && exit\n")
b.wait_for("restored-55")
b.wait_for("reboot: Power down")
status = b.p.wait(timeout=120)
print(f"\nsnapshot-linux: second vmm exited {status}", flush=True)
sys.exit(0 if "before-snapshot" in b.text() and status == 0 else 1)
