#!/usr/bin/env python3
"""Runs inside the rig (rig/rig exec): Debian's kernel live-migrated from one vireo-vmm to another.
   migrate-linux.py WORKDIR KERNEL
The two ends are in two network namespaces, as two hosts are: the source's TAP on a bridge here
(10.0.2.1, where a TCP server listens), the destination's TAP of the same name in namespace
vireo-dst, on a bridge joined to the first by a veth pair. The guest's shell starts a loop that
appends numbered lines to a file on its virtio disk (syncing as it goes) and a stream of numbered
lines to the server over virtio-net; mid-stream, PUT /migration/send moves the VM (pre-copy
over a unix: socket) to a vireo-vmm started in vireo-dst by PUT /migration/receive. The source
must end Migrated (exit 0); the destination's shell stops the loops, checks the file, unmounts
and powers off. The server must have seen one connection whose numbers run on without a gap
across the migration. Prints both consoles and the migration's progress; exits 0 when all held."""
import json, os, socket, subprocess, sys, threading, time

work, kernel = sys.argv[1], sys.argv[2]
images = ".build/images"
tap, ns = "vireo-mig0", "vireo-dst"

def sh(cmd):
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"migrate-linux: {cmd}: {r.stderr.strip()}")

# Two "hosts" joined at layer 2: br0 here with the server's address, br1 in vireo-dst.
sh("ip link add br0 type bridge && ip addr add 10.0.2.1/24 dev br0 && ip link set br0 up")
sh(f"ip tuntap add dev {tap} mode tap vnet_hdr && ip link set {tap} master br0 && ip link set {tap} up")
sh(f"ip netns add {ns} && ip link add veth0 type veth peer name veth1 && ip link set veth1 netns {ns}")
sh("ip link set veth0 master br0 && ip link set veth0 up")
sh(f"ip netns exec {ns} sh -c 'ip link add br1 type bridge && ip link set veth1 master br1 && "
   f"ip tuntap add dev {tap} mode tap vnet_hdr && ip link set {tap} master br1 && "
   f"ip link set veth1 up && ip link set {tap} up && ip link set br1 up && ip link set lo up'")

# The server: one connection expected, lines "line-N", N from 0 up with no gap.
seen = {"connections": 0, "last": -1, "gaps": 0, "lines": 0}
seen_lock = threading.Lock()
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("10.0.2.1", 5000))
server.listen(4)
def serve():
    while True:
        c, _ = server.accept()
        with seen_lock:
            seen["connections"] += 1
        buf = b""
        while True:
            b = c.recv(4096)
            if not b:
                break
            buf += b
            *lines, buf = buf.split(b"\n")
            with seen_lock:
                for l in lines:
                    if not l.startswith(b"line-"):
                        continue
                    n = int(l[5:])
                    if n != seen["last"] + 1:
                        seen["gaps"] += 1
                    seen["last"] = n
                    seen["lines"] += 1
threading.Thread(target=serve, daemon=True).start()
def lines():
    with seen_lock:
        return seen["lines"]

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vmm_api import Vmm

disk = os.path.join(work, "disk.ext4")
a = Vmm("vmm-a", who="migrate-linux")
a.call("PUT", "/boot-source", {"kernel_image_path": kernel, "initrd_path": f"{images}/initramfs.gz",
     "boot_args": "console=ttyS0 panic=1 script=shell"})
a.call("PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 256})
a.call("PUT", "/drives/rootfs", {"drive_id": "rootfs", "path_on_host": disk, "is_read_only": False})
a.call("PUT", "/network-interfaces/eth0", {"iface_id": "eth0", "host_dev_name": tap, "guest_mac": "02:00:00:00:0a:02"})
a.call("PUT", "/actions", {"action_type": "InstanceStart"})
a.wait_for("exit the shell to stop the VM")
time.sleep(2)
a.type("mkdir -p /mnt && mount /dev/vda /mnt && ifconfig eth0 10.0.2.2 netmask 255.255.255.0 up && echo net-up-$((1+1))\n")
a.wait_for("net-up-2")
# The disk loop and the stream, in the background of the same shell.
a.type("(i=0; while [ ! -e /tmp/stop ]; do echo $i >> /mnt/loop.txt; [ $((i % 16)) -eq 0 ] && sync; i=$((i+1)); done) &\n")
a.type("(i=0; while [ ! -e /tmp/stop ]; do echo line-$i; i=$((i+1)); sleep 0.1; done | nc 10.0.2.1 5000) &\n")
deadline = time.time() + 120
while lines() < 20:
    if time.time() > deadline:
        sys.exit("migrate-linux: the stream never reached the server")
    time.sleep(0.2)
before = lines()

b = Vmm("vmm-b", prefix=("ip", "netns", "exec", ns), who="migrate-linux")
b.call("PUT", "/migration/receive", {"receiver_url": "unix:/tmp/migrate.sock"})
progress = []
def watch():
    while a.p.poll() is None:
        try:
            progress.append(a.call("GET", "/migration"))
        except Exception:
            return
        time.sleep(0.5)
threading.Thread(target=watch, daemon=True).start()
t = time.time()
a.call("PUT", "/migration/send", {"destination_url": "unix:/tmp/migrate.sock", "downtime_ms": 300,
     "timeout_s": 600, "timeout_strategy": "force"})
took = time.time() - t
final = a.call("GET", "/migration") if a.p.poll() is None else (progress[-1] if progress else {})
status_a = a.p.wait(timeout=60)
print(f"\nmigrate-linux: migrated in {took:.1f} s; source exited {status_a}; last progress {json.dumps(final)}", flush=True)
for p in progress[-5:]:
    print(f"migrate-linux: progress {json.dumps(p)}", flush=True)
at_migration = lines()

deadline = time.time() + 180
while lines() < at_migration + 20:
    if time.time() > deadline:
        sys.exit(f"migrate-linux: the stream did not go on after the migration ({lines()} lines, {at_migration} at the migration)")
    time.sleep(0.2)
b.type("touch /tmp/stop; sleep 1; sync; n=$(wc -l < /mnt/loop.txt); last=$(tail -n 1 /mnt/loop.txt); "
       "[ $((last + 1)) -eq $n ] && echo loop-ok-$n; umount /mnt && echo migrated-$((60+6)) && sleep 1 && exit\n")
b.wait_for("migrated-66")
b.wait_for("reboot: Power down")
status_b = b.p.wait(timeout=120)
with seen_lock:
    print(f"\nmigrate-linux: server saw {json.dumps(seen)}; {before} lines before, {at_migration} at the migration", flush=True)
    ok = seen["connections"] == 1 and seen["gaps"] == 0 and seen["lines"] >= at_migration + 20
print(f"migrate-linux: destination exited {status_b}", flush=True)
sys.exit(0 if ok and status_a == 0 and status_b == 0 and "loop-ok-" in b.text() else 1)
