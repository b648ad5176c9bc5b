#!/usr/bin/env python3
"""What the sandbox costs: vireod with and without --sandbox, interleaved, on the same work.

  bench/sandbox_bench.py [--runs N]

For each run, one VM (the `hello` guest, 32 MiB) is started in each daemon: start is POST
/vms/NAME/start to its answer (the VMM spawned, in its jail or not, configured over its API, and
running); run to exit is from that answer until the VMM process has exited (the guest prints and
powers off, the VMM ends its threads and exits; a sandboxed one's namespaces go with it), seen by
polling /proc every 0.2 ms (vireod's own poller looks every 100 ms, which would hide the rest). And one
`idle` VM started and destroyed: destroy is POST /vms/NAME/destroy to its answer (SIGKILL and the
wait until the process is gone). Medians over the runs, and the sandboxed/unsandboxed ratio.
Target (issue 15): start-up and exit cost within 5% (ratio <= 1.05).
"""
import argparse, json, os, shutil, signal, statistics, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from api_bench import UnixHTTP, call, start_vireod, GUESTS, BUILD  # noqa: E402


def exited(pid):
    """True once the process has exited (a zombie, or reaped already)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


class Daemon:
    def __init__(self, sandbox):
        self.state = tempfile.mkdtemp(prefix="vireo-sandbox-bench-")
        self.sock = os.path.join(self.state, "vireod.sock")
        self.proc = start_vireod(BUILD, self.state, self.sock, ["--sandbox"] if sandbox else ["--no-sandbox"])
        self.conn = UnixHTTP(self.sock)
        for name, guest in (("hello", "hello"), ("idle", "idle")):
            call(self.conn, "POST", "/vms", json.dumps({"name": name, "kernel": os.path.join(GUESTS, guest + ".elf"), "memory_mib": 32}))

    def state_of(self, name):
        _, data = call(self.conn, "GET", f"/vms/{name}")
        return json.loads(data)["state"]

    def once(self):
        t_start, data = call(self.conn, "POST", "/vms/hello/start")
        begun = time.perf_counter()
        pid = json.loads(data)["pid"]
        while exited(pid) is False:
            time.sleep(0.0002)
        t_exit = time.perf_counter() - begun
        while self.state_of("hello") != "shut off":
            time.sleep(0.005)
        call(self.conn, "POST", "/vms/idle/start")
        time.sleep(0.05)
        t_destroy, _ = call(self.conn, "POST", "/vms/idle/destroy")
        return t_start, t_exit, t_destroy

    def close(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        shutil.rmtree(self.state, ignore_errors=True)


def report(runs):
    """The table's lines: each step's median over `runs` interleaved runs, unsandboxed and sandboxed."""
    plain, jailed = Daemon(False), Daemon(True)
    try:
        results = {"plain": [], "jailed": []}
        plain.once(), jailed.once()  # warm-up: each daemon's first start reads the VMM's ELF, first requests
        for _ in range(runs):
            results["plain"].append(plain.once())
            results["jailed"].append(jailed.once())
    finally:
        plain.close()
        jailed.close()
    lines = [f"### Sandbox cost (`bench/run --only sandbox`, vireod with and without `--sandbox`, {runs} interleaved runs, medians, ms)", "",
             "| step | unsandboxed | sandboxed | ratio | target <= 1.05 |", "|---|---:|---:|---:|---|"]
    for i, label in enumerate(("start (POST start to running)", "run to exit (hello guest, until the VMM has exited)", "destroy (POST destroy to its answer)")):
        p = statistics.median(r[i] for r in results["plain"]) * 1000
        j = statistics.median(r[i] for r in results["jailed"]) * 1000
        lines.append(f"| {label} | {p:.2f} | {j:.2f} | {j / p:.2f} | {'yes' if j / p <= 1.05 else 'NO'} |")
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=25)
    print("\n".join(report(ap.parse_args().runs)))


if __name__ == "__main__":
    main()
