#!/usr/bin/env python3
"""Live migration: Vireo beside QEMU, both on this host, source and destination alike.

  bench/migrate_bench.py [--runs N]      (bench/run --only migrate includes it in bench/results/latest.md)

Cases, 1 vCPU each, interleaved run by run (Vireo then QEMU, case by case) so drift hits both alike:
  * idle: the `idle` guest (halted for good), 1 GiB, over tcp:127.0.0.1.
  * console: the `snapshot` guest (guests/snapshot.c: it spins at CPL3 polling its console, the
    LAPIC timer ticks; it writes next to no RAM), 1 GiB, over tcp:. Asked for `c` once before
    (count=1), then for `p`: a '.' on its console each 100 µs of its time. The pause the guest
    saw is the host time from the source's last '.' to the destination's first (the same yardstick
    for both VMMs, whatever each counts as its downtime; 0.1 ms of resolution). At the destination it
    is asked for `c` once it runs and must say count=2.
  * dirty: the `dirty` guest (guests/dirty.c: one byte in each 4 KiB page of a 64 MiB working
    set, at most 25 pages a millisecond, about 100 MiB/s), 1 GiB, over tcp:, from its second
    heartbeat; the destination must print two heartbeats (the second, a whole second there).
  * local live upgrade: the `idle` guest, 4 GiB, over unix:. Vireo: RAM on a memfd (machine-config
    memory_backing Memfd) and `local: true`, so the memfd is handed over, not copied. QEMU 7.2:
    RAM in a shared file in /dev/shm (memory-backend-file share=on, -machine memory-backend) on
    both sides and the x-ignore-shared capability.
Then the local cases once on the `snapshot` guest, which must say count=2 at the destination: Vireo,
QEMU with the shared file, and QEMU with memory-backend-memfd share=on (each QEMU has a memfd of its
own, so its RAM cannot come across; the report says what the guest said).
Vireo: a fresh vireo-vmm told PUT /migration/receive, then the source's PUT /migration/send
{downtime_ms 300, timeout_strategy cancel}; total = that request to its answer; downtime_ms, round
and bytes_sent from the source's GET /migration right after. QEMU: the destination started with
`-incoming defer` and told migrate-incoming; on the source migrate-set-parameters downtime-limit
300 and max-bandwidth unlimited (QEMU's default is 32 MiB/s), `migrate`; total = the command to the
MIGRATION event that says completed; downtime from the timestamps QEMU puts on its STOP and
MIGRATION completed events (microseconds; query-migrate's downtime is the same span in whole ms);
total-time, dirty-sync-count and ram.transferred from query-migrate. A migration not converged in TIMEOUT_S is cancelled and counted as not
converged. Every run's figures go to .build/bench-migrate/runs.json.
"""
import argparse, json, os, re, shutil, socket, statistics, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# bench/vmm_drivers.py: VireoVmm over its API, Qemu over QMP, their consoles (shared with snapshot_bench)
from vmm_drivers import ROOT, VireoVmm, Qemu, fail, now, qemu_version  # noqa: E402

WORK = os.path.join(ROOT, ".build", "bench-migrate")
SHM = "/dev/shm/vireo-bench-migrate.ram"   # QEMU's shared RAM file for the local case
DOWNTIME_MS = 300
TIMEOUT_S = 60
DIRTY_ARGS = "mib=64 rate=25"

CASES = {
    # name: (guest, MiB, kernel command line, what its console says once it is ready, local)
    "idle": ("idle", 1024, None, "idle: up", False),
    "console": ("snapshot", 1024, None, "snapshot: up", False),
    "dirty": ("dirty", 1024, DIRTY_ARGS, "dirty: beat 2,", False),
    "local": ("idle", 4096, None, "idle: up", True),
    "local-console": ("snapshot", 4096, None, "snapshot: up", True),   # once, to see the RAM come across
}
RUNS = ("idle", "console", "dirty", "local")   # each run, interleaved


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def dirty_rate(text):
    """Pages the dirty guest wrote in its last full second of heartbeats on this console, or None."""
    beats = re.findall(r"dirty: beat \d+, (\d+) pages in it", text)
    return int(beats[-1]) if beats else None


def before(vm, guest, ready_text, what):
    """Waits for the guest on the source; the snapshot guest counts once (count=1). Returns the dirty
    guest's pages in its last second, else None."""
    vm.console.wait_for(ready_text, timeout=30, what=what)
    if guest == "snapshot":
        vm.type("c\n")
        vm.console.wait_for("count=1", what=what)
        vm.type("p\n")   # a heartbeat each 100 µs, for the pause it sees
        vm.console.wait_for("beating", timeout=30, what=what)
        vm.console.wait_for("..", what=what)
    return dirty_rate(vm.console.text()) if guest == "dirty" else None


def after(result, guest, start, is_running, vm, what, strict=True):
    """Once the source has said done: waits until the destination says its VM runs (running_ms, from
    the source's answer), then proves the guest there: the snapshot guest, asked for `c`, must say
    count=2 (answer_ms, from the source's answer); the dirty guest must print two heartbeats (the
    second a whole second there: rate_after). Not strict: what the guest said instead goes in `said`."""
    deadline = now() + 20
    while not is_running():
        if now() > deadline:
            fail(f"{what}: its VM is not running 20 s after the source said done")
        time.sleep(0.0005)
    done = start + result["total"] / 1000
    result["running_ms"] = (now() - done) * 1000
    if guest == "snapshot":
        try:
            vm.console.wait_for(".", timeout=20 if strict else 3, what=what)
            first = vm.console.arrival(".")   # when it was read, not when this thread woke to look
        except SystemExit:
            if strict:
                raise
            first = None
        last = result.pop("source_last_beat", None)
        result["seen_pause"] = (first - last) * 1000 if first and last else None
        seen = len(vm.console.text())
        vm.type("c\n")
        try:
            result["answer_ms"] = (vm.console.wait_for("count=2", timeout=20 if strict else 3, what=what) - done) * 1000
        except SystemExit:
            if strict:
                raise
            result["said"] = " ".join(vm.console.text()[seen:].split())
    elif guest == "dirty":
        while len(re.findall(r"dirty: beat \d+, \d+ pages", vm.console.text())) < 2:
            if now() > deadline:
                fail(f"{what}: fewer than two heartbeats within 20 s; it said:\n{vm.console.text()}")
            time.sleep(0.05)
        result["rate_after"] = dirty_rate(vm.console.text())


# --- Vireo -----------------------------------------------------------------------------------

def vireo_migrate(case, wrap_source=(), wrap_destination=(), strict=True):
    """One migration between two fresh vireo-vmm processes; returns its figures (ms, bytes)."""
    guest, mib, args, ready_text, local = CASES[case]
    src = VireoVmm("source", WORK, wrap_source)
    dst = VireoVmm("destination", WORK, wrap_destination)
    try:
        src.boot(mib, guest, args, memory_backing="Memfd" if local else None)
        rate = before(src, guest, ready_text, "vireo-vmm source")
        dst.wait_listening()
        url = f"unix:{os.path.join(WORK, 'migration.sock')}" if local else f"tcp:127.0.0.1:{free_port()}"
        dst.ok("PUT", "/migration/receive", {"receiver_url": url})
        start = now()
        status, body = src.call("PUT", "/migration/send", {"destination_url": url, "downtime_ms": DOWNTIME_MS,
                                                          "timeout_s": TIMEOUT_S, "timeout_strategy": "cancel", "local": local})
        total = now() - start
        try:
            info = src.get("/migration")   # the source ends once its VM has gone, but answers this first
        except (OSError, ValueError, IndexError):
            info = {}
        result = {"total": total * 1000, "downtime": info.get("downtime_ms"), "downtime_precise": info.get("downtime_ms"), "rounds": info.get("round"),
                  "bytes": info.get("bytes_sent"), "rate_before": rate, "converged": status == 204,
                  "rate_mib_s": info.get("rate_mib_s"), "expected_downtime_ms": info.get("expected_downtime_ms")}
        if status != 204:
            result["error"] = body
            return result
        if guest == "snapshot":
            result["source_last_beat"] = src.console.arrival(".", last=True)
        # The source answers once it has sent the commit; the destination says Running once it has read it.
        after(result, guest, start, lambda: dst.get("/vm")["state"] == "Running", dst, "vireo-vmm destination", strict)
        src.process.wait(timeout=30)
        if src.process.returncode != 0:
            fail(f"vireo-vmm source exited {src.process.returncode} after migrating")
        return result
    finally:
        src.stop()
        dst.stop()


# --- QEMU --------------------------------------------------------------------------------------

def qemu_memory(mib, local, backend="file"):
    if not local:
        return []
    if backend == "memfd":
        return ["-object", f"memory-backend-memfd,id=ram,size={mib}M,share=on", "-machine", "memory-backend=ram"]
    return ["-object", f"memory-backend-file,id=ram,size={mib}M,share=on,mem-path={SHM}", "-machine", "memory-backend=ram"]


def qemu_migrate(case, backend="file", strict=True):
    """One migration between two QEMU processes (the destination -incoming defer); returns its figures."""
    guest, mib, args, ready_text, local = CASES[case]
    if local and os.path.exists(SHM):
        os.remove(SHM)
    src = Qemu("source", mib, qemu_memory(mib, local, backend), guest=guest, append=args, work=WORK)
    dst = None
    try:
        src.connect()
        rate = before(src, guest, ready_text, "QEMU source")
        # The destination after the source: with a shared file, the source made it and has the guest in it.
        dst = Qemu("destination", mib, qemu_memory(mib, local, backend) + ["-incoming", "defer"], guest=guest, append=args, work=WORK)
        dst.connect()
        caps = [{"capability": "events", "state": True}] + ([{"capability": "x-ignore-shared", "state": True}] if local else [])
        for vm in (src, dst):
            vm.execute("migrate-set-capabilities", {"capabilities": caps})
        uri = f"unix:{os.path.join(WORK, 'migration.sock')}" if local else f"tcp:127.0.0.1:{free_port()}"
        dst.execute("migrate-incoming", {"uri": uri})
        src.execute("migrate-set-parameters", {"downtime-limit": DOWNTIME_MS, "max-bandwidth": 1 << 40})
        start = now()
        src.execute("migrate", {"uri": uri})
        try:
            done = src.wait_event("MIGRATION", lambda d: d.get("status") in ("completed", "failed", "cancelled"), timeout=TIMEOUT_S)
        except SystemExit:
            done = None
        q = src.execute("query-migrate")
        # Right after the completed event QEMU 7.2 may still say total-time 0 and downtime 0: it sets the state
        # first and works the times out after. Ask again until total-time is there (a second at most).
        for _ in range(1000):
            if q.get("status") != "completed" or q.get("total-time"):
                break
            time.sleep(0.001)
            q = src.execute("query-migrate")
        ram = q.get("ram", {})
        if q.get("status") == "completed" and not q.get("total-time"):
            q["downtime"] = None   # never filled in: unknown, not 0
        if q.get("status") != "completed":
            src.execute("migrate_cancel")
            return {"total": (now() - start) * 1000, "downtime": None, "rounds": ram.get("dirty-sync-count"),
                    "bytes": ram.get("transferred"), "rate_before": rate, "converged": False, "error": json.dumps(q)}
        # QEMU's downtime to the microsecond: its two ends are the source's STOP event (vm_stop at the start of
        # the completion) and the MIGRATION completed event, each stamped by QEMU; query-migrate's figure is
        # the same span in whole milliseconds, the difference of two truncated millisecond clocks.
        stop = next((m for _, m in src.events if m["event"] == "STOP"), None)
        stopped, completed = Qemu.event_time(stop), Qemu.event_time(src.last_event)
        result = {"total": (done - start) * 1000, "qemu_total": q.get("total-time"), "downtime": q.get("downtime"),
                  "downtime_precise": (completed - stopped) * 1000 if stopped and completed else None,
                  "rounds": ram.get("dirty-sync-count"), "bytes": ram.get("transferred"), "rate_before": rate, "converged": True}
        if guest == "snapshot":
            result["source_last_beat"] = src.console.arrival(".", last=True)
        # Typed while the destination still loads, a line can be lost in its UART (one byte, no FIFO): wait for running.
        after(result, guest, start, lambda: dst.execute("query-status")["status"] == "running", dst, "QEMU destination", strict)
        return result
    finally:
        src.stop()
        if dst:
            dst.stop()
        if os.path.exists(SHM):
            os.remove(SHM)


def local_checks():
    """The local cases once more on the snapshot guest (4 GiB), which must say count=2 at the
    destination: Vireo's memfd handed over, QEMU's shared file, and QEMU with a memfd backend on
    both sides (each QEMU has its own, so the RAM cannot come across). Returns [(what, result)]."""
    return [("Vireo, memfd handed over (local: true)", vireo_migrate("local-console", strict=False)),
            ("QEMU, memory-backend-file share=on in /dev/shm, x-ignore-shared", qemu_migrate("local-console", strict=False)),
            ("QEMU, memory-backend-memfd share=on, x-ignore-shared", qemu_migrate("local-console", "memfd", strict=False))]


# --- The section -------------------------------------------------------------------------------

def measure(runs):
    load = os.getloadavg()[0]
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    results = {(vmm, case): [] for case in RUNS for vmm in ("vireo", "qemu")}
    for _ in range(runs):
        for case in RUNS:
            results[("vireo", case)].append(vireo_migrate(case))
            results[("qemu", case)].append(qemu_migrate(case))
    checks = local_checks()
    with open(os.path.join(WORK, "runs.json"), "w") as f:   # every run's figures, for a closer look
        json.dump({"runs": {f"{vmm} {case}": rs for (vmm, case), rs in results.items()}, "local checks": checks}, f, indent=1)
    return results, checks, (load, os.getloadavg()[0])


def report(runs):
    runs = max(7, runs)
    results, checks, load = measure(runs)

    def med(vmm, case, key):
        xs = [r[key] for r in results[(vmm, case)] if r.get(key) is not None]
        return statistics.median(xs) if xs else None

    def trimmed(vmm, case, key):
        """The mean of the runs without the fastest and the slowest: QEMU's own downtime is whole ms (two
        truncated millisecond clocks), of which the mean, not the median, is the true downtime's; the
        trimming drops a run a busy moment of this 2-CPU host added whole milliseconds to, at either VMM."""
        xs = sorted(r[key] for r in results[(vmm, case)] if r.get(key) is not None)
        xs = xs[1:-1] if len(xs) >= 5 else xs
        return statistics.fmean(xs) if xs else None

    def cell(v, fmt="{:.1f}"):
        return "–" if v is None else fmt.format(v)

    def row(metric, case, key, target=None, ratio_target=None, fmt="{:.1f}", of=None):
        of = of or med
        v, q = of("vireo", case, key), of("qemu", case, key)
        ratio = v / q if v is not None and q else None
        goals, met = [], []
        if target is not None:
            goals.append(f"<= {target:g} ms")
            met.append(v is not None and v <= target)
        if ratio_target is not None:
            goals.append(f"<= {ratio_target:.2f} x QEMU")
            met.append(ratio is not None and ratio <= ratio_target)
        return (f"| {metric} | {cell(v, fmt)} | {cell(q, fmt)} | {cell(ratio, '{:.2f}')} | {'; '.join(goals) or '–'} | "
                f"{('yes' if all(met) else 'NO') if met else '–'} |")

    def converged(vmm, case):
        rs = results[(vmm, case)]
        ok = sum(1 for r in rs if r["converged"] and r["downtime"] is not None and r["downtime"] <= DOWNTIME_MS)
        return f"{ok}/{len(rs)}"

    def spread(vmm, case, key):
        xs = [r[key] for r in results[(vmm, case)] if r.get(key) is not None]
        return f"{min(xs):.2f}-{max(xs):.2f}" if xs else "–"

    for rs in results.values():
        for r in rs:
            r["mib"] = None if r.get("bytes") is None else r["bytes"] / (1 << 20)
    lines = [
        f"Live migration on one host: vireo-vmm beside QEMU {qemu_version()} -M microvm (1 vCPU), medians of {runs} "
        f"interleaved runs, {time.strftime('%Y-%m-%d')}. Vireo: PUT /migration/send (downtime_ms {DOWNTIME_MS}, cancel) to a fresh "
        f"vireo-vmm told PUT /migration/receive; QEMU: migrate to `-incoming defer` + migrate-incoming, downtime-limit "
        f"{DOWNTIME_MS}, max-bandwidth unlimited. Downtime is each VMM's own figure (Vireo: GET /migration downtime_ms, "
        f"pause to commit sent; QEMU: query-migrate downtime, the stop asked to the end of the stream, in whole ms; its STOP "
        f"event, which QEMU sends once its vCPUs have stopped, to its completed event, timestamped to the microsecond, is "
        f"a lower bound); total is host time, request to done. Host load average {load[0]:.1f} at the start, {load[1]:.1f} at the end.",
        "",
        "| metric | Vireo | QEMU | Vireo/QEMU | target | met |",
        "|---|---:|---:|---:|---|---|",
        row("idle guest, 1 GiB, over tcp: downtime, each VMM's own, mean of the middle runs (ms)", "idle", "downtime",
            target=50, ratio_target=0.5, fmt="{:.2f}", of=trimmed),
        row("... median (ms)", "idle", "downtime"),
        row("... QEMU: its STOP event to its completed event, which leaves out its vCPUs' stopping: a lower bound (median; Vireo: its own)",
            "idle", "downtime_precise", fmt="{:.2f}"),
        row("... total (ms)", "idle", "total"),
        row("... the destination says running, after the source said done (ms)", "idle", "running_ms"),
        row("... sent (MiB)", "idle", "mib", fmt="{:.2f}"),
        row("snapshot guest (spins, polls its console), 1 GiB, over tcp: downtime, mean of the middle runs (ms)", "console", "downtime", fmt="{:.2f}", of=trimmed),
        row("... QEMU: its STOP event to its completed event, a lower bound (median; Vireo: its own)", "console", "downtime_precise", fmt="{:.2f}"),
        row("... total (ms)", "console", "total"),
        row("... the pause the guest saw: the source's last heartbeat to the destination's first (ms)", "console", "seen_pause", ratio_target=0.5),
        row("... the destination's guest answers `c` (count=2), after the source said done (ms)", "console", "answer_ms"),
        row(f"dirty guest ({DIRTY_ARGS}), 1 GiB, over tcp: downtime, median (ms)", "dirty", "downtime"),
        row("... total (ms)", "dirty", "total"),
        row("... rounds (Vireo: round; QEMU: dirty-sync-count)", "dirty", "rounds", fmt="{:.0f}"),
        row("... sent (MiB)", "dirty", "mib"),
        row("... pages the guest wrote in its last second before (25,000 asked)", "dirty", "rate_before", fmt="{:.0f}"),
        row("... and in its first whole second at the destination", "dirty", "rate_after", fmt="{:.0f}"),
        f"| ... converged with downtime <= {DOWNTIME_MS} ms (runs) | {converged('vireo', 'dirty')} | {converged('qemu', 'dirty')} | – | – | – |",
        row("local live upgrade, idle guest, 4 GiB (Vireo: memfd handed over; QEMU: shared file, x-ignore-shared): downtime (ms)",
            "local", "downtime", target=50),
        row("... total (ms)", "local", "total"),
        row("... the destination says running, after the source said done (ms)", "local", "running_ms"),
        row("... sent (MiB)", "local", "mib", fmt="{:.2f}"),
        "",
        f"Spread (min-max of the runs), downtime ms: idle Vireo {spread('vireo', 'idle', 'downtime')}, QEMU "
        f"{spread('qemu', 'idle', 'downtime')}; dirty Vireo {spread('vireo', 'dirty', 'downtime')}, QEMU "
        f"{spread('qemu', 'dirty', 'downtime')}; local Vireo {spread('vireo', 'local', 'downtime')}, QEMU "
        f"{spread('qemu', 'local', 'downtime')}. QEMU's own total-time (ms, median): idle {cell(med('qemu', 'idle', 'qemu_total'), '{:.0f}')}, "
        f"dirty {cell(med('qemu', 'dirty', 'qemu_total'), '{:.0f}')}, local {cell(med('qemu', 'local', 'qemu_total'), '{:.0f}')}. "
        f"Rounds, idle: Vireo {cell(med('vireo', 'idle', 'rounds'), '{:.0f}')}, QEMU {cell(med('qemu', 'idle', 'rounds'), '{:.0f}')}.",
        "",
        "The local cases once on the snapshot guest, 4 GiB, asked for `c` at the destination (count=2: its RAM came across):",
        "",
    ]
    for what, r in checks:
        if not r.get("converged"):
            lines.append(f"- {what}: did not migrate: {r.get('error', '')[:200]}")
        elif "said" in r:
            lines.append(f"- {what}: migrated (downtime {cell(r['downtime'], '{:g}')} ms), but the guest said \"{r['said'][:100]}\", not count=2")
        else:
            lines.append(f"- {what}: count=2 (downtime {cell(r['downtime'], '{:g}')} ms, total {r['total']:.1f} ms)")
    failed = [(vmm, case, r["error"]) for (vmm, case), rs in results.items() for r in rs if r.get("error")]
    for vmm, case, error in failed[:4]:
        lines.append(f"\n{vmm} {case} did not migrate: {error[:300]}")
    return lines


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    print("\n".join(report(ap.parse_args().runs)))
