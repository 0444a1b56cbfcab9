use std::io::{BufRead, BufReader, Read, Seek};
use std::path::PathBuf;
use std::time::Duration;

use ignis_api::VmState;

use crate::{Error, Ignis};

/// Reads a VM's console log, optionally following it while the VM runs.
pub struct LogFollower {
    path: PathBuf,
    reader: Option<BufReader<std::fs::File>>,
}

impl LogFollower {
    /// Next line (with its newline), `None` at the end of what is there now.
    pub fn next_line(&mut self) -> Option<Vec<u8>> {
        if self.reader.is_none() {
            self.reader = std::fs::File::open(&self.path).ok().map(BufReader::new);
        }
        let r = self.reader.as_mut()?;
        let mut line = Vec::new();
        let pos = r.stream_position().ok()?;
        match r.read_until(b'\n', &mut line) {
            Ok(n) if n > 0 && line.ends_with(b"\n") => Some(line),
            _ => {
                // A partial line: read it again when it is complete.
                let _ = r.seek(std::io::SeekFrom::Start(pos));
                None
            }
        }
    }

    /// The rest, complete line or not (at the very end).
    pub fn rest(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(r) = self.reader.as_mut() {
            let _ = r.read_to_end(&mut out);
        }
        out
    }
}

/// Which lines `logs` shows, and how (`--tail`, `--since`, `-t`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Only the last N lines (of what is there when it starts).
    pub tail: Option<usize>,
    /// Only lines written at or after this time (Unix nanoseconds).
    pub since_ns: Option<i64>,
    /// Prefix each line with when it was written (RFC 3339, nanoseconds).
    pub timestamps: bool,
}

impl LogOptions {
    fn plain(&self) -> bool {
        self.tail.is_none() && self.since_ns.is_none() && !self.timestamps
    }
}

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The records of a console index: (line start offset, Unix nanoseconds),
/// in offset order.
fn read_index(log: &std::path::Path) -> Vec<(u64, i64)> {
    let data = std::fs::read(super::console::index_path(log)).unwrap_or_default();
    data.chunks_exact(16)
        .map(|r| {
            let (o, t) = r.split_at(8);
            (
                u64::from_le_bytes(o.try_into().expect("8 bytes")),
                i64::from_le_bytes(t.try_into().expect("8 bytes")),
            )
        })
        .collect()
}

/// When the line starting at `offset` was written: its record, else the
/// last one before it (a line the index missed), else unknown (a log
/// written before there were indexes).
fn stamp(index: &[(u64, i64)], offset: u64) -> Option<i64> {
    match index.binary_search_by_key(&offset, |r| r.0) {
        Ok(i) => Some(index[i].1),
        Err(0) => None,
        Err(i) => Some(index[i - 1].1),
    }
}

/// `2026-01-02T15:04:05.123456789Z`, as `docker logs -t`.
pub fn rfc3339_ns(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Writes lines of a log through the options' filter and prefix.
struct Lines<'a> {
    opts: &'a LogOptions,
    out: &'a mut dyn std::io::Write,
}

impl Lines<'_> {
    fn keep(&self, ts: Option<i64>) -> bool {
        match self.opts.since_ns {
            Some(since) => ts.is_some_and(|t| t >= since),
            None => true,
        }
    }
    fn write(&mut self, ts: Option<i64>, line: &[u8]) -> std::io::Result<()> {
        if self.opts.timestamps {
            if let Some(t) = ts {
                self.out.write_all(rfc3339_ns(t).as_bytes())?;
                self.out.write_all(b" ")?;
            }
        }
        self.out.write_all(line)
    }
}

impl Ignis {
    /// A follower of the VM's console from the beginning.
    pub fn vm_console(&self, query: &str) -> Result<(String, LogFollower), Error> {
        let rec = self.find_vm(query)?;
        let path = self.vm_dir(&rec.id).join("console.log");
        Ok((rec.id, LogFollower { path, reader: None }))
    }

    /// `ignis logs [-f]`: writes the console log (the rotated part first) to
    /// `out`; with `follow`, keeps going until the VM stops.
    pub fn vm_logs(
        &self,
        query: &str,
        follow: bool,
        out: &mut dyn std::io::Write,
    ) -> Result<(), Error> {
        self.vm_logs_with(query, follow, &LogOptions::default(), out)
    }

    /// `ignis logs [-f] [--tail N] [--since T] [-t]`: as [`Ignis::vm_logs`],
    /// the lines chosen and stamped by `opts` (times from the index the
    /// supervisor writes beside the log).
    pub fn vm_logs_with(
        &self,
        query: &str,
        follow: bool,
        opts: &LogOptions,
        out: &mut dyn std::io::Write,
    ) -> Result<(), Error> {
        if !opts.plain() {
            return self.vm_logs_filtered(query, follow, opts, out);
        }
        let rec = self.find_vm(query)?;
        let dir = self.vm_dir(&rec.id);
        if let Ok(old) = std::fs::read(dir.join("console.log.1")) {
            let _ = out.write_all(&old);
        }
        let (_, mut f) = self.vm_console(&rec.id)?;
        loop {
            while let Some(line) = f.next_line() {
                if out.write_all(&line).is_err() {
                    return Ok(());
                }
            }
            let _ = out.flush();
            if !follow {
                let _ = out.write_all(&f.rest());
                return Ok(());
            }
            let running = match self.load_vm(&rec.id)? {
                Some(r) => self.reconcile(r)?.state() == VmState::Running,
                None => false,
            };
            match running {
                true => std::thread::sleep(Duration::from_millis(50)),
                false => {
                    while let Some(line) = f.next_line() {
                        let _ = out.write_all(&line);
                    }
                    let _ = out.write_all(&f.rest());
                    return Ok(());
                }
            }
        }
    }
}

impl Ignis {
    fn vm_logs_filtered(
        &self,
        query: &str,
        follow: bool,
        opts: &LogOptions,
        out: &mut dyn std::io::Write,
    ) -> Result<(), Error> {
        let rec = self.find_vm(query)?;
        let dir = self.vm_dir(&rec.id);
        let current = dir.join("console.log");
        let mut lines: Vec<(Option<i64>, Vec<u8>)> = Vec::new();
        let mut consumed = 0u64;
        for log in [dir.join("console.log.1"), current.clone()] {
            let Ok(data) = std::fs::read(&log) else {
                continue;
            };
            let index = read_index(&log);
            let is_current = log == current;
            let mut off = 0usize;
            while off < data.len() {
                let end = match data[off..].iter().position(|b| *b == b'\n') {
                    Some(p) => off + p + 1,
                    // A partial last line: shown at the end, or followed.
                    None if is_current && follow => break,
                    None => data.len(),
                };
                lines.push((stamp(&index, off as u64), data[off..end].to_vec()));
                off = end;
            }
            if is_current {
                consumed = off as u64;
            }
        }
        let mut w = Lines { opts, out };
        lines.retain(|(ts, _)| w.keep(*ts));
        let skip = opts
            .tail
            .map(|n| lines.len().saturating_sub(n))
            .unwrap_or(0);
        for (ts, line) in &lines[skip..] {
            if w.write(*ts, line).is_err() {
                return Ok(());
            }
        }
        let _ = w.out.flush();
        if !follow {
            return Ok(());
        }
        // Then what comes, from where the snapshot ended.
        let mut reader = match std::fs::File::open(&current) {
            Ok(mut f) => {
                let _ = f.seek(std::io::SeekFrom::Start(consumed));
                BufReader::new(f)
            }
            Err(_) => return Ok(()),
        };
        let mut pos = consumed;
        let mut index = read_index(&current);
        loop {
            let mut line = Vec::new();
            let start = reader.stream_position().unwrap_or(pos);
            let n = reader.read_until(b'\n', &mut line).unwrap_or(0);
            if n > 0 && line.ends_with(b"\n") {
                if index.last().is_none_or(|r| r.0 < pos) {
                    index = read_index(&current);
                }
                let ts = stamp(&index, pos);
                pos += n as u64;
                if w.keep(ts) && w.write(ts, &line).is_err() {
                    return Ok(());
                }
                continue;
            }
            // A partial line: read it again when it is complete.
            let _ = reader.seek(std::io::SeekFrom::Start(start));
            let _ = w.out.flush();
            let running = match self.load_vm(&rec.id)? {
                Some(r) => self.reconcile(r)?.state() == VmState::Running,
                None => false,
            };
            if running {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            // The VM stopped: the rest, complete line or not.
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
            let mut at = pos;
            index = read_index(&current);
            for line in rest.split_inclusive(|b| *b == b'\n') {
                let ts = stamp(&index, at);
                at += line.len() as u64;
                if w.keep(ts) && w.write(ts, line).is_err() {
                    break;
                }
            }
            let _ = w.out.flush();
            return Ok(());
        }
    }

    /// The attach socket of a running VM, waiting (up to 10 s) for the
    /// supervisor to create it.
    pub fn vm_attach_socket(&self, query: &str) -> Result<(String, std::path::PathBuf), Error> {
        let rec = self.find_vm(query)?;
        let sock = self.vm_dir(&rec.id).join("attach.sock");
        for _ in 0..500 {
            if sock.exists() {
                return Ok((rec.id, sock));
            }
            let rec = self
                .reconcile(self.load_vm(&rec.id)?.ok_or_else(|| {
                    Error::new(crate::ErrorKind::NotFound, "the VM was removed")
                })?)?;
            if rec.state() == VmState::Exited {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(Error::new(
            crate::ErrorKind::Conflict,
            format!("VM {} is not running; start it first", rec.name),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_like_docker() {
        assert_eq!(rfc3339_ns(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_ns(1_767_366_245_123_456_789),
            "2026-01-02T15:04:05.123456789Z"
        );
        assert_eq!(
            rfc3339_ns(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
    }

    #[test]
    fn lines_take_their_record_or_the_one_before() {
        let idx = [(0, 10), (5, 20), (9, 30)];
        assert_eq!(stamp(&idx, 5), Some(20));
        assert_eq!(stamp(&idx, 7), Some(20));
        assert_eq!(stamp(&[(4, 1)], 0), None);
    }
}
