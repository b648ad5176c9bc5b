#!/usr/bin/env python3
"""Saving a running VM to files and bringing it back (issue 14): Vireo beside QEMU.

  bench/snapshot_bench.py [--runs N]      (bench/run --only snapshot includes it in bench/results/latest.md)

Both VMMs run the `snapshot` guest (guests/snapshot.c: a counter in RAM, the LAPIC timer ticking,
a console that answers `c` with count=N, and `p` with a '.' each 100 µs), 1 vCPU. Before
each save the guest is asked for `c` once (count=1), the 128 MiB one also for `p`, and paused; a
restored guest's first '.' is the moment it runs again, and asked for `c` it must say count=2.
  * Full snapshot: Vireo's PUT /snapshot/create on a paused vireo-vmm, request to response;
    QEMU's migration of a stopped VM to a file (QMP `stop`, then `migrate` to "exec:cat > FILE",
    QEMU 7.2 has no file: URI; bandwidth unlimited, as libvirt sets it for `virsh save`), command
    to the MIGRATION event that says completed (cat may still hold the pipe's last 64 KiB then).
    128 and 256 MiB, a fresh VM each time, then saved again at once (Vireo: the VM still paused;
    QEMU: `cont` and `stop` first, as a VM that has migrated may not migrate again).
  * Restore to running, 128 MiB, from process start to the restored guest's first '.' on its
    console: Vireo started with `--restore` (Cloud Hypervisor's option: the snapshot is loaded
    before the API starts); QEMU started with `-incoming defer`: over QMP, migrate-incoming
    "exec:cat FILE", its completion, `cont` (the source was stopped, so the VM arrives paused).
    Also Vireo over its API: a fresh vireo-vmm, PUT /snapshot/load with resume_vm answered (the
    API socket appearing on the way), beside QEMU's query-status "running".
  * The files' sizes: apparent and allocated (Vireo's memory file is sparse).
Runs are interleaved, Vireo then QEMU, so that the host's drift hits both alike.

The pieces (a vireo-vmm driven over its API, a QEMU driven over QMP, each with its console) are in
bench/vmm_drivers.py, shared with the live-migration section (bench/migrate_bench.py).
"""
import argparse, os, shutil, statistics, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# bench/vmm_drivers.py: VireoVmm over its API, Qemu over QMP, their consoles
from vmm_drivers import ROOT, VireoVmm, Qemu, fail, now, qemu_version  # noqa: E402

WORK = os.path.join(ROOT, ".build", "bench-snapshot")
GUEST = "snapshot"


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
    vmm = VireoVmm("source", WORK)
    try:
        vmm.boot(mib, GUEST)
        vmm.console.wait_for("snapshot: up", what="vireo-vmm")
        vmm.type("c\n")
        vmm.console.wait_for("count=1", what="vireo-vmm")
        if mib == 128:
            vmm.type("p\n")  # the restored guest's heartbeat
            vmm.console.wait_for("beating", timeout=30, what="vireo-vmm")
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
    vm = Qemu("source", mib, guest=GUEST, work=WORK)
    try:
        vm.connect()
        vm.console.wait_for("snapshot: up", what="QEMU")
        vm.type("c\n")
        vm.console.wait_for("count=1", what="QEMU")
        if mib == 128:
            vm.type("p\n")
            vm.console.wait_for("beating", timeout=30, what="QEMU")
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
    """A fresh vireo-vmm loads and resumes the snapshot over its API. Returns seconds from process
    start to the API listening, to PUT /snapshot/load answered, to the restored guest's first
    heartbeat, and to its count=2 (asked for over PUT /console/input at once)."""
    vmm = VireoVmm("restore", WORK)
    try:
        listening = vmm.wait_listening()
        vmm.load(state, memory, resume=True)
        running = now() - vmm.started
        beat = vmm.console.wait_for(".", what="restored vireo-vmm") - vmm.started
        vmm.type("c\n")
        answered = vmm.console.wait_for("count=2", what="restored vireo-vmm") - vmm.started
        return listening, running, beat, answered
    finally:
        vmm.stop()


def vireo_restore_at_start(state, memory):
    """A vireo-vmm started with --restore. Returns seconds from process start to the restored guest's
    first heartbeat, to the API listening, and to its count=2."""
    vmm = VireoVmm("restore", WORK, args=["--restore", f"snapshot_path={state},mem_file_path={memory},resume_vm=on"])
    try:
        beat = vmm.console.wait_for(".", what="vireo-vmm --restore") - vmm.started
        listening = vmm.wait_listening()
        vmm.type("c\n")
        answered = vmm.console.wait_for("count=2", what="vireo-vmm --restore") - vmm.started
        return beat, listening, answered
    finally:
        vmm.stop()


def qemu_restore(mib, stream):
    """QEMU started with -incoming defer, then told over QMP to take the file (migrate-incoming
    "exec:cat FILE") and, once that has completed, to `cont`: the source was stopped, so the VM
    arrives paused. Returns seconds from process start to QMP's greeting, to query-status "running",
    to the restored guest's first heartbeat, and to its count=2 (asked for on its stdin at once)."""
    vm = Qemu("restore", mib, ["-incoming", "defer"], guest=GUEST, work=WORK)
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
        beat = vm.console.wait_for(".", what="restored QEMU") - vm.started
        vm.type("c\n")
        answered = vm.console.wait_for("count=2", what="restored QEMU") - vm.started
        return monitor, running, beat, answered
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
    restore = {"vireo": [], "vireo-api": [], "qemu": []}
    f = files[128]
    for _ in range(runs):
        restore["vireo"].append(vireo_restore_at_start(f["state"], f["memory"]))
        restore["vireo-api"].append(vireo_restore(f["state"], f["memory"]))
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

    vr = [r[0] for r in restore["vireo"]]      # --restore: the first heartbeat
    va = restore["vireo-api"]
    qr = [r[2] for r in restore["qemu"]]       # the first heartbeat after cont
    lines = [
        f"Snapshots: the snapshot guest (1 vCPU) on vireo-vmm beside QEMU {qemu_version()} -M microvm, medians of {runs} "
        f"interleaved runs, {time.strftime('%Y-%m-%d')}. Save: Vireo's PUT /snapshot/create on a paused VM, QEMU's migrate "
        f"of a stopped VM to \"exec:cat > FILE\". Restore: process start to running, i.e. to the restored guest's first "
        f"heartbeat on its console (Vireo: `vireo-vmm --restore`; QEMU: -incoming defer, migrate-incoming \"exec:cat FILE\", "
        f"cont); then Vireo over its API (PUT /snapshot/load with resume_vm answered) beside QEMU's query-status \"running\"; "
        f"each restored guest then answered count=2 on its console. Host load average {load[0]:.1f} at the start, {load[1]:.1f} at the end.",
        "",
        "| metric | Vireo | QEMU | Vireo/QEMU | target | met |",
        "|---|---:|---:|---:|---|---|",
        row("Full snapshot, 256 MiB (ms)", ms([c[0] for c in create[("vireo", 256)]]), ms([c[0] for c in create[("qemu", 256)]]), 90),
        row("Full snapshot, 128 MiB (ms)", ms([c[0] for c in create[("vireo", 128)]]), ms([c[0] for c in create[("qemu", 128)]])),
        row("... the same VM saved again at once, 256 MiB (ms)", ms([c[1] for c in create[("vireo", 256)]]), ms([c[1] for c in create[("qemu", 256)]])),
        row("... the same VM saved again at once, 128 MiB (ms)", ms([c[1] for c in create[("vireo", 128)]]), ms([c[1] for c in create[("qemu", 128)]])),
        row("restore, 128 MiB: process start to running, the guest's first heartbeat (ms)", ms(vr), ms(qr), 10),
        row("restore, slowest of the runs (ms)", max(vr) * 1000, max(qr) * 1000),
        row("... vireo-vmm --restore: its API listening (ms) / QEMU: QMP's greeting", ms([r[1] for r in restore["vireo"]]), ms([r[0] for r in restore["qemu"]])),
        row("restore over the API: process start to PUT /snapshot/load answered / query-status running (ms)",
            ms([r[1] for r in va]), ms([r[1] for r in restore["qemu"]])),
        row("... of which process start to API socket / QMP greeting (ms)", ms([r[0] for r in va]), ms([r[0] for r in restore["qemu"]])),
        row("... and from there: PUT /snapshot/load / capabilities, migrate-incoming, cont (ms)",
            ms([r[1] - r[0] for r in va]), ms([r[1] - r[0] for r in restore["qemu"]])),
        row("... its first heartbeat (ms)", ms([r[2] for r in va]), ms(qr)),
        row("process start to the restored guest's answer to `c` on its console, --restore (ms)",
            ms([r[2] for r in restore["vireo"]]), ms([r[3] for r in restore["qemu"]])),
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


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=11)
    print("\n".join(report(ap.parse_args().runs)))
