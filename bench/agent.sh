#!/usr/bin/env bash
# Benchmark (root): the guest agent next to SSH into the same VM.
#   exec round trip: N x `ignis exec VM /bin/busybox true` vs N x `ssh root@VM ...`
#   (both start a client process per call, as a user or a script would)
#   copy throughput: `ignis cp` of a SIZE_MB file in and out vs `ssh 'cat > f'`
#   and `ssh 'cat f'`.
# The VM runs dropbear (from dropbear-bin) next to the agent, on the bridge
# inside a network namespace this script creates and removes. Prints a table.
#
#   bench/agent.sh [N] [SIZE_MB]        (default 200 execs, 100 MB)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
n=${1:-200}; size=${2:-100}
export IGNIS_NETWORK=bridge
bench_setup agentbench abench bench-agent

# Image: busybox + dropbear with its libraries + a host key.
r=$work/rootfs
mkdir -p "$r/bin" "$r/usr/sbin" "$r/etc/dropbear" "$r/etc/ssh" "$r/root" "$r/tmp"
cp /bin/busybox "$r/bin/"; ln -s busybox "$r/bin/sh"
cp /usr/sbin/dropbear "$r/usr/sbin/"
for lib in $(ldd /usr/sbin/dropbear | grep -o '/[^ ]*'); do mkdir -p "$r$(dirname "$lib")"; cp -L "$lib" "$r$lib"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$r/etc/passwd"; echo /bin/sh > "$r/etc/shells"
dropbearkey -t ed25519 -f "$r/etc/dropbear/ed25519" >/dev/null 2>&1
dropbearkey -y -f "$r/etc/dropbear/ed25519" | grep '^ssh-ed25519' > "$r/etc/ssh/ssh_host_ed25519_key.pub"
"$bin/ignis-mkimage" "$r" "$work/layout" bench/sshd:1 /usr/sbin/dropbear -F -E -s -r /etc/dropbear/ed25519 -p 22 >/dev/null
"$bin/ignis" image import "$work/layout" >/dev/null

in_ns "$bin/ignis" run --name bench-agent --ssh --memory 1GB bench/sshd:1 >/dev/null
ssh_args=$(in_ns "$bin/ignis" inspect bench-agent -o json | python3 -c '
import json, sys, os
v = json.load(sys.stdin)
d = os.path.join(os.environ["IGNIS_ROOT"], "vms", v["id"])
ip = v["spec"]["network"]["ip"]
print(f"-i {d}/id_ed25519 -o IdentitiesOnly=yes -o UserKnownHostsFile={d}/known_hosts -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o LogLevel=ERROR root@{ip}")')
# `ignis ssh` writes the pinned known_hosts; wait for dropbear.
for _ in $(seq 60); do in_ns "$bin/ignis" ssh bench-agent true 2>/dev/null && break; sleep 0.5; done

head -c $((size << 20)) /dev/urandom > "$work/payload"
mkdir -p "$work/out1" "$work/out2"
export BIN=$bin NS=$ns N=$n SIZE=$size WORK=$work SSH_ARGS=$ssh_args
python3 - <<'PY'
import os, subprocess, time, statistics, hashlib
bin_, ns, n, size, work = os.environ["BIN"], os.environ["NS"], int(os.environ["N"]), int(os.environ["SIZE"]), os.environ["WORK"]
ssh = ["ssh"] + os.environ["SSH_ARGS"].split()
ignis = ["ip", "netns", "exec", ns, f"{bin_}/ignis"]
ssh_ns = ["ip", "netns", "exec", ns] + ssh
def lat(cmd):
    ts = []
    for _ in range(n):
        t = time.perf_counter(); subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL); ts.append((time.perf_counter() - t) * 1000)
    ts.sort()
    return ts[len(ts) // 2], ts[min(len(ts) - 1, int(len(ts) * 0.99))]
def timed(cmd, **kw):
    t = time.perf_counter(); subprocess.run(cmd, check=True, **kw); return time.perf_counter() - t
a50, a99 = lat(ignis + ["exec", "bench-agent", "/bin/busybox", "true"])
s50, s99 = lat(ssh_ns + ["/bin/busybox", "true"])
payload = f"{work}/payload"
a_in = timed(ignis + ["cp", payload, "bench-agent:/root/a"])
with open(payload, "rb") as f:
    s_in = timed(ssh_ns + ["cat > /root/s"], stdin=f)
a_out = timed(ignis + ["cp", "bench-agent:/root/a", f"{work}/out1/"])
with open(f"{work}/out2/s", "wb") as f:
    s_out = timed(ssh_ns + ["cat /root/s"], stdout=f)
h = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
assert h(payload) == h(f"{work}/out1/a") == h(f"{work}/out2/s"), "copies differ"
print(f"\n{'':34} {'agent':>10} {'ssh':>10} {'agent/ssh':>10}")
print(f"{'exec p50 (ms, n=%d)' % n:34} {a50:10.1f} {s50:10.1f} {a50 / s50:9.2f}x")
print(f"{'exec p99 (ms)':34} {a99:10.1f} {s99:10.1f} {a99 / s99:9.2f}x")
print(f"{'copy in (MB/s, %d MB)' % size:34} {size / a_in:10.1f} {size / s_in:10.1f} {s_in / a_in:9.2f}x")
print(f"{'copy out (MB/s)':34} {size / a_out:10.1f} {size / s_out:10.1f} {s_out / a_out:9.2f}x")
print("(latency includes starting the client process and `ip netns exec` for both;")
print(" throughput ratios are agent speed / ssh speed: > 1 means the agent is faster)")
PY
