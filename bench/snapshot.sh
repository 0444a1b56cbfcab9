#!/usr/bin/env bash
# Benchmark: snapshots and forks, per backend this host can run (QEMU here;
# Firecracker where installed on a KVM that runs Linux). Prints, in one run:
#   snapshot create time and the parent's pause
#   fork of N clones (per-clone median restore -> agent ready, and the total)
#   memory per idle clone (PSS, summed over the clone's VMM process)
#   the raw VMM's own load of the same snapshot (QEMU by hand: -incoming,
#   migrate-incoming, cont, until the agent answers) and the ratio.
#
#   bench/snapshot.sh [N...]            (default: 1 10)
#   IGNIS_BENCH_KERNEL_DEB=...deb       (default: scripts/kernel-deb.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
ns_list=("${@:-1 10}"); [ $# -eq 0 ] && ns_list=(1 10)
cargo build --release -q -p ignis-cli -p ignis-testkit
scripts/build-guest.sh >/dev/null
bin=$PWD/target/release
work=$(mktemp -d /var/tmp/ignis-snapbench.XXXXXX)
export IGNIS_ROOT=$work/root IGNIS_NETWORK=none
cleanup() {
  "$bin/ignis" rm -f $("$bin/ignis" ps -a -Q 2>/dev/null) >/dev/null 2>&1 || true
  pkill -f "$work/raw" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
"$bin/ignis" kernel import "${IGNIS_BENCH_KERNEL_DEB:-$(scripts/kernel-deb.sh target/kernel)}" --default >/dev/null
mkdir -p "$work/rootfs/bin" "$work/rootfs/tmp"; cp /bin/busybox "$work/rootfs/bin/"; ln -s busybox "$work/rootfs/bin/sh"
"$bin/ignis-mkimage" "$work/rootfs" "$work/layout" bench/idle:1 /bin/busybox sleep 1000000 >/dev/null
"$bin/ignis" image import "$work/layout" >/dev/null
"$bin/ignis" run --name parent --memory 256MB --size 256MB bench/idle:1 >/dev/null

export BIN=$bin WORK=$work NS="${ns_list[*]}"
python3 - <<'PY'
import json, os, sys, subprocess, time, statistics, socket, struct, shutil
bin_, work = os.environ["BIN"], os.environ["WORK"]
ig = lambda *a: subprocess.run([f"{bin_}/ignis", *a], check=True, capture_output=True, text=True)
inspect = lambda q, what="inspect": json.loads(ig(*( [what, q] if what == "inspect" else ["snapshot", "inspect", q])).stdout)

t = time.perf_counter(); ig("snapshot", "parent", "--name", "tmpl"); snap_s = time.perf_counter() - t
snap = inspect("tmpl", "snapshot")
rows = []
def pss(pid):
    try:
        for l in open(f"/proc/{pid}/smaps_rollup"):
            if l.startswith("Pss:"): return int(l.split()[1]) / 1024
    except OSError: return 0.0
    return 0.0
for n in [int(x) for x in os.environ["NS"].split()]:
    t = time.perf_counter()
    ids = ig("fork", "tmpl", "-n", str(n), "--name-prefix", f"f{n}").stdout.split()
    total = time.perf_counter() - t
    vms = [inspect(i) for i in ids]
    per = [v["status"]["readyMs"] + v["status"].get("agentMs", 0) for v in vms]
    time.sleep(2)
    mem = [pss(v["status"]["vmmPid"]) for v in vms]
    rows.append((n, statistics.median(per), total * 1000, statistics.median(mem)))
    ig("rm", "-f", *ids)

# The raw VMM: the same snapshot loaded by QEMU by hand, timed to the agent's answer.
parent = inspect("parent")
pid = parent["status"]["vmmPid"]
args = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[:-1]
args = [a.decode() for a in args]
vmdir = os.path.join(os.environ["IGNIS_ROOT"], "vms", parent["id"])
raw = os.path.join(work, "raw"); os.makedirs(raw, exist_ok=True)
def blob(digest):
    # Named by their algorithm (sha256-chunked for snapshot blobs).
    algo, hexd = digest.split(":")
    return os.path.join(os.environ["IGNIS_ROOT"], "blobs", algo, hexd)
mem_blob = blob(snap["memory"]["digest"])
state_blob = blob(snap["state"]["digest"])
disk_blob = blob(snap["disk"]["digest"])
subprocess.run(["cp", "--sparse=always", disk_blob, f"{raw}/data.ext4"], check=True)
shutil.copy(f"{vmdir}/initrd.img", f"{raw}/initrd.img")
def fix(a):
    a = a.replace(vmdir + "/", raw + "/")
    if a.startswith("memory-backend-file"):
        a = ",".join(p if not p.startswith("mem-path=") else f"mem-path={mem_blob}" for p in a.split(",")).replace("share=on", "share=off")
    return a
# The raw VMM by hand, as bench/speed.py starts it: without ignis's
# -sandbox (spawn=deny would refuse the exec: migration below) and -runas.
sys.path.insert(0, "bench")
from speed import unconfined
args = unconfined([fix(a) for a in args]) + ["-incoming", "defer"]
def raw_load():
    for f in ("qmp.sock", "agent.vmm.sock"):
        try: os.unlink(f"{raw}/{f}")
        except FileNotFoundError: pass
    t = time.perf_counter()
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    while not os.path.exists(f"{raw}/qmp.sock"): time.sleep(0.001)
    s = socket.socket(socket.AF_UNIX)
    while True:
        try: s.connect(f"{raw}/qmp.sock"); break
        except OSError: time.sleep(0.001)
    f = s.makefile("rw")
    def cmd(c, a=None):
        f.write(json.dumps({"execute": c, **({"arguments": a} if a else {})}) + "\n"); f.flush()
        while True:
            r = json.loads(f.readline())
            if "event" not in r and "QMP" not in r: return r
    f.readline(); cmd("qmp_capabilities")
    cmd("migrate-set-capabilities", {"capabilities": [{"capability": "x-ignore-shared", "state": True}]})
    cmd("migrate-incoming", {"uri": f"exec:cat '{state_blob}'"})
    while cmd("query-migrate")["return"].get("status") != "completed": time.sleep(0.002)
    cmd("cont")
    a = socket.socket(socket.AF_UNIX); a.connect(f"{raw}/agent.vmm.sock")
    hello = json.dumps({"version": 1, "peer": "bench"}).encode()
    a.sendall(b"IG\x01\x01" + struct.pack(">II", 0, len(hello)) + hello)
    a.recv(64)
    ms = (time.perf_counter() - t) * 1000
    p.kill(); p.wait()
    return ms
raw_ms = statistics.median(raw_load() for _ in range(3))

print(f"\nbackend qemu ({snap['vmmVersion'].split('(')[0].strip()}), guest {snap['spec']['memoryMib']} MiB, TCG/KVM as `ignis info`")
print(f"snapshot create: {snap_s * 1000:.0f} ms total, parent paused {snap['pauseMs']} ms "
      f"(memory {snap['memory']['size'] >> 20} MiB, disk {snap['disk']['size'] >> 20} MiB apparent)")
print(f"raw VMM load of the same snapshot to agent answer: {raw_ms:.0f} ms (median of 3)\n")
print(f"{'N':>4} {'per-clone restore->agent (ms, median)':>38} {'total (ms)':>11} {'PSS/clone (MiB)':>16} {'per-clone / raw':>16} {'goal <= 1.2x+10ms':>18}")
for n, per, total, mem in rows:
    goal = per <= 1.2 * raw_ms + 10
    print(f"{n:>4} {per:>38.0f} {total:>11.0f} {mem:>16.1f} {per / raw_ms:>15.2f}x {'met' if goal else 'NOT met':>18}")
PY
