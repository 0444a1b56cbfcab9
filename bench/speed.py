"""ignis next to the raw VMM, in one run (driven by bench/speed.sh).

Raw baselines are the VMM started by hand with the same files ignis uses
(from `ignis __boot-plan` and the snapshot's blobs), confined the same way
(Firecracker under its jailer with a persistent TAP made beforehand), timed
from spawning the VMM to the same event ignis waits for: the guest init's
ready line, the snapshot load's answer, the agent's greeting. Preparing
files for the raw VMM is not timed; ignis's own preparation is.
"""

import datetime
import json
import os
import platform
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import time

BIN, WORK, ROOT = os.environ["BIN"], os.environ["WORK"], os.environ["IGNIS_ROOT"]
SKIP = os.environ.get("IGNIS_BENCH_SKIP", "")
RUNS = int(os.environ.get("RUNS") or 0)
FC_RUNS = RUNS or 9
QEMU_RUNS = RUNS or 3
RAW_UID = 1_999_000_000

rows = []  # (backend, operation, ignis, raw, goal text, met or None)
phase_tables = []  # (title, [(phase, median at, median took)])
notes = []


def ig(*args, check=True):
    r = subprocess.run([f"{BIN}/ignis", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        sys.exit(f"ignis {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return r


def timed(*args):
    t = time.perf_counter()
    r = ig(*args)
    return r, (time.perf_counter() - t) * 1000


def inspect(q):
    return json.loads(ig("inspect", q, "-o", "json").stdout)


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def row(backend, op, ignis_ms, raw_ms, goal, met, unit="ms"):
    rows.append((backend, op, ignis_ms, raw_ms, goal, met, unit))


def phases_of(records, title):
    # VM records keep their phases in status, snapshot records at the top.
    records = [r["status"] if "status" in r else r for r in records]
    names = []
    for r in records:
        for p in r.get("timings", []):
            if p["phase"] not in names:
                names.append(p["phase"])
    table = []
    for n in names:
        at = [p["atUs"] / 1000 for r in records for p in r.get("timings", []) if p["phase"] == n]
        took = [p["tookUs"] / 1000 for r in records for p in r.get("timings", []) if p["phase"] == n]
        table.append((n, med(at), med(took)))
    table.sort(key=lambda t: t[1])
    phase_tables.append((title, table))


def pss_kib(pid):
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid):
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            out += [int(c) for c in open(f"/proc/{pid}/task/{task}/children").read().split()]
        except OSError:
            pass
    return out


def ignis_pss_per_vm(records):
    """ignis's own resident cost per VM: its supervisor and its watcher
    (the supervisor's children other than the VMM)."""
    total = 0
    for r in records:
        sup, vmm = r["status"]["supervisorPid"], r["status"].get("vmmPid")
        total += pss_kib(sup)
        total += sum(pss_kib(c) for c in children(sup) if c != vmm)
    return total / len(records) / 1024


def snapshot_three(args, parent, prefix):
    """Runs bench/idle:1 with `args` as `parent` and snapshots it three
    times (PREFIX0, 1, 2): the wall times and the guest pauses, in ms."""
    ig("run", "-d", "--name", parent, *args, "bench/idle:1")
    walls, pauses = [], []
    for i in range(3):
        _, ms = timed("snapshot", parent, "--name", f"{prefix}{i}")
        walls.append(ms)
        pauses.append(json.loads(ig("snapshot", "inspect", f"{prefix}{i}").stdout)["pauseMs"])
    recs = [json.loads(ig("snapshot", "inspect", f"{prefix}{i}").stdout) for i in range(3)]
    phases_of(recs, f"{'Firecracker' if parent.startswith('fc') else 'QEMU'}: ignis snapshot")
    return walls, pauses


def fork_rows(B, title, snap, prefix, counts, rl, check):
    """`fork -n N` of `snap` for each N of `counts` (clones named PREFIX+N-i):
    a row per clone against the raw load time `rl`, after `check(recs, n)`
    of the clones' records; at the last N also ignis's memory per idle VM
    and the clones' phases. The clones are removed after each N."""
    for n in counts:
        r, ms = timed("fork", snap, "-n", str(n), "--name-prefix", f"{prefix}{n}")
        ids = r.stdout.split()
        recs = [inspect(i) for i in ids]
        check(recs, n)
        per = ms / n
        row(B, f"fork -n {n}, per clone (total {ms:.0f} ms)", per, rl, "<= raw load + 10 ms", per - rl <= 10)
        if n == counts[-1]:
            time.sleep(2)
            mem = ignis_pss_per_vm(recs)
            vmm = med([pss_kib(x["status"]["vmmPid"]) / 1024 for x in recs])
            row(B, f"ignis processes per idle VM, {n} VMs (PSS)", mem, vmm, "<= 4 MiB", mem <= 4, unit="MiB")
            phases_of(recs, f"{title}: ignis fork -n {n} (per clone)")
        ig("rm", "-f", *ids)


def rm_all():
    ids = ig("ps", "-a", "-Q").stdout.split()
    if ids:
        ig("rm", "-f", *ids)


# ---- Firecracker's API over its unix socket -------------------------------

def fc_api(sock, method, path, body=None, timeout=30):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(sock)
    data = json.dumps(body).encode() if body is not None else b""
    s.sendall(
        f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data
    )
    resp = b""
    while b"\r\n\r\n" not in resp:
        chunk = s.recv(65536)
        if not chunk:
            break
        resp += chunk
    head, _, rest = resp.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    m = re.search(rb"content-length: *(\d+)", head, re.I)
    n = int(m.group(1)) if m else 0
    while len(rest) < n:
        rest += s.recv(65536)
    s.close()
    if status >= 300:
        raise RuntimeError(f"{method} {path}: {status} {rest[:300]!r}")
    return rest


def wait_socket(path, proc, timeout=5):
    deadline = time.monotonic() + timeout
    while True:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            s.close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{path} never answered")
            time.sleep(0.0005)


def tap(name, uid):
    subprocess.run(["ip", "tuntap", "del", "dev", name, "mode", "tap"], stderr=subprocess.DEVNULL)
    subprocess.run(["ip", "tuntap", "add", "dev", name, "mode", "tap", "user", str(uid), "group", str(uid), "vnet_hdr"], check=True)


def jail(vid, files, writable=()):
    """A jail root like ignis's: hard links, writable copies owned by the jail's uid."""
    base = f"{WORK}/rawjail"
    shutil.rmtree(f"{base}/firecracker/{vid}", ignore_errors=True)
    root = f"{base}/firecracker/{vid}/root"
    os.makedirs(root)
    for name, src in files.items():
        if name in writable:
            subprocess.run(["cp", "--sparse=always", src, f"{root}/{name}"], check=True)
            os.chown(f"{root}/{name}", RAW_UID, RAW_UID)
            os.chmod(f"{root}/{name}", 0o644)
        else:
            os.link(src, f"{root}/{name}")
    return base, root


def jailer_argv(vid, base, fc_args):
    return ["jailer", "--id", vid, "--exec-file", shutil.which("firecracker"), "--uid", str(RAW_UID),
            "--gid", str(RAW_UID), "--chroot-base-dir", base, "--", *fc_args]


def until_ready(proc):
    for line in proc.stdout:
        if b"IGNIS-INIT ready" in line:
            return True
    return False


def firecracker():
    B = "firecracker+testguest"
    args = ["--backend", "firecracker", "--kernel", "testguest", "--memory", "128MB"]
    ver = subprocess.run(["firecracker", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    notes.append(f"Firecracker: {ver}, under its jailer, 128 MiB test guest (a static ELF that prints the init's ready line: no Linux boots under Firecracker on this PVM host), bridge networking")

    # -- run -> ready
    walls, recs = [], []
    for i in range(FC_RUNS):
        r, ms = timed("run", "-d", *args, "bench/idle:1")
        walls.append(ms)
        recs.append(inspect(r.stdout.strip()))
    phases_of(recs, "Firecracker: ignis run -d (test guest, jailed, bridge)")
    rm_all()
    # The raw VMM: the same files under the jailer, a TAP made beforehand.
    vm = ig("create", "--name", "rawfc", *args, "bench/idle:1").stdout.strip()
    plan = json.loads(ig("__boot-plan", "rawfc").stdout)["firecrackerConfig"]
    vmdir = f"{ROOT}/vms/{vm}"
    files = {"vmlinux": plan["boot-source"]["kernel_image_path"], "initrd.img": f"{vmdir}/initrd.img",
             "disk0.img": plan["drives"][0]["path_on_host"], "disk1.img": f"{vmdir}/data.ext4"}
    # The raw snapshot below boots the same files by hand, unjailed.
    rawdir = f"{WORK}/rawsnap"
    os.makedirs(rawdir, exist_ok=True)
    for name, src in files.items():
        subprocess.run(["cp", "--sparse=always", src, f"{rawdir}/{name}"], check=True)
    cfg = json.loads(json.dumps(plan))
    cfg["boot-source"]["kernel_image_path"] = "vmlinux"
    cfg["drives"][0]["path_on_host"] = "disk0.img"
    cfg["drives"][1]["path_on_host"] = "disk1.img"
    raw, raw_plain = [], []
    for i in range(FC_RUNS):
        vid = f"rawfc{i}"
        base, root = jail(vid, files, writable=("disk1.img",))
        tap("rawtap", RAW_UID)
        c = json.loads(json.dumps(cfg))
        c["network-interfaces"][0]["host_dev_name"] = "rawtap"
        json.dump(c, open(f"{root}/vm.json", "w"))
        t = time.perf_counter()
        p = subprocess.Popen(jailer_argv(vid, base, ["--config-file", "/vm.json", "--api-sock", "/api.sock", "--level", "Off"]),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        ok = until_ready(p)
        raw.append((time.perf_counter() - t) * 1000)
        p.kill(); p.wait()
        assert ok, "raw jailed firecracker did not report ready"
        # And without the jailer or a network (Firecracker alone).
        c.pop("network-interfaces")
        json.dump(c, open(f"{root}/plain.json", "w"))
        t = time.perf_counter()
        p = subprocess.Popen(["firecracker", "--config-file", "plain.json", "--no-api", "--level", "Off"], cwd=root,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        until_ready(p)
        raw_plain.append((time.perf_counter() - t) * 1000)
        p.kill(); p.wait()
    subprocess.run(["ip", "tuntap", "del", "dev", "rawtap", "mode", "tap"], stderr=subprocess.DEVNULL)
    ig("rm", "-f", "rawfc")
    over = med(walls) - med(raw)
    row(B, "run -> ready (jailed, bridge)", med(walls), med(raw), "<= raw + 25 ms", over <= 25)
    notes.append(f"raw Firecracker alone (no jailer, no network, --no-api): {med(raw_plain):.1f} ms to the ready line")

    # -- snapshot (and the pause)
    snap_walls, pauses = snapshot_three(args, "fcparent", "fcsnap")
    # Raw: the same guest booted by hand, paused, snapshotted, resumed.
    c = json.loads(json.dumps(cfg))
    c.pop("network-interfaces")
    json.dump(c, open(f"{rawdir}/vm.json", "w"))
    raw_total, raw_pause = [], []
    for i in range(3):
        for f in ("api.sock", "vsock.sock", "s.vmstate", "s.mem"):
            if os.path.exists(f"{rawdir}/{f}"):
                os.unlink(f"{rawdir}/{f}")
        p = subprocess.Popen(["firecracker", "--config-file", "vm.json", "--api-sock", "api.sock", "--level", "Off"], cwd=rawdir,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        until_ready(p)
        wait_socket(f"{rawdir}/api.sock", p)
        sock = f"{rawdir}/api.sock"
        t = time.perf_counter()
        fc_api(sock, "PATCH", "/vm", {"state": "Paused"})
        fc_api(sock, "PUT", "/snapshot/create", {"snapshot_type": "Full", "snapshot_path": "s.vmstate", "mem_file_path": "s.mem"})
        fc_api(sock, "PATCH", "/vm", {"state": "Resumed"})
        ms = (time.perf_counter() - t) * 1000
        raw_total.append(ms); raw_pause.append(ms)
        p.kill(); p.wait()
    row(B, "snapshot, total", med(snap_walls), med(raw_total), "<= raw + 50 ms", med(snap_walls) - med(raw_total) <= 50)
    row(B, "snapshot, guest paused", med(pauses), med(raw_pause), "<= raw + 10 ms", med(pauses) - med(raw_pause) <= 10)
    snap = json.loads(ig("snapshot", "inspect", "fcsnap0").stdout)
    notes.append(f"Firecracker snapshot: memory {snap['memory']['size'] >> 20} MiB, disk {snap['disk']['size'] >> 30} GiB apparent "
                 f"({os.stat(blob(snap['disk']['digest'])).st_blocks * 512 >> 20} MiB of data), blobs named {snap['memory']['digest'].split(':')[0]}")

    # -- raw load of that snapshot (jailed, its own TAP), per clone
    load_files = {"restore.vmstate": blob(snap["state"]["digest"]), "restore.memory": blob(snap["memory"]["digest"]),
                  "disk0.img": f"{rawdir}/disk0.img", "disk1.img": blob(snap["disk"]["digest"])}
    raw_load = []
    for i in range(FC_RUNS):
        vid = f"rawload{i}"
        base, root = jail(vid, load_files, writable=("disk1.img",))
        tap("rawtap", RAW_UID)
        t = time.perf_counter()
        p = subprocess.Popen(jailer_argv(vid, base, ["--api-sock", "/api.sock", "--level", "Off"]),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        wait_socket(f"{root}/api.sock", p)
        fc_api(f"{root}/api.sock", "PUT", "/snapshot/load", {
            "snapshot_path": "restore.vmstate", "mem_backend": {"backend_type": "File", "backend_path": "restore.memory"},
            "enable_diff_snapshots": False, "resume_vm": True,
            "network_overrides": [{"iface_id": "eth0", "host_dev_name": "rawtap"}]})
        raw_load.append((time.perf_counter() - t) * 1000)
        p.kill(); p.wait()
    subprocess.run(["ip", "tuntap", "del", "dev", "rawtap", "mode", "tap"], stderr=subprocess.DEVNULL)
    rl = med(raw_load)

    # -- restore, fork 1 / 10 / 50
    walls = []
    for i in range(FC_RUNS):
        _, ms = timed("restore", "fcsnap0", "--name", f"fcr{i}")
        walls.append(ms)
    phases_of([inspect(f"fcr{i}") for i in range(FC_RUNS)], "Firecracker: ignis restore (per clone)")
    row(B, "restore -> running", med(walls), rl, "<= raw load + 10 ms", med(walls) - rl <= 10)
    rm_all()
    def distinct_addresses(recs, n):
        assert len({x["spec"]["network"]["ip"] for x in recs}) == n and len({x["spec"]["network"]["mac"] for x in recs}) == n
    fork_rows(B, "Firecracker", "fcsnap0", "f", (1, 10, 50), rl, distinct_addresses)
    rm_all()


def blob(digest):
    algo, hexd = digest.split(":")
    return f"{ROOT}/blobs/{algo}/{hexd}"


# ---- QEMU -------------------------------------------------------------------

class Qmp:
    def __init__(self, path, proc):
        wait_socket(path, proc, timeout=30)
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.f = self.s.makefile("rw")
        self.f.readline()
        self.cmd("qmp_capabilities")

    def cmd(self, c, a=None):
        self.f.write(json.dumps({"execute": c, **({"arguments": a} if a else {})}) + "\n")
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if "event" not in r:
                if "error" in r:
                    raise RuntimeError(f"{c}: {r['error']}")
                return r.get("return")

    def migrate_wait(self):
        while self.cmd("query-migrate").get("status") not in ("completed", "failed"):
            time.sleep(0.001)


def agent_hello(path, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        try:
            a = socket.socket(socket.AF_UNIX)
            a.connect(path)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.001)
    hello = json.dumps({"version": 1, "peer": "bench"}).encode()
    a.sendall(b"IG\x01\x01" + struct.pack(">II", 0, len(hello)) + hello)
    a.settimeout(timeout)
    a.recv(64)
    a.close()


def unconfined(argv):
    """The raw VMM by hand: without ignis's -sandbox and -runas."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("-sandbox", "-runas"):
            skip = True
            continue
        out.append(a)
    return out


def qemu():
    B = "qemu (TCG)"
    accel = "KVM" if "vmx" in open("/proc/cpuinfo").read() else "TCG"
    ver = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    notes.append(f"QEMU: {ver}, {accel}, Debian's kernel, 256 MiB busybox app guest with ignis-init and the agent, bridge networking")
    args = ["--backend", "qemu", "--memory", "256MB", "--size", "1GB"]

    walls, recs = [], []
    for i in range(QEMU_RUNS):
        r, ms = timed("run", "-d", *args, "bench/idle:1")
        walls.append(ms)
        recs.append(inspect(r.stdout.strip()))
        ig("rm", "-f", r.stdout.strip())
    phases_of(recs, "QEMU: ignis run -d (to the agent's greeting)")
    vm = ig("create", "--name", "rawq", *args, "bench/idle:1").stdout.strip()
    argv = json.loads(ig("__boot-plan", "rawq").stdout)["argv"]
    vmdir = f"{ROOT}/vms/{vm}"
    raw = []
    for i in range(QEMU_RUNS):
        for f in ("qmp.sock", "agent.vmm.sock"):
            if os.path.exists(f"{vmdir}/{f}"):
                os.unlink(f"{vmdir}/{f}")
        t = time.perf_counter()
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        until_ready(p)
        agent_hello(f"{vmdir}/agent.vmm.sock")
        raw.append((time.perf_counter() - t) * 1000)
        p.kill(); p.wait()
    ig("rm", "-f", "rawq")
    row(B, "run -> agent ready", med(walls), med(raw), "<= 1.05x raw", med(walls) <= 1.05 * med(raw))

    # -- snapshot
    snap_walls, pauses = snapshot_three(args, "qparent", "qsnap")
    snap = json.loads(ig("snapshot", "inspect", "qsnap0").stdout)
    parent = inspect("qparent")
    pargv = [a.decode() for a in open(f"/proc/{parent['status']['vmmPid']}/cmdline", "rb").read().split(b"\0")[:-1]]
    pdir = f"{ROOT}/vms/{parent['id']}"
    # Raw snapshot by hand: a raw QEMU of the same plan, stop, migrate the
    # device state (RAM shared: x-ignore-shared), copy the RAM file, cont.
    rawdir = f"{WORK}/rawq"
    os.makedirs(rawdir, exist_ok=True)
    subprocess.run(["cp", "--sparse=always", blob(snap["disk"]["digest"]), f"{rawdir}/data.ext4"], check=True)
    shutil.copy(f"{ROOT}/vms/{parent['id']}/initrd.img" if os.path.exists(f"{pdir}/initrd.img") else pargv[pargv.index("-initrd") + 1], f"{rawdir}/initrd.img")
    ram = f"/dev/shm/ignis-raw-{os.getpid()}.mem"

    def to_raw(a):
        a = a.replace(pdir + "/", rawdir + "/")
        if a.startswith("memory-backend-file"):
            a = ",".join(x if not x.startswith("mem-path=") else f"mem-path={ram}" for x in a.split(","))
        if a.startswith("tap,"):
            a = re.sub(r"ifname=[^,]+", "ifname=rawqtap", a)
        return a

    rargv = [to_raw(a) for a in unconfined(pargv)]
    raw_total, raw_pause = [], []
    for i in range(3):
        for f in ("qmp.sock", "agent.vmm.sock"):
            if os.path.exists(f"{rawdir}/{f}"):
                os.unlink(f"{rawdir}/{f}")
        p = subprocess.Popen(rargv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        until_ready(p)
        q = Qmp(f"{rawdir}/qmp.sock", p)
        t = time.perf_counter()
        q.cmd("stop")
        q.cmd("migrate-set-capabilities", {"capabilities": [{"capability": "x-ignore-shared", "state": True}]})
        q.cmd("migrate", {"uri": f"exec:cat > {rawdir}/state"})
        q.migrate_wait()
        subprocess.run(["cp", "--sparse=always", ram, f"{rawdir}/memory"], check=True)
        subprocess.run(["cp", "--sparse=always", f"{rawdir}/data.ext4", f"{rawdir}/disk"], check=True)
        q.cmd("cont")
        ms = (time.perf_counter() - t) * 1000
        raw_total.append(ms); raw_pause.append(ms)
        p.kill(); p.wait()
        os.unlink(ram)
    row(B, "snapshot, total", med(snap_walls), med(raw_total), "<= raw + 50 ms", med(snap_walls) - med(raw_total) <= 50)
    row(B, "snapshot, guest paused", med(pauses), med(raw_pause), "<= raw + 10 ms", med(pauses) - med(raw_pause) <= 10)

    # -- raw load of the snapshot to the agent's greeting (per clone)
    def raw_load():
        largv = [to_raw(a) for a in unconfined(pargv)]
        largv = [a.replace(f"mem-path={ram}", f"mem-path={blob(snap['memory']['digest'])}").replace("share=on", "share=off")
                 if a.startswith("memory-backend-file") else a for a in largv] + ["-incoming", "defer"]
        for f in ("qmp.sock", "agent.vmm.sock"):
            if os.path.exists(f"{rawdir}/{f}"):
                os.unlink(f"{rawdir}/{f}")
        subprocess.run(["cp", "--sparse=always", blob(snap["disk"]["digest"]), f"{rawdir}/data.ext4"], check=True)
        t = time.perf_counter()
        p = subprocess.Popen(largv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        q = Qmp(f"{rawdir}/qmp.sock", p)
        q.cmd("migrate-set-capabilities", {"capabilities": [{"capability": "x-ignore-shared", "state": True}]})
        q.cmd("migrate-incoming", {"uri": f"exec:cat {blob(snap['state']['digest'])}"})
        q.migrate_wait()
        q.cmd("cont")
        agent_hello(f"{rawdir}/agent.vmm.sock")
        ms = (time.perf_counter() - t) * 1000
        p.kill(); p.wait()
        return ms
    rl = med([raw_load() for _ in range(QEMU_RUNS)])

    walls = []
    for i in range(QEMU_RUNS):
        _, ms = timed("restore", "qsnap0", "--name", f"qr{i}")
        walls.append(ms)
    phases_of([inspect(f"qr{i}") for i in range(QEMU_RUNS)], "QEMU: ignis restore (to the agent, identity set)")
    for i in range(QEMU_RUNS):
        ig("rm", "-f", f"qr{i}")
    row(B, "restore -> agent ready", med(walls), rl, "<= raw load + 10 ms", med(walls) - rl <= 10)
    def distinct_hostnames(recs, n):
        names = set()
        for x in recs:
            names.add(ig("exec", x["id"], "/bin/busybox", "hostname").stdout.strip())
        assert len(names) == n, f"hostnames not unique: {names}"
    fork_rows(B, "QEMU", "qsnap0", "q", (1, 10), rl, distinct_hostnames)
    rm_all()


def ps_1000():
    # 1000 records (created, not running: ps reads records, it starts nothing).
    t = time.perf_counter()
    for i in range(1000):
        ig("create", "--network", "none", "--size", "32MB", "--backend", "firecracker" if shutil.which("firecracker") else "qemu",
           "--kernel", "testguest", "--memory", "128MB", "--name", f"rec{i}", "bench/idle:1")
    create_ms = (time.perf_counter() - t) * 1000 / 1000
    walls = [timed("ps", "-a")[1] for _ in range(5)]
    jwalls = [timed("ps", "-a", "-o", "json")[1] for _ in range(5)]
    row("any", "ps -a, 1000 VM records", med(walls), None, "(no VMM equivalent)", None)
    row("any", "ps -a -o json, 1000 VM records", med(jwalls), None, "(no VMM equivalent)", None)
    notes.append(f"ignis create (no network, 32 MB disk): {create_ms:.1f} ms per VM over 1000")
    rm_all()


def main():
    if shutil.which("firecracker") and "firecracker" not in SKIP:
        firecracker()
    else:
        notes.append("Firecracker rows skipped: no firecracker on PATH")
    if "qemu" not in SKIP:
        qemu()
    ps_1000()
    host = f"{platform.node()}, {os.cpu_count()} CPUs, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') >> 30} GiB, {platform.release()}"
    print(f"## ignis vs the raw VMM ({datetime.date.today()}, {host})\n")
    print("| backend | operation | ignis | raw VMM | ratio | ignis - raw | goal | met |")
    print("|---|---|---:|---:|---:|---:|---|---|")
    for b, op, ms, raw, goal, met, unit in rows:
        ratio = f"{ms / raw:.2f}x" if raw else "—"
        diff = f"{ms - raw:+.1f} {unit}" if raw else "—"
        rawt = f"{raw:.1f} {unit}" if raw else "—"
        m = "—" if met is None else ("met" if met else "NOT met")
        print(f"| {b} | {op} | {ms:.1f} {unit} | {rawt} | {ratio} | {diff} | {goal} | {m} |")
    print()
    for n in notes:
        print(f"- {n}")
    for title, table in phase_tables:
        print(f"\n{title}: phases (medians, ms from the command's start)\n")
        print("| phase | at | took |")
        print("|---|---:|---:|")
        for p, at, took in table:
            print(f"| {p} | {at:.1f} | {took:.1f} |")


if __name__ == "__main__":
    main()
