//! Firecracker's own metrics: it writes one JSON document per flush (every
//! 60 s, and on each `FlushMetrics` action) to its `--metrics-path`, here a
//! FIFO in the VM directory that the supervisor reads. Most of Firecracker's
//! counters are deltas since the previous flush, so the collector adds them
//! up into totals for this run of the VMM and keeps the latest totals in
//! [`TOTALS_FILE`] (replaced atomically), where `/metrics` reads them. It
//! asks for a flush every [`FLUSH_EVERY`] so the totals stay fresh.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The FIFO Firecracker writes its metrics to, in the VM directory (linked
/// into the jail under the jailer).
pub const METRICS_FIFO: &str = "metrics.fifo";
/// The latest totals, in the VM directory.
pub const TOTALS_FILE: &str = "vmm-metrics.json";
/// How often the collector asks Firecracker to flush.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// Firecracker's counters for one run of its VMM, added up over flushes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Metric documents read.
    pub flushes: u64,
    /// vCPU exits to the VMM (port I/O and MMIO reads and writes).
    pub vcpu_exits: u64,
    /// Bytes the guest read and wrote through its block devices.
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    /// Bytes the guest received and sent through its network devices.
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    /// Syscalls the seccomp filters refused (each one kills the VMM).
    pub seccomp_faults: u64,
}

fn num(doc: &Value, group: &str, field: &str) -> u64 {
    doc.get(group)
        .and_then(|g| g.get(field))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

impl Totals {
    /// Adds one flushed document (the aggregate `block` and `net` groups
    /// sum every device).
    pub fn add(&mut self, doc: &Value) {
        self.flushes += 1;
        self.vcpu_exits += [
            "exit_io_in",
            "exit_io_out",
            "exit_mmio_read",
            "exit_mmio_write",
        ]
        .iter()
        .map(|f| num(doc, "vcpu", f))
        .sum::<u64>();
        self.block_read_bytes += num(doc, "block", "read_bytes");
        self.block_write_bytes += num(doc, "block", "write_bytes");
        self.net_rx_bytes += num(doc, "net", "rx_bytes_count");
        self.net_tx_bytes += num(doc, "net", "tx_bytes_count");
        self.seccomp_faults += num(doc, "seccomp", "num_faults");
    }
}

/// The latest totals of the VM whose directory is `dir` (`None`: no
/// Firecracker metrics, or none flushed yet).
pub fn read_totals(dir: &Path) -> Option<Totals> {
    let b = std::fs::read(dir.join(TOTALS_FILE)).ok()?;
    serde_json::from_slice(&b).ok()
}

/// Reads the FIFO and keeps the totals while the VMM runs; stops when
/// dropped (the FIFO removed).
pub struct Collector {
    stop: Arc<AtomicBool>,
    /// Our own writing end: wakes the reader to see `stop`.
    waker: std::fs::File,
    fifo: PathBuf,
}

impl Collector {
    /// Makes the FIFO in `dir` and opens it (read and write, so
    /// Firecracker's non-blocking open for writing finds a reader, and
    /// reads never see an end of file), before the VMM starts.
    pub fn start(dir: &Path) -> std::io::Result<Self> {
        let fifo = dir.join(METRICS_FIFO);
        let _ = std::fs::remove_file(&fifo);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)?;
        let waker = file.try_clone()?;
        let _ = std::fs::remove_file(dir.join(TOTALS_FILE));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, d) = (stop.clone(), dir.to_path_buf());
        std::thread::Builder::new()
            .name("fc-metrics".into())
            .spawn(move || collect(file, &d, &s))?;
        let (s, sock) = (stop.clone(), super::api_path(dir));
        std::thread::Builder::new()
            .name("fc-flush".into())
            .spawn(move || flush(&sock, &s))?;
        Ok(Self { stop, waker, fifo })
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.write_all(b"\n");
        let _ = std::fs::remove_file(&self.fifo);
    }
}

/// One JSON document per line; after each, the totals so far.
fn collect(file: std::fs::File, dir: &Path, stop: &AtomicBool) {
    let mut totals = Totals::default();
    let mut lines = std::io::BufReader::new(file);
    let mut line = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        line.clear();
        match lines.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        // Bounded: a document is a few KiB.
        if line.len() > 1 << 20 {
            continue;
        }
        let Ok(doc) = serde_json::from_slice::<Value>(&line) else {
            continue;
        };
        totals.add(&doc);
        let tmp = dir.join(format!("{TOTALS_FILE}.tmp"));
        let written = serde_json::to_vec(&totals)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, dir.join(TOTALS_FILE)));
        if let Err(e) = written {
            tracing::debug!(error = %e, "cannot keep Firecracker's metrics");
        }
    }
}

/// `FlushMetrics` every [`FLUSH_EVERY`] until stopped (failures are
/// expected while the API socket is not up yet, and once the VMM is gone).
fn flush(sock: &Path, stop: &AtomicBool) {
    let Ok(api) = super::ApiClient::new(sock) else {
        return;
    };
    let step = Duration::from_millis(250);
    let mut waited = FLUSH_EVERY;
    while !stop.load(Ordering::SeqCst) {
        if waited >= FLUSH_EVERY {
            waited = Duration::ZERO;
            let _ = api.put(
                "/actions",
                &serde_json::json!({"action_type": "FlushMetrics"}),
            );
        }
        std::thread::sleep(step);
        waited += step;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_add_up_and_the_collector_keeps_the_totals() {
        let dir = tempfile::tempdir().unwrap();
        let c = Collector::start(dir.path()).unwrap();
        // What Firecracker writes: one document per flush, counters as
        // deltas since the previous one.
        let doc = |exits: u64, rx: u64| {
            format!(
                "{}\n",
                serde_json::json!({
                    "utc_timestamp_ms": 1,
                    "vcpu": {"exit_io_in": exits, "exit_io_out": 1, "exit_mmio_read": 0, "exit_mmio_write": 2, "failures": 0},
                    "block": {"read_bytes": 4096, "write_bytes": 512},
                    "net": {"rx_bytes_count": rx, "tx_bytes_count": 7},
                    "seccomp": {"num_faults": 0},
                })
            )
        };
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join(METRICS_FIFO))
            .unwrap();
        w.write_all(doc(10, 100).as_bytes()).unwrap();
        w.write_all(b"not json\n").unwrap();
        w.write_all(doc(5, 50).as_bytes()).unwrap();
        let want = Totals {
            flushes: 2,
            vcpu_exits: 10 + 1 + 2 + 5 + 1 + 2,
            block_read_bytes: 8192,
            block_write_bytes: 1024,
            net_rx_bytes: 150,
            net_tx_bytes: 14,
            seccomp_faults: 0,
        };
        let mut got = None;
        for _ in 0..500 {
            got = read_totals(dir.path());
            if got.as_ref() == Some(&want) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(got, Some(want));
        drop(c);
        assert!(!dir.path().join(METRICS_FIFO).exists());
    }
}
