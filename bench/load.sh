#!/usr/bin/env bash
# Load: N VMs created and started, listed, stopped and removed concurrently
# from P processes at a time (separate `ignis` processes sharing one state
# directory). Checks after each phase that no record was lost or
# duplicated and, at the end, that `ignis system check` finds nothing
# (no leaked supervisor, cgroup, jail or lock); prints ops/s, p50 and p99
# per operation.
#
# Backend: Firecracker with the tiny test guest where firecracker is on PATH
# (or IGNIS_FIRECRACKER), else the fake VMM (the manager's own cost).
#
#   bench/load.sh [N] [P]          (default 100 VMs, 8 processes)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100}; p=${2:-8}
if [[ -z "${BACKEND:-}" ]]; then
  if command -v firecracker >/dev/null || [[ -n "${IGNIS_FIRECRACKER:-}" ]]; then BACKEND=firecracker; else BACKEND=fake; fi
fi
cargo build --release -q -p ignis-cli -p ignis-testkit --features ignis-cli/fake-vmm
scripts/build-guest.sh >/dev/null
bin=$PWD/target/release
work=$(mktemp -d /var/tmp/ignis-loadbench.XXXXXX)
chmod 755 "$work"
export IGNIS_ROOT=$work/root IGNIS_NETWORK=none
cleanup() { "$bin/ignis" rm -f $("$bin/ignis" ps -a -Q 2>/dev/null) >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
"$bin/ignis-testguest" "$work/testguest.elf"
"$bin/ignis" kernel import "$work/testguest.elf" --name testguest >/dev/null
mkdir -p "$work/rootfs/bin"; cp /bin/busybox "$work/rootfs/bin/"
"$bin/ignis-mkimage" "$work/rootfs" "$work/layout" bench/app:1 /bin/busybox true >/dev/null
"$bin/ignis" image import "$work/layout" >/dev/null

# One timed operation: prints "<op> <ms> <exit code>".
cat > "$work/op.sh" <<'S'
#!/usr/bin/env bash
op=$1; shift
t0=$(date +%s%N)
"$IGNIS_BIN" "$@" >/dev/null 2>>"$IGNIS_ERRLOG"; rc=$?
echo "$op $(( ($(date +%s%N) - t0) / 1000000 )) $rc"
S
chmod +x "$work/op.sh"
export IGNIS_BIN=$bin/ignis IGNIS_ERRLOG=$work/errors.log
log=$work/ops.log
phase() { # name, then the args of each op read from stdin as one line each
  local t0 t1; t0=$(date +%s%N)
  xargs -P "$p" -L 1 "$work/op.sh" "$1" >> "$log"
  t1=$(date +%s%N)
  echo "$1 $(( (t1 - t0) / 1000000 ))" >> "$work/phases.log"
}
count() { "$bin/ignis" ps -a -Q | wc -l; }

seq "$n" | sed "s/.*/run --backend $BACKEND --kernel testguest --memory 128MB --size 64MB --name l& bench\/app:1/" | phase run
created=$(count)
seq "$n" | sed 's/.*/ps -a/' | phase ps
seq "$n" | sed 's/.*/stop --time 1 l&/' | phase stop
stopped=$("$bin/ignis" ps -Q | wc -l)
seq "$n" | sed 's/.*/rm -f l&/' | phase rm
left=$(count)
check=0; "$bin/ignis" system check >/dev/null || check=$?

python3 - "$log" "$work/phases.log" "$n" "$p" "$BACKEND" "$created" "$stopped" "$left" "$check" <<'PY'
import sys, collections
log, phases, n, p, backend, created, running_after_stop, left, check = sys.argv[1:]
ops = collections.defaultdict(list); fails = collections.Counter()
for line in open(log):
    op, ms, rc = line.split()
    ops[op].append(int(ms))
    if rc != "0": fails[op] += 1
wall = dict(l.split() for l in open(phases))
def pct(v, q):
    v = sorted(v); return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]
print(f"\nload: {n} VMs, {p} concurrent processes, backend {backend}")
print(f"{'op':<6} {'count':>6} {'fail':>5} {'ops/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
for op in ["run", "ps", "stop", "rm"]:
    v = ops[op]; w = int(wall[op]) / 1000
    print(f"{op:<6} {len(v):>6} {fails[op]:>5} {len(v)/w:>8.1f} {pct(v,.5):>8} {pct(v,.99):>8} {max(v):>8}")
print(f"records after run: {created} (want {n}); running after stop: {running_after_stop} (want 0); "
      f"after rm: {left} (want 0); system check exit: {check} (want 0)")
ok = int(created) == int(n) and int(running_after_stop) == 0 and int(left) == 0 and int(check) == 0 and not fails
print("RESULT:", "ok" if ok else "FAILED")
sys.exit(0 if ok else 1)
PY
