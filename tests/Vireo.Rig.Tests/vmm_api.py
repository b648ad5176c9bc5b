"""vireo-vmm's API from inside the rig, for snapshot-linux.py and migrate-linux.py: HTTP over its
Unix socket, and one vireo-vmm process with its console collected (and copied to stdout)."""
import http.client, json, os, socket, subprocess, sys, threading, time

VMM = ".build/vireo/vireo-vmm"

class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=600)
        self.path = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(600)
        self.sock.connect(self.path)

def call(sock, method, path, body=None, who="vmm"):
    """One request; exits naming it unless it answers 200 or 204; returns the JSON it answered, if any."""
    c = UnixHTTP(sock)
    data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    c.request(method, path, body=data, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    text = r.read().decode(errors="replace")
    if r.status not in (200, 204):
        sys.exit(f"{who}: {method} {path}: {r.status} {text}")
    return json.loads(text) if text else None

class Vmm:
    """A vireo-vmm on /tmp/NAME.sock (the rig's tmpfs: 9p holds no sockets), run under PREFIX."""
    def __init__(self, name, prefix=(), who="vmm"):
        self.sock, self.who = f"/tmp/{name}.sock", who
        self.out = bytearray()
        self.lock = threading.Lock()
        self.p = subprocess.Popen([*prefix, VMM, "--api-sock", self.sock], stdout=subprocess.PIPE)
        threading.Thread(target=self.read, daemon=True).start()
        # Until it accepts a connection: the socket's file appears at bind, a moment before listen
        # (under the rig's emulated CPU a connect in between is refused).
        for _ in range(1500):
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                    probe.connect(self.sock)
                return
            except (FileNotFoundError, ConnectionRefusedError):
                if self.p.poll() is not None:
                    break
                time.sleep(0.02)
        sys.exit(f"{who}: no API socket at {self.sock} (vmm exit {self.p.poll()})")
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
                sys.exit(f"{self.who}: no '{text}' (vmm exit {self.p.poll()})")
            time.sleep(0.1)
    def call(self, method, path, body=None):
        return call(self.sock, method, path, body, self.who)
    def type(self, line):
        self.call("PUT", "/console/input", line.encode())
