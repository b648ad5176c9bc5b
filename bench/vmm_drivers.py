"""The pieces bench's VM-state sections drive (bench/snapshot_bench.py, bench/migrate_bench.py): a
vireo-vmm over its API socket and a qemu-system-x86_64 -M microvm over QMP, each with its serial
console read on a thread, started the way bench/run starts the kit's guests.
"""
import json, os, select, signal, socket, subprocess, sys, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUESTS = os.path.join(ROOT, "guests", "build")
BUILD = os.path.join(ROOT, ".build", "vireo")
WORK = os.path.join(ROOT, ".build", "bench-vm")   # sockets, unless a section passes its own directory


def now():
    return time.perf_counter()


def fail(message):
    sys.exit(f"bench: {message}")


class Console:
    """A VMM's stdout (the guest's serial console), read on a thread so it never blocks the VMM; each
    read's host time is kept, so that when a byte arrived can be asked afterwards."""

    def __init__(self, stream):
        self._data = bytearray()
        self._arrivals = []   # (host time of a read, length of the data after it)
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream):
        # The reader runs as soon as a byte arrives, not when the scheduler next gets to it: on this
        # 2-CPU host a VMM's threads and a guest spinning in its vCPU often hold both CPUs, and a
        # reader woken behind them saw each byte 1 to 5 ms late (more than a restore's own time).
        # Real-time priority for this thread only; the VMM, started from another thread, keeps its own.
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        except OSError:
            pass  # not root: the times are later by the wake-ups
        while chunk := os.read(stream.fileno(), 65536):
            with self._cond:
                self._data += chunk
                self._arrivals.append((now(), len(self._data)))
                self._cond.notify_all()

    def arrival(self, text, last=False):
        """The host time the first (or last) `text` on the console was read, or None."""
        with self._cond:
            at = self._data.rfind(text.encode()) if last else self._data.find(text.encode())
            if at < 0:
                return None
            return next(t for t, end in self._arrivals if end > at)

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


def dechunk(body):
    """An HTTP/1.1 chunked body's bytes."""
    out = b""
    while True:
        size, _, body = body.partition(b"\r\n")
        n = int(size.split(b";")[0], 16)
        if n == 0:
            return out
        out, body = out + body[:n], body[n + 2:]


class VireoVmm:
    """A vireo-vmm process and its API socket (src/Vireo.VmmServer: Firecracker's API shape)."""

    def __init__(self, name, work=None, wrap=(), args=()):
        """`wrap`: a command to run vireo-vmm under (strace, perf), for a closer look at one run;
        `args`: more of vireo-vmm's options (--restore)."""
        work = work or WORK
        os.makedirs(work, exist_ok=True)
        self.sock = os.path.join(work, f"{name}.sock")
        if os.path.exists(self.sock):
            os.remove(self.sock)
        self.started = now()
        self.process = subprocess.Popen([*wrap, os.path.join(BUILD, "vireo-vmm"), "--api-sock", self.sock, *args],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.console = Console(self.process.stdout)
        self.listening = None
        self.wrapped = bool(wrap)

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
        if b"transfer-encoding: chunked" in head.lower():
            payload = dechunk(payload)
        return int(head.split(b" ", 2)[1]), payload.decode(errors="replace")

    def ok(self, method, path, body=None, raw=None):
        status, payload = self.call(method, path, body, raw)
        if status >= 300:
            fail(f"vireo-vmm {method} /{path.lstrip('/')}: {status} {payload}")

    def boot(self, mib, guest, boot_args=None, memory_backing=None):
        """Waits for the API, then configures one vCPU, `mib` MiB of RAM (memory_backing: Memfd,
        Anonymous, or vireo-vmm's default) and the kit guest `guest`, and starts it."""
        self.wait_listening()
        source = {"kernel_image_path": os.path.join(GUESTS, guest + ".elf")}
        if boot_args:
            source["boot_args"] = boot_args
        self.ok("PUT", "/boot-source", source)
        machine = {"vcpu_count": 1, "mem_size_mib": mib}
        if memory_backing:
            machine["memory_backing"] = memory_backing
        self.ok("PUT", "/machine-config", machine)
        self.ok("PUT", "/actions", {"action_type": "InstanceStart"})

    def get(self, path):
        """GET `path` as JSON (the socket must be listening)."""
        status, payload = self.call("GET", path)
        if status >= 300:
            fail(f"vireo-vmm GET {path}: {status} {payload}")
        return json.loads(payload)

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
            if self.wrapped:
                # strace leaves its tracee running when it is told to stop: tell vireo-vmm itself.
                try:
                    with open(f"/proc/{self.process.pid}/task/{self.process.pid}/children") as f:
                        for child in f.read().split():
                            os.kill(int(child), signal.SIGTERM)
                except (FileNotFoundError, ProcessLookupError):
                    pass
            else:
                self.process.terminate()
        self.process.wait(timeout=30)


class Qemu:
    """qemu-system-x86_64 -M microvm (as bench/run starts it) with a QMP socket; its console on stdio."""

    def __init__(self, name, mib, extra=(), guest="snapshot", append=None, work=None):
        work = work or WORK
        os.makedirs(work, exist_ok=True)
        self.qmp_path = os.path.join(work, f"{name}.qmp")
        if os.path.exists(self.qmp_path):
            os.remove(self.qmp_path)
        cmd = ["qemu-system-x86_64", "-M", "microvm,acpi=off,rtc=on", "-enable-kvm", "-cpu", "host,-arch-capabilities",
               "-m", f"{mib}M", "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
               "-kernel", os.path.join(GUESTS, guest + ".elf"), *(["-append", append] if append else []),
               "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-global", "virtio-mmio.force-legacy=false",
               "-qmp", f"unix:{self.qmp_path},server=on,wait=off", *extra]
        self.started = now()
        self.process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.console = Console(self.process.stdout)
        self.qmp = None
        self._buffer = b""
        self.events = []       # (host time read, message) of each event not yet waited for
        self.last_event = None  # the message wait_event last returned the time of

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
                self.last_event = m
                return at
        deadline = now() + timeout
        while True:
            m = self._message(max(0.001, deadline - now()))
            at = now()
            if "event" in m and m["event"] == name and accept(m.get("data", {})):
                self.last_event = m
                return at
            if "event" in m:
                self.events.append((at, m))

    @staticmethod
    def event_time(message):
        """An event's own timestamp (QEMU's wall clock, in microseconds), in seconds; None without one."""
        ts = (message or {}).get("timestamp")
        return ts["seconds"] + ts["microseconds"] / 1e6 if ts else None

    def type(self, text):
        self.process.stdin.write(text.encode())
        self.process.stdin.flush()

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=30)




def qemu_version():
    out = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout
    return out.split("version ", 1)[1].split()[0] if "version " in out else "?"
