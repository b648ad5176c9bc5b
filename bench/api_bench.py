#!/usr/bin/env python3
"""The management plane under load: vireod's API latency and memory, beside libvirt's where it is installed.

  bench/api_bench.py [--started N] [--defined M] [--lists K]

Vireo: a fresh vireod on a temporary state directory, driven over its Unix socket with one
keep-alive connection (python's http.client), as a script or the CLI would.
  * create+start: POST /vms then POST /vms/NAME/start, for N VMs (the idle guest, 32 MiB), kept running;
  * define: POST /vms for the rest, up to M defined VMs;
  * list: GET /vms with M defined (N running), K times;
  * vireod's RSS (VmRSS and its peak VmHWM) with M defined and N running, and one VMM process's RSS.
libvirt, where virsh and libvirtd are installed: the same steps with `virsh define` / `start` /
`list --all` against a libvirtd started here (QEMU pc guests booting the same kernel). Each
virsh call is a new client process, so its start-up is included; the report gives that floor.
Prints a markdown table; bench/run --only api includes it in bench/results/latest.md.
"""
import argparse, http.client, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import footprint  # noqa: E402

GUESTS = os.path.join(ROOT, "guests", "build")
BUILD = os.path.join(ROOT, ".build", "vireo")


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("vireod")
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def call(conn, method, path, body=None):
    start = time.perf_counter()
    conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
    r = conn.getresponse()
    data = r.read()
    elapsed = time.perf_counter() - start
    if r.status >= 300:
        sys.exit(f"api_bench: {method} {path}: {r.status} {data.decode(errors='replace')}")
    return elapsed, data


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def pss_kib(pid):
    """Proportional set size: shared pages (the runtime, libraries) split among the processes sharing them."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


rss_kib = footprint.rss_kib


def start_vireod(build, state, sock, extra=()):
    """A vireod on `state`, once its socket accepts (30 s at most)."""
    daemon = subprocess.Popen([os.path.join(build, "vireod"), "--socket", sock, "--state", state, "--image-dir", GUESTS, *extra],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while True:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(sock)
            s.close()
            return daemon
        except OSError:
            if time.time() > deadline or daemon.poll() is not None:
                sys.exit("bench: vireod did not start")
            time.sleep(0.05)


def vireo(started, defined, lists, build=BUILD):
    state = tempfile.mkdtemp(prefix="vireo-api-bench-")
    sock = os.path.join(state, "vireod.sock")
    daemon = start_vireod(build, state, sock)
    try:
        conn = UnixHTTP(sock)
        kernel = os.path.join(GUESTS, "idle.elf")
        create_start, create_only = [], []
        for i in range(defined):
            body = json.dumps({"name": f"vm{i:03d}", "kernel": kernel, "memory_mib": 32})
            t1, _ = call(conn, "POST", "/vms", body)
            if i < started:
                t2, _ = call(conn, "POST", f"/vms/vm{i:03d}/start")
                create_start.append(t1 + t2)
            else:
                create_only.append(t1)
        listing = []
        for _ in range(lists):
            t, data = call(conn, "GET", "/vms")
            listing.append(t)
        vms = json.loads(data)
        assert len(vms) == defined and sum(v["state"] == "running" for v in vms) == started
        daemon_rss, daemon_hwm = rss_kib(daemon.pid), rss_kib(daemon.pid, "VmHWM")
        pids = [v["pid"] for v in vms if v["pid"]]
        vmm_rss = (statistics.median(rss_kib(p) for p in pids), statistics.median(pss_kib(p) for p in pids))
        # What one of those VMMs keeps resident, by kind: the median of each kind over ten of them.
        kinds = [footprint.breakdown(p, 32) for p in pids[:10]]
        vmm_kinds = {k: (statistics.median(x[k][0] for x in kinds), statistics.median(x[k][1] for x in kinds)) for k in footprint.KINDS}
        for i in range(started):
            call(conn, "POST", f"/vms/vm{i:03d}/destroy")
        return {"create+start": create_start, "define": create_only, "list": listing,
                "rss": (daemon_rss, daemon_hwm, vmm_rss), "kinds": vmm_kinds}
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
        shutil.rmtree(state, ignore_errors=True)


def libvirt(started, defined, lists):
    """The same steps through virsh against a libvirtd started here (qemu:///system, KVM)."""
    if not shutil.which("virsh") or not shutil.which("libvirtd"):
        return None
    # libvirtd runs QEMU as libvirt-qemu (group kvm): it needs virtlogd, and /dev/kvm open to that group.
    if os.stat("/dev/kvm").st_mode & 0o060 != 0o060:
        print("api_bench: chgrp kvm /dev/kvm; chmod 660 /dev/kvm (libvirt runs QEMU in group kvm)", file=sys.stderr)
        subprocess.run(["chgrp", "kvm", "/dev/kvm"], check=True)
        os.chmod("/dev/kvm", 0o660)
    subprocess.run(["virtlogd", "-d"], capture_output=True)
    subprocess.run(["pkill", "-x", "libvirtd"], capture_output=True)
    time.sleep(0.5)
    daemon = subprocess.Popen(["libvirtd"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while not os.path.exists("/run/libvirt/libvirt-sock") and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    kernel = os.path.join(GUESTS, "idle.elf")
    names = [f"lvbench{i:03d}" for i in range(defined)]

    def virsh(*args, stdin=None):
        start = time.perf_counter()
        r = subprocess.run(["virsh", "-q", "-c", "qemu:///system", *args], input=stdin, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if r.returncode != 0:
            raise RuntimeError(f"virsh {' '.join(args)}: {r.stderr.strip()}")
        return elapsed, r.stdout

    # libvirt 9 cannot drive QEMU's microvm (it wants a PCI bus): the pc machine, with no default devices that can be turned off.
    xml = """<domain type='kvm'><name>{name}</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>
      <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{kernel}</kernel></os>
      <cpu mode='host-passthrough'><feature policy='disable' name='arch-capabilities'/></cpu>
      <devices><emulator>/usr/bin/qemu-system-x86_64</emulator><memballoon model='none'/><controller type='usb' model='none'/></devices></domain>"""
    try:
        create_start, create_only, listing = [], [], []
        for i, name in enumerate(names):
            path = os.path.join(tempfile.gettempdir(), f"{name}.xml")
            with open(path, "w") as f:
                f.write(xml.format(name=name, kernel=kernel))
            t1, _ = virsh("define", path)
            if i < started:
                t2, _ = virsh("start", name)
                create_start.append(t1 + t2)
            else:
                create_only.append(t1)
        for _ in range(lists):
            t, _ = virsh("list", "--all")
            listing.append(t)
        # A virsh call that does nothing: its own start-up, to read the numbers above against.
        floor = statistics.median(virsh("version")[0] for _ in range(20))
        rss = rss_kib(daemon.pid)
        qemu_pids = subprocess.run(["pgrep", "-f", "guest=lvbench"], capture_output=True, text=True).stdout.split()
        qemu_rss = (statistics.median(rss_kib(int(p)) for p in qemu_pids), statistics.median(pss_kib(int(p)) for p in qemu_pids)) if qemu_pids else (0, 0)
        kinds = [footprint.breakdown(int(p), 32) for p in qemu_pids[:10]]
        qemu_kinds = {k: (statistics.median(x[k][0] for x in kinds), statistics.median(x[k][1] for x in kinds)) for k in footprint.KINDS} if kinds else None
        return {"create+start": create_start, "define": create_only, "list": listing, "rss": (rss, rss_kib(daemon.pid, "VmHWM"), qemu_rss),
                "floor": floor, "kinds": qemu_kinds}
    except RuntimeError as e:
        print(f"api_bench: libvirt side skipped: {e}", file=sys.stderr)
        return None
    finally:
        for name in names:
            subprocess.run(["virsh", "-q", "-c", "qemu:///system", "destroy", name], capture_output=True)
            subprocess.run(["virsh", "-q", "-c", "qemu:///system", "undefine", name], capture_output=True)
        daemon.terminate()
        daemon.wait(timeout=30)


def report(started, defined, lists, jit_build=None):
    v = vireo(started, defined, lists)
    j = vireo(started, defined, lists, jit_build) if jit_build else None
    lv = libvirt(started, defined, lists)
    title = (f"Management API: vireod over its Unix socket (one keep-alive connection), {started} VMs created and started "
             f"(idle guest, 32 MiB), {defined} defined, GET /vms {lists} times with {defined} defined; Vireo native "
             + ("and the same source on the JIT runtime (ReadyToRun), " if j else "") + "beside libvirt 9.0 driving QEMU")
    lines = [title, "", "| metric | Vireo | Vireo (JIT) | libvirt (virsh) | Vireo/libvirt | target | met |", "|---|---:|---:|---:|---:|---|---|"]

    def row(label, get, target=None, absolute=None, fmt="{:.1f}"):
        vv, jv, lvv = get(v), get(j) if j else None, get(lv) if lv else None
        ratio = f"{vv / lvv:.2f}" if lvv else "–"
        if absolute is not None:
            goal, met = f"<= {absolute} MiB", "yes" if vv <= absolute else "NO"
        elif target is not None:
            goal = f"<= {target:.2f} x libvirt"
            met = ("yes" if vv / lvv <= target else "NO") if lvv else "not measured"
        else:
            goal, met = "–", "–"
        lines.append(f"| {label} | {fmt.format(vv)} | " + (fmt.format(jv) if jv is not None else "–") + " | "
                     + (fmt.format(lvv) if lvv is not None else "–") + f" | {ratio} | {goal} | {met} |")

    for key, label, target in (("create+start", "create+start", 0.1), ("define", "define only", None), ("list", f"list, {defined} defined", None)):
        for p in (50, 99):
            row(f"{label} p{p} (ms)", lambda r, key=key, p=p: pct(r[key], p) * 1000, target if p == 50 else None)
    row(f"daemon RSS, {defined} defined, {started} running (MiB)", lambda r: r["rss"][0] / 1024, 1.0)
    row(f"daemon peak RSS (VmHWM, MiB)", lambda r: r["rss"][1] / 1024)
    row("one idle VM's VMM process RSS (MiB), median", lambda r: r["rss"][2][0] / 1024, 0.5)
    row(f"one idle VM's VMM process PSS (MiB), median ({started} VMMs share their pages)", lambda r: r["rss"][2][1] / 1024, absolute=8)
    row("the same PSS without the guest's own RAM (MiB)", lambda r: (r["rss"][2][1] - r["kinds"]["guest RAM"][1]) / 1024 if r["kinds"] else None, absolute=8)
    if lv:
        lines += ["", f"virsh timings include the virsh client's own start-up and connection: a `virsh version` takes {lv['floor'] * 1000:.1f} ms here."]
    else:
        lines += ["", "libvirt could not be run here, so only Vireo was measured."]
    lines += ["", f"What one idle VM's vireo-vmm keeps resident under vireod with {started} running, by kind (bench/footprint.py, "
              "medians over ten of them, KiB):", "", "| kind | RSS KiB | PSS KiB |" + (" JIT RSS KiB | JIT PSS KiB |" if j else ""),
              "|---|---:|---:|" + ("---:|---:|" if j else "")]
    for kind in footprint.KINDS:
        lines.append(f"| {kind} | {v['kinds'][kind][0]:.0f} | {v['kinds'][kind][1]:.0f} |"
                     + (f" {j['kinds'][kind][0]:.0f} | {j['kinds'][kind][1]:.0f} |" if j else ""))
    return lines


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--started", type=int, default=50)
    ap.add_argument("--defined", type=int, default=200)
    ap.add_argument("--lists", type=int, default=500)
    a = ap.parse_args()
    print("\n".join(report(a.started, a.defined, a.lists)))
