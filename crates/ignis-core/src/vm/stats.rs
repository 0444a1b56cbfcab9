//! `ignis stats`: CPU, memory, network and block I/O of a running VM, from
//! its cgroup when it has one (confined VMMs), else from its VMM process
//! (/proc), and from its TAP device.

use std::path::Path;

use ignis_api::{VmRecord, VmState, VmStats};

use crate::{Error, Ignis};

/// /proc/PID/stat counts CPU time in USER_HZ ticks, 100 per second on
/// every Linux architecture ignis runs on.
const USER_HZ: u64 = 100;

impl Ignis {
    /// One sample of a VM's counters (zeros for a VM that is not running).
    pub fn vm_stats(&self, query: &str) -> Result<VmStats, Error> {
        let rec = self.reconcile(self.find_vm(query)?)?;
        Ok(vm_sample(&rec))
    }
}

impl Ignis {
    /// Firecracker's own counters for the current run of a running VM
    /// (added up by its supervisor from the VMM's metric flushes); `None`
    /// for other VMMs, or before the first flush.
    pub fn vm_vmm_metrics(&self, rec: &VmRecord) -> Option<super::VmmTotals> {
        if rec.state() != VmState::Running
            || rec.spec.backend != ignis_api::BackendKind::Firecracker
        {
            return None;
        }
        ignis_vmm::firecracker::metrics::read_totals(&self.vm_dir(&rec.id))
    }
}

fn num(text: &str) -> u64 {
    text.trim().parse().unwrap_or(0)
}

/// `KEY VALUE` lines (cpu.stat, /proc/PID/io with `KEY: VALUE`).
fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()?.trim_end_matches(':') == key).then(|| num(it.next().unwrap_or("")))
    })
}

/// One sample of `rec`'s counters from this host (the daemon's per-VM
/// metrics; `ignis stats` through [`Ignis::vm_stats`]).
pub fn vm_sample(rec: &VmRecord) -> VmStats {
    sample(rec, Path::new("/proc"), Path::new("/sys/class/net"))
}

pub(crate) fn sample(rec: &VmRecord, proc: &Path, net: &Path) -> VmStats {
    let mut s = VmStats {
        id: rec.id.clone(),
        name: rec.name.clone(),
        running: rec.state() == VmState::Running,
        at_ns: super::logs::now_ns(),
        cpus: rec.spec.cpus,
        memory_limit_bytes: u64::from(rec.spec.memory_mib) << 20,
        source: "process".into(),
        ..Default::default()
    };
    if !s.running {
        return s;
    }
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    if let Some(pid) = rec.status.vmm_pid {
        let dir = proc.join(pid.to_string());
        // utime and stime: fields 14 and 15, after the `(comm)`.
        let stat = read(&dir.join("stat"));
        if let Some((_, rest)) = stat.rsplit_once(')') {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11).map_or(0, |v| num(v)) + f.get(12).map_or(0, |v| num(v));
            s.cpu_ns = ticks * (1_000_000_000 / USER_HZ);
        }
        s.vmm_resident_bytes = field(&read(&dir.join("status")), "VmRSS").unwrap_or(0) << 10;
        s.memory_bytes = s.vmm_resident_bytes;
        let io = read(&dir.join("io"));
        s.block_read_bytes = field(&io, "read_bytes").unwrap_or(0);
        s.block_write_bytes = field(&io, "write_bytes").unwrap_or(0);
    }
    // The cgroup counts every process of the VM (VMM and helpers), and
    // in finer units.
    let cgroup = rec
        .status
        .confinement
        .as_ref()
        .and_then(|c| c.cgroup.as_ref());
    if let Some(cg) = cgroup {
        for p in cg.paths.iter().map(Path::new) {
            if let Some(us) = field(&read(&p.join("cpu.stat")), "usage_usec") {
                s.cpu_ns = us * 1000;
                s.source = "cgroup".into();
            } else if p.join("cpuacct.usage").exists() {
                s.cpu_ns = num(&read(&p.join("cpuacct.usage")));
                s.source = "cgroup".into();
            }
            for f in ["memory.current", "memory.usage_in_bytes"] {
                if p.join(f).exists() {
                    s.memory_bytes = num(&read(&p.join(f)));
                }
            }
        }
    }
    // The host's TAP receives what the VM sends, and the other way round.
    let tap = net.join(ignis_net::tap_name(&rec.id)).join("statistics");
    if tap.is_dir() {
        s.net_rx_bytes = num(&read(&tap.join("tx_bytes")));
        s.net_tx_bytes = num(&read(&tap.join("rx_bytes")));
    }
    // A macvtap counts from the VM's side: what it receives for the VM
    // is its rx. (A CNI NIC's TAP is in the VM's namespace: not counted.)
    for (i, n) in rec.spec.network.nics().iter().enumerate() {
        if n.mode != ignis_api::NetworkMode::Macvtap {
            continue;
        }
        let mv = net
            .join(ignis_net::macvtap::macvtap_name(&rec.id, i))
            .join("statistics");
        if mv.is_dir() {
            s.net_rx_bytes += num(&read(&mv.join("rx_bytes")));
            s.net_tx_bytes += num(&read(&mv.join("tx_bytes")));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_come_from_proc_and_the_tap() {
        let d = tempfile::tempdir().unwrap();
        let proc = d.path().join("proc");
        let pid = proc.join("42");
        std::fs::create_dir_all(&pid).unwrap();
        std::fs::write(
            pid.join("stat"),
            "42 (qemu (x)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 100 0 0\n",
        )
        .unwrap();
        std::fs::write(pid.join("status"), "Name:\tqemu\nVmRSS:\t  2048 kB\n").unwrap();
        std::fs::write(
            pid.join("io"),
            "rchar: 9\nread_bytes: 4096\nwrite_bytes: 8192\n",
        )
        .unwrap();
        let mut rec: VmRecord = serde_json::from_value(serde_json::json!({
            "id": "0123456789abcdef", "name": "v", "imageId": "sha256:00", "image": "i",
            "kernelId": "sha256:00", "created": "2026-01-01T00:00:00Z",
            "spec": {"cpus": 2, "memoryMib": 256, "diskSize": 1, "backend": "qemu", "accel": "tcg",
                     "mode": "app", "network": {"mode": "none"}},
            "status": {"state": "running", "vmmPid": 42}
        }))
        .unwrap();
        let net = d.path().join("net");
        let tap = net.join(ignis_net::tap_name(&rec.id)).join("statistics");
        std::fs::create_dir_all(&tap).unwrap();
        std::fs::write(tap.join("rx_bytes"), "100\n").unwrap();
        std::fs::write(tap.join("tx_bytes"), "300\n").unwrap();
        let s = sample(&rec, &proc, &net);
        assert_eq!(s.cpu_ns, 3_000_000_000, "300 ticks");
        assert_eq!(s.memory_bytes, 2 << 20);
        assert_eq!(s.vmm_resident_bytes, 2 << 20);
        assert_eq!(s.memory_limit_bytes, 256 << 20);
        assert_eq!((s.block_read_bytes, s.block_write_bytes), (4096, 8192));
        assert_eq!((s.net_rx_bytes, s.net_tx_bytes), (300, 100));
        assert_eq!(s.source, "process");
        // A macvtap NIC as well: its counters are the VM's way round.
        rec.spec.network.interfaces.push(ignis_api::NicSpec {
            link: Some("eth1".into()),
            ..ignis_api::NicSpec::new(ignis_api::NetworkMode::Macvtap)
        });
        let mv = net
            .join(ignis_net::macvtap::macvtap_name(&rec.id, 0))
            .join("statistics");
        std::fs::create_dir_all(&mv).unwrap();
        std::fs::write(
            mv.join("rx_bytes"),
            "7000
",
        )
        .unwrap();
        std::fs::write(
            mv.join("tx_bytes"),
            "50
",
        )
        .unwrap();
        let s = sample(&rec, &proc, &net);
        assert_eq!((s.net_rx_bytes, s.net_tx_bytes), (7300, 150));
        rec.status.state = Some(VmState::Exited);
        assert_eq!(sample(&rec, &proc, &net).cpu_ns, 0);
    }
}
