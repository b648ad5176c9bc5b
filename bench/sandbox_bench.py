#!/usr/bin/env python3
"""What the sandbox costs: vireod with and without --sandbox, interleaved, on the same work.

  bench/sandbox_bench.py [--runs N]

For each run, one VM (the `hello` guest, 32 MiB) is started in each daemon: start is POST
/vms/NAME/start to its answer (the VMM spawned, in its jail or not, configured over its API, and
running); run to exit is from that answer until the daemon reports the VM shut off (the guest
prints and powers off; the VMM exits, vireod sees it and, when sandboxed, reaps it). And one
`idle` VM started and destroyed: destroy is POST /vms/NAME/destroy to its answer (SIGKILL and the
wait until the process is gone). Medians over the runs, and the sandboxed/unsandboxed ratio.
Target (issue 15): start-up and exit cost within 5% (ratio <= 1.05).
"""
import argparse, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from api_bench import UnixHTTP, call, GUESTS, BUILD  # noqa: E402


class Daemon:
    def __init__(self, sandbox):
        self.state = tempfile.mkdtemp(prefix="vireo-sandbox-bench-")
        self.sock = os.path.join(self.state, "vireod.sock")
        args = [os.path.join(BUILD, "vireod"), "--socket", self.sock, "--state", self.state, "--image-dir", GUESTS]
        self.proc = subprocess.Popen(args + (["--sandbox"] if sandbox else []), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while True:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(self.sock)
                s.close()
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit("sandbox_bench: vireod did not start")
                time.sleep(0.05)
        self.conn = UnixHTTP(self.sock)
        for name, guest in (("hello", "hello"), ("idle", "idle")):
            call(self.conn, "POST", "/vms", json.dumps({"name": name, "kernel": os.path.join(GUESTS, guest + ".elf"), "memory_mib": 32}))

    def state_of(self, name):
        _, data = call(self.conn, "GET", f"/vms/{name}")
        return json.loads(data)["state"]

    def once(self):
        t_start, _ = call(self.conn, "POST", "/vms/hello/start")
        begun = time.perf_counter()
        while self.state_of("hello") != "shut off":
            time.sleep(0.001)
        t_exit = time.perf_counter() - begun
        call(self.conn, "POST", "/vms/idle/start")
        time.sleep(0.05)
        t_destroy, _ = call(self.conn, "POST", "/vms/idle/destroy")
        return t_start, t_exit, t_destroy

    def close(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        shutil.rmtree(self.state, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    plain, jailed = Daemon(False), Daemon(True)
    try:
        results = {"plain": [], "jailed": []}
        plain.once(), jailed.once()  # warm-up: each daemon's first start reads the VMM's ELF, first requests
        for _ in range(args.runs):
            results["plain"].append(plain.once())
            results["jailed"].append(jailed.once())
    finally:
        plain.close()
        jailed.close()
    print(f"### Sandbox cost (`bench/sandbox_bench.py`, {args.runs} interleaved runs, medians, ms)\n")
    print("| step | unsandboxed | sandboxed | ratio | target ≤ 1.05 |")
    print("|---|---|---|---|---|")
    for i, label in enumerate(("start (POST start to running)", "run to exit (hello guest, until shut off)", "destroy (POST destroy to its answer)")):
        p = statistics.median(r[i] for r in results["plain"]) * 1000
        j = statistics.median(r[i] for r in results["jailed"]) * 1000
        print(f"| {label} | {p:.2f} | {j:.2f} | {j / p:.2f}x | {'yes' if j / p <= 1.05 else 'NO'} |")


if __name__ == "__main__":
    main()
