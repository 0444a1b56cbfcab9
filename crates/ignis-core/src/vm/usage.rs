//! What a running VM uses now, read from the host (its cgroup, its VMM's
//! /proc entry): the daemon's per-VM metrics.

use ignis_api::VmRecord;

/// One reading; a value the host does not give (no cgroup: an unconfined
/// VMM, the fake VMM) is `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VmUsage {
    /// CPU time of everything in the VM's cgroup (the VMM and its
    /// threads), else of the VMM process, in microseconds.
    pub cpu_usec: Option<u64>,
    /// Memory charged to the VM's cgroup, in bytes.
    pub memory_bytes: Option<u64>,
    /// Resident memory of the VMM process, in bytes.
    pub vmm_rss_bytes: Option<u64>,
}

/// Reads `rec`'s usage (a VM that is not running has none).
pub fn vm_usage(rec: &VmRecord) -> VmUsage {
    let mut u = VmUsage::default();
    let cgroup = rec
        .status
        .confinement
        .as_ref()
        .and_then(|c| c.cgroup.as_ref());
    if let Some(cg) = cgroup {
        for dir in &cg.paths {
            let dir = std::path::Path::new(dir);
            let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
            if cg.version == "v2" {
                u.cpu_usec = u.cpu_usec.or_else(|| {
                    read("cpu.stat")?
                        .lines()
                        .find_map(|l| l.strip_prefix("usage_usec "))?
                        .trim()
                        .parse()
                        .ok()
                });
                u.memory_bytes = u
                    .memory_bytes
                    .or_else(|| read("memory.current")?.trim().parse().ok());
            } else {
                u.cpu_usec = u.cpu_usec.or_else(|| {
                    read("cpuacct.usage")?
                        .trim()
                        .parse::<u64>()
                        .ok()
                        .map(|ns| ns / 1000)
                });
                u.memory_bytes = u
                    .memory_bytes
                    .or_else(|| read("memory.usage_in_bytes")?.trim().parse().ok());
            }
        }
    }
    if let Some(pid) = rec.status.vmm_pid {
        if u.cpu_usec.is_none() {
            u.cpu_usec = process_cpu_usec(pid);
        }
        u.vmm_rss_bytes = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                let kib = s.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
                kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok()
            })
            .map(|kib| kib * 1024);
    }
    u
}

/// utime + stime of a process (fields 14 and 15 of /proc/PID/stat), in
/// microseconds.
fn process_cpu_usec(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    let ticks: u64 = fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?;
    let hz = u64::try_from(rustix::param::clock_ticks_per_second()).ok()?;
    Some(ticks * 1_000_000 / hz.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_cpu_time_is_read_from_proc() {
        // This test process has used some CPU by now.
        let mut spin = 0u64;
        for i in 0..5_000_000u64 {
            spin = spin.wrapping_add(i * i);
        }
        assert!(spin > 0);
        let t = process_cpu_usec(std::process::id()).expect("own /proc/PID/stat");
        assert!(t > 0);
    }
}
