#!/usr/bin/env python3
"""Saving a running VM to files and bringing it back (issue 14): Vireo beside QEMU.

  bench/snapshot_bench.py [--runs N]      (bench/run --only snapshot includes it in bench/results/latest.md)

Both VMMs run the `snapshot` guest (guests/snapshot.c: a counter in RAM, the LAPIC timer ticking,
a console that answers `c` with count=N), 1 vCPU. Before each save the guest is asked for `c`
once (count=1) and paused; a restored guest is asked again and must say count=2.
  * Full snapshot: Vireo's PUT /snapshot/create on a paused vireo-vmm, request to response;
    QEMU's migration of a stopped VM to a file (QMP `stop`, then `migrate` to "exec:cat > FILE",
    QEMU 7.2 has no file: URI; bandwidth unlimited, as libvirt sets it for `virsh save`), command
    to the MIGRATION event that says completed (cat may still hold the pipe's last 64 KiB then).
    128 and 256 MiB, a fresh VM each time, then saved again at once (Vireo: the VM still paused;
    QEMU: `cont` and `stop` first, as a VM that has migrated may not migrate again).
  * Restore to running, 128 MiB: Vireo from the start of a fresh vireo-vmm to the response of
    PUT /snapshot/load with resume_vm (the API socket appearing on the way); QEMU from process
    start with `-incoming defer`: over QMP, migrate-incoming "exec:cat FILE", its completion, `cont`
    (the source was stopped, so the VM arrives paused), to query-status "running".
  * The files' sizes: apparent and allocated (Vireo's memory file is sparse).
Runs are interleaved, Vireo then QEMU, so that the host's drift hits both alike.

The pieces (a vireo-vmm driven over its API, a QEMU driven over QMP, each with its console) are
what a live-migration section would use too; they are kept apart from the measurements.
"""
import argparse, json, os, select, shutil, socket, statistics, subprocess, sys, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUESTS = os.path.join(ROOT, "guests", "build")
BUILD = os.path.join(ROOT, ".build", "vireo")
WORK = os.path.join(ROOT, ".build", "bench-snapshot")
GUEST = "snapshot"


def now():
    return time.perf_counter()


def fail(message):
    sys.exit(f"snapshot_bench: {message}")


class Console:
    """A VMM's stdout (the guest's serial console), read on a thread so it never blocks the VMM."""

    def __init__(self, stream):
        self._data = bytearray()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream):
        while chunk := os.read(stream.fileno(), 65536):
            with self._cond:
                self._data += chunk
                self._cond.notify_all()

    def text(self):
        with self._cond:
            return self._data.decode(errors="replace")

    def wait_for(self, text, timeout=20, what="the guest"):
        """Waits until the console has said `text`; returns the time it was seen."""
        deadline = now() + timeout
        needle = text.encode()
        with self._cond:
            while needle not in self._data:
                left = deadline - now()
                if left <= 0:
                    fail(f"{what}: no '{text}' on the console within {timeout} s; it said:\n{self._data.decode(errors='replace')}")
                self._cond.wait(left)
        return now()


def connect_when_listening(path, process, timeout=20, what="VMM"):
    """Connects to a Unix socket as soon as it accepts, polling every 0.2 ms (the wait is what is measured)."""
    deadline = now() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
        if process.poll() is not None:
            fail(f"{what} exited ({process.returncode}) before it listened on {path}")
        if now() > deadline:
            fail(f"{what} did not listen on {path} within {timeout} s")
        time.sleep(0.0002)


class VireoVmm:
    """A vireo-vmm process and its API socket (src/Vireo.VmmServer: Firecracker's API shape)."""

    def __init__(self, name):
        os.makedirs(WORK, exist_ok=True)
        self.sock = os.path.join(WORK, f"{name}.sock")
        if os.path.exists(self.sock):
            os.remove(self.sock)
        self.started = now()
        self.process = subprocess.Popen([os.path.join(BUILD, "vireo-vmm"), "--api-sock", self.sock],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.console = Console(self.process.stdout)
        self.listening = None

    def wait_listening(self):
        """Seconds from process start until the API accepts a connection."""
        connect_when_listening(self.sock, self.process, what="vireo-vmm").close()
        self.listening = now()
        return self.listening - self.started

    def call(self, method, path, body=None, raw=None):
        """One request on its own connection; returns (status, body). The socket must be listening."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.sock)
        data = raw if raw is not None else json.dumps(body).encode() if body is not None else b""
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: vm\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
        s.close()
        head, _, payload = reply.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), payload.decode(errors="replace")

    def ok(self, method, path, body=None, raw=None):
        status, payload = self.call(method, path, body, raw)
        if status >= 300:
            fail(f"vireo-vmm {method} /{path.lstrip('/')}: {status} {payload}")

    def boot(self, mib):
        self.wait_listening()
        self.ok("PUT", "/boot-source", {"kernel_image_path": os.path.join(GUESTS, GUEST + ".elf")})
        self.ok("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": mib})
        self.ok("PUT", "/actions", {"action_type": "InstanceStart"})

    def type(self, text):
        self.ok("PUT", "/console/input", raw=text.encode())

    def pause(self):
        self.ok("PATCH", "/vm", {"state": "Paused"})

    def save(self, state, memory):
        self.ok("PUT", "/snapshot/create", {"snapshot_type": "Full", "snapshot_path": state, "mem_file_path": memory})

    def load(self, state, memory, resume=True):
        self.ok("PUT", "/snapshot/load", {"snapshot_path": state, "mem_backend": {"backend_type": "File", "backend_path": memory},
                                          "resume_vm": resume})

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=30)


class Qemu:
    """qemu-system-x86_64 -M microvm (as bench/run starts it) with a QMP socket; its console on stdio."""

    def __init__(self, name, mib, extra=()):
        os.makedirs(WORK, exist_ok=True)
        self.qmp_path = os.path.join(WORK, f"{name}.qmp")
        if os.path.exists(self.qmp_path):
            os.remove(self.qmp_path)
        cmd = ["qemu-system-x86_64", "-M", "microvm,acpi=off,rtc=on", "-enable-kvm", "-cpu", "host,-arch-capabilities",
               "-m", f"{mib}M", "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
               "-kernel", os.path.join(GUESTS, GUEST + ".elf"),
               "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-global", "virtio-mmio.force-legacy=false",
               "-qmp", f"unix:{self.qmp_path},server=on,wait=off", *extra]
        self.started = now()
        self.process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.console = Console(self.process.stdout)
        self.qmp = None
        self._buffer = b""
        self.events = []

    def connect(self):
        """Connects to QMP and leaves negotiation mode; returns seconds from process start to the monitor's greeting."""
        self.qmp = connect_when_listening(self.qmp_path, self.process, what="QEMU")
        self._message()  # the greeting
        at = now()
        self.execute("qmp_capabilities")
        return at - self.started

    def _message(self, timeout=60):
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([self.qmp], [], [], timeout)
            if not ready:
                fail(f"QEMU: QMP said nothing for {timeout} s")
            chunk = self.qmp.recv(65536)
            if not chunk:
                fail(f"QEMU: QMP closed; the console said:\n{self.console.text()}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def execute(self, command, arguments=None, retry_while=None):
        """Runs a QMP command and returns its result; events that arrive meanwhile are kept in self.events.
        An error whose description contains `retry_while` is retried, every millisecond, for up to a second."""
        for _ in range(1000):
            result = self._execute(command, arguments)
            if not (retry_while and isinstance(result, Exception) and retry_while in str(result)):
                break
            time.sleep(0.001)
        if isinstance(result, Exception):
            fail(f"QEMU: {command}: {result}")
        return result

    def _execute(self, command, arguments):
        message = {"execute": command, **({"arguments": arguments} if arguments else {})}
        self.qmp.sendall(json.dumps(message).encode() + b"\n")
        while True:
            m = self._message()
            if "event" in m:
                self.events.append((now(), m))
            elif "error" in m:
                return RuntimeError(m["error"])
            elif "return" in m:
                return m["return"]

    def wait_event(self, name, accept=lambda data: True, timeout=60):
        """The time at which an event named `name` whose data `accept`s arrived (an earlier one kept counts)."""
        for i, (at, m) in enumerate(self.events):
            if m["event"] == name and accept(m.get("data", {})):
                del self.events[i]
                return at
        deadline = now() + timeout
        while True:
            m = self._message(max(0.001, deadline - now()))
            at = now()
            if "event" in m and m["event"] == name and accept(m.get("data", {})):
                return at
            if "event" in m:
                self.events.append((at, m))

    def type(self, text):
        self.process.stdin.write(text.encode())
        self.process.stdin.flush()

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=30)


def sizes(path):
    st = os.stat(path)
    return st.st_size, st.st_blocks * 512


def fresh(*paths):
    for p in paths:
        if os.path.exists(p):
            os.remove(p)


# --- Full snapshot -------------------------------------------------------------------------

def vireo_create(mib, state, memory):
    """Boots the guest on a fresh vireo-vmm, counts once, pauses, saves, and saves again (to files of
    their own, then removed). Returns seconds for each PUT /snapshot/create: (first, again)."""
    fresh(state, memory)
    vmm = VireoVmm("source")
    try:
        vmm.boot(mib)
        vmm.console.wait_for("snapshot: up", what="vireo-vmm")
        vmm.type("c\n")
        vmm.console.wait_for("count=1", what="vireo-vmm")
        vmm.pause()
        start = now()
        vmm.save(state, memory)
        first = now() - start
        again_state, again_memory = state + ".again", memory + ".again"
        fresh(again_state, again_memory)
        start = now()
        vmm.save(again_state, again_memory)
        again = now() - start
        fresh(again_state, again_memory)
        return first, again
    finally:
        vmm.stop()


def qemu_create(mib, stream):
    """The same on QEMU: stopped, then migrated to a file, and again. Returns seconds from `migrate` to
    its completion: (first, again)."""
    fresh(stream)
    vm = Qemu("source", mib)
    try:
        vm.connect()
        vm.console.wait_for("snapshot: up", what="QEMU")
        vm.type("c\n")
        vm.console.wait_for("count=1", what="QEMU")
        vm.execute("stop")
        vm.execute("migrate-set-capabilities", {"capabilities": [{"capability": "events", "state": True}]})
        vm.execute("migrate-set-parameters", {"max-bandwidth": 1 << 40})  # libvirt's "unlimited" for virsh save
        times = []
        for path in (stream, stream + ".again"):
            fresh(path)
            if times:
                # A VM that has migrated stays "postmigrate" and may not migrate again: run it, stop it.
                vm.execute("cont", retry_while="not finalized")
                vm.execute("stop")
            start = now()
            # Right after the completed event QEMU may still be tearing the last migration down.
            vm.execute("migrate", {"uri": f"exec:cat > {path}"}, retry_while="duplicate yank instance")
            done = vm.wait_event("MIGRATION", lambda d: d.get("status") in ("completed", "failed", "cancelled"))
            status = vm.execute("query-migrate")
            if status.get("status") != "completed":
                fail(f"QEMU: migration to {path} ended {status}")
            times.append(done - start)
        fresh(stream + ".again")
        return tuple(times)
    finally:
        vm.stop()


# --- Restore to running ----------------------------------------------------------------------

def vireo_restore(state, memory):
    """A fresh vireo-vmm loads and resumes the snapshot. Returns seconds from process start to the API
    listening, to PUT /snapshot/load answered, and to the restored guest's count=2 on its console
    (asked for over PUT /console/input at once)."""
    vmm = VireoVmm("restore")
    try:
        listening = vmm.wait_listening()
        vmm.load(state, memory, resume=True)
        running = now() - vmm.started
        vmm.type("c\n")
        answered = vmm.console.wait_for("count=2", what="restored vireo-vmm") - vmm.started
        return listening, running, answered
    finally:
        vmm.stop()


def qemu_restore(mib, stream):
    """QEMU started with -incoming defer, then told over QMP to take the file (migrate-incoming
    "exec:cat FILE") and, once that has completed, to `cont`: the source was stopped, so the VM
    arrives paused. Returns (process start to QMP's greeting, to query-status "running"), once the
    restored guest has answered count=2 (asked for on its stdin at once), and to that answer."""
    vm = Qemu("restore", mib, ["-incoming", "defer"])
    try:
        monitor = vm.connect()
        vm.execute("migrate-set-capabilities", {"capabilities": [{"capability": "events", "state": True}]})
        vm.execute("migrate-incoming", {"uri": f"exec:cat {stream}"})
        vm.wait_event("MIGRATION", lambda d: d.get("status") in ("completed", "failed"))
        vm.execute("cont")
        status = vm.execute("query-status")["status"]
        running = now() - vm.started
        if status != "running":
            fail(f"QEMU: restored from {stream} and continued, but query-status says {status}")
        vm.type("c\n")
        answered = vm.console.wait_for("count=2", what="restored QEMU") - vm.started
        return monitor, running, answered
    finally:
        vm.stop()


# --- The section -------------------------------------------------------------------------------

def measure(runs):
    load = os.getloadavg()[0]
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    files = {mib: {"state": os.path.join(WORK, f"vireo-{mib}.snap"), "memory": os.path.join(WORK, f"vireo-{mib}.mem"),
                   "stream": os.path.join(WORK, f"qemu-{mib}.mig")} for mib in (128, 256)}
    create = {(vmm, mib): [] for vmm in ("vireo", "qemu") for mib in (128, 256)}
    for _ in range(runs):
        for mib in (128, 256):
            f = files[mib]
            create[("vireo", mib)].append(vireo_create(mib, f["state"], f["memory"]))
            create[("qemu", mib)].append(qemu_create(mib, f["stream"]))
    restore = {"vireo": [], "qemu": []}
    f = files[128]
    for _ in range(runs):
        restore["vireo"].append(vireo_restore(f["state"], f["memory"]))
        restore["qemu"].append(qemu_restore(128, f["stream"]))
    file_sizes = {mib: {k: sizes(p) for k, p in f.items()} for mib, f in files.items()}
    return create, restore, file_sizes, (load, os.getloadavg()[0])


def report(runs):
    create, restore, file_sizes, load = measure(runs)
    med = statistics.median
    ms = lambda xs: med(xs) * 1000
    mib = lambda b: b / (1 << 20)

    def row(metric, v, q, target=None, fmt="{:.1f}"):
        met = "–" if target is None else "yes" if v <= target else "NO"
        return (f"| {metric} | {fmt.format(v)} | {fmt.format(q)} | {v / q:.2f} | "
                + (f"<= {target:g}" if target is not None else "–") + f" | {met} |")

    vr = [r[1] for r in restore["vireo"]]
    qr = [r[1] for r in restore["qemu"]]
    lines = [
        f"Snapshots: the snapshot guest (1 vCPU) on vireo-vmm beside QEMU {qemu_version()} -M microvm, medians of {runs} "
        f"interleaved runs, {time.strftime('%Y-%m-%d')}. Save: Vireo's PUT /snapshot/create on a paused VM, QEMU's migrate "
        f"of a stopped VM to \"exec:cat > FILE\". Restore: process start to running (Vireo: PUT /snapshot/load with "
        f"resume_vm answered; QEMU: -incoming defer, migrate-incoming \"exec:cat FILE\", cont, until query-status says running); each restored guest "
        f"then answered count=2 on its console. Host load average {load[0]:.1f} at the start, {load[1]:.1f} at the end.",
        "",
        "| metric | Vireo | QEMU | Vireo/QEMU | target | met |",
        "|---|---:|---:|---:|---|---|",
        row("Full snapshot, 256 MiB (ms)", ms([c[0] for c in create[("vireo", 256)]]), ms([c[0] for c in create[("qemu", 256)]]), 90),
        row("Full snapshot, 128 MiB (ms)", ms([c[0] for c in create[("vireo", 128)]]), ms([c[0] for c in create[("qemu", 128)]])),
        row("... the same VM saved again at once, 256 MiB (ms)", ms([c[1] for c in create[("vireo", 256)]]), ms([c[1] for c in create[("qemu", 256)]])),
        row("... the same VM saved again at once, 128 MiB (ms)", ms([c[1] for c in create[("vireo", 128)]]), ms([c[1] for c in create[("qemu", 128)]])),
        row("restore, 128 MiB: process start to running (ms)", ms(vr), ms(qr), 10),
        row("... of which process start to API socket / QMP greeting (ms)",
            ms([r[0] for r in restore["vireo"]]), ms([r[0] for r in restore["qemu"]])),
        row("... and from there: PUT /snapshot/load / capabilities, migrate-incoming, cont (ms)",
            ms([r[1] - r[0] for r in restore["vireo"]]), ms([r[1] - r[0] for r in restore["qemu"]])),
        row("restore, slowest of the runs (ms)", max(vr) * 1000, max(qr) * 1000),
        row("process start to the restored guest's answer to `c` on its console (ms)",
            ms([r[2] for r in restore["vireo"]]), ms([r[2] for r in restore["qemu"]])),
    ]
    for m in (128, 256):
        s = file_sizes[m]
        v_app, v_alloc = s["memory"][0] + s["state"][0], s["memory"][1] + s["state"][1]
        q_app, q_alloc = s["stream"]
        lines.append(f"| files, {m} MiB guest: apparent size (MiB) | {mib(v_app):.1f} | {mib(q_app):.1f} | {v_app / q_app:.2f} | – | – |")
        lines.append(f"| files, {m} MiB guest: allocated on disk (MiB) | {mib(v_alloc):.1f} | {mib(q_alloc):.1f} | {v_alloc / q_alloc:.2f} | – | – |")
    s = file_sizes[128]
    lines += ["", f"Vireo writes two files: the memory file (128 MiB guest: {mib(s['memory'][0]):.1f} MiB apparent, "
              f"{mib(s['memory'][1]):.2f} MiB allocated; sparse where the guest's RAM is zero) and the state file "
              f"({s['state'][0] / 1024:.1f} KiB). QEMU writes one migration stream (zero pages as a flag each, no holes)."]
    return lines


def qemu_version():
    out = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout
    return out.split("version ", 1)[1].split()[0] if "version " in out else "?"


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=11)
    print("\n".join(report(ap.parse_args().runs)))
