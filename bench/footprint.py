#!/usr/bin/env python3
"""What one process keeps resident, by kind: bench/footprint.py PID [--guest-mib N].

Reads /proc/PID/smaps and sorts every mapping's resident and proportional pages into:
  executable     the program file's own pages (code, read-only data: shared by every process of it)
  libraries      other files mapped (libc, libm, ld.so, SQLite)
  static data    the anonymous mapping right after the program file: its .bss and, under Native AOT,
                 the type data the runtime rehydrates at start-up (.hydrated)
  guest RAM      the guest's memory (the one mapping of exactly --guest-mib, or a memfd)
  thread stacks  each mapping a thread's stack pointer is in (/proc/PID/task/TID/syscall), and [stack]
  GC heap        the .NET GC's regions: committed mappings inside or next to its reservation (the one
                 anonymous reservation larger than 1 GiB) and its 4 MiB-aligned bookkeeping pieces
  malloc         [heap] and glibc's per-thread arenas (64 MiB-aligned reservations)
  kvm            the vCPUs' kvm_run pages (anon_inode:kvm-vcpu)
  other          anything else anonymous
Prints one line per kind (RSS and PSS, KiB) and the totals; `--json` for bench/run.
"""
import argparse, json, os, re, sys

KINDS = ("executable", "libraries", "static data", "guest RAM", "thread stacks", "GC heap", "malloc", "kvm", "other")


def mappings(pid):
    out, cur = [], None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ (\d+)\s*(.*)$", line)
            if m:
                cur = {"start": int(m[1], 16), "end": int(m[2], 16), "perm": m[3], "inode": int(m[4]), "path": m[5], "rss": 0, "pss": 0}
                out.append(cur)
            elif line.startswith("Rss:"):
                cur["rss"] = int(line.split()[1])
            elif line.startswith("Pss:"):
                cur["pss"] = int(line.split()[1])
    return out


def stack_pointers(pid):
    sps = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = open(f"/proc/{pid}/task/{tid}/syscall").read().split()
        except OSError:
            continue
        if len(fields) >= 3 and fields[0] not in ("running",):
            sps.append(int(fields[-2], 16))
    return sps


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def breakdown(pid, guest_mib=None):
    maps = mappings(pid)
    exe = os.readlink(f"/proc/{pid}/exe")
    sps = stack_pointers(pid)
    kinds = {k: [0, 0] for k in KINDS}
    exe_end = max((m["end"] for m in maps if m["path"] == exe), default=None)
    # The GC's reservation: the one anonymous PROT_NONE mapping above 1 GiB; what it has committed sits
    # at its start (mapped rw-p just below it), its bookkeeping in 4 MiB-aligned pieces below that.
    gc = [m for m in maps if m["perm"] == "---p" and not m["path"] and m["end"] - m["start"] > 1 << 30]
    gc_start = gc[0]["start"] if gc else None
    arena = 64 << 20  # glibc's per-thread arenas: 64 MiB reservations on a 64 MiB boundary, used from their start

    def in_arena(m):
        if m["path"] or m["end"] - m["start"] >= arena:
            return False
        base = m["start"] - m["start"] % arena
        return m["end"] <= base + arena and any(
            o["start"] == base and not o["path"] and o["perm"] == "rw-p" and o["end"] - o["start"] < arena for o in maps)

    for i, m in enumerate(maps):
        size = m["end"] - m["start"]
        if m["path"] == exe:
            kind = "executable"
        elif m["path"].startswith("/"):
            kind = "libraries"
        elif m["path"].startswith("anon_inode:kvm"):
            kind = "kvm"
        elif m["start"] == exe_end:
            kind = "static data"
        elif guest_mib and size == guest_mib << 20 or m["path"].startswith("/memfd:"):
            kind = "guest RAM"
        elif m["path"] == "[stack]" or any(m["start"] <= sp < m["end"] for sp in sps):
            kind = "thread stacks"
        elif gc_start is not None and (m["end"] == gc_start or (gc_start - (512 << 20) <= m["start"] < gc_start and m["start"] % (4 << 20) == 0) or m is gc[0]):
            kind = "GC heap"
        elif m["path"] == "[heap]" or in_arena(m):
            kind = "malloc"
        else:
            kind = "other"
        kinds[kind][0] += m["rss"]
        kinds[kind][1] += m["pss"]
    return kinds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pid", type=int)
    ap.add_argument("--guest-mib", type=int)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    kinds = breakdown(a.pid, a.guest_mib)
    if a.json:
        print(json.dumps(kinds))
        return
    print(f"{'kind':<14} {'RSS KiB':>9} {'PSS KiB':>9}")
    for k, (rss, pss) in kinds.items():
        print(f"{k:<14} {rss:>9} {pss:>9}")
    print(f"{'total':<14} {sum(v[0] for v in kinds.values()):>9} {sum(v[1] for v in kinds.values()):>9}")


if __name__ == "__main__":
    main()
