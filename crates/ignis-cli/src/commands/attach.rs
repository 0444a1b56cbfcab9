//! `ignis attach` and `run -i/-t`: the VM's serial console on this terminal.

use std::io::{Read, Write};
use std::time::Duration;

use ignis_api::VmState;

use crate::engine::Engine;

/// Ctrl-P Ctrl-Q, Docker's detach keys.
const DETACH: [u8; 2] = [0x10, 0x11];

/// Puts the terminal in raw mode; restores it on drop.
pub(crate) struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    pub(crate) fn enable() -> Option<Self> {
        let stdin = rustix::stdio::stdin();
        let saved = rustix::termios::tcgetattr(stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(stdin, rustix::termios::OptionalActions::Now, &raw).ok()?;
        Some(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            rustix::stdio::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

/// Removes the guest init's report lines from the console stream (they may
/// arrive a byte at a time) and remembers the exit code they carry.
#[derive(Default)]
pub struct ReportFilter {
    /// Bytes at the start of the current line that may be a report.
    pending: Vec<u8>,
    at_line_start: bool,
    dropping: bool,
    pub exit_code: Option<i32>,
}

impl ReportFilter {
    pub fn new() -> Self {
        Self {
            at_line_start: true,
            ..Default::default()
        }
    }

    /// Returns what to show of `input`.
    pub fn feed(&mut self, input: &[u8]) -> Vec<u8> {
        let marker = ignis_guest_config::MARKER.as_bytes();
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if self.dropping {
                self.pending.push(b);
                if b == b'\n' {
                    if let Some(ignis_guest_config::Report::Exit(c)) =
                        ignis_guest_config::parse_report(&String::from_utf8_lossy(&self.pending))
                    {
                        self.exit_code = Some(c);
                    }
                    self.pending.clear();
                    self.dropping = false;
                    self.at_line_start = true;
                }
                continue;
            }
            if self.at_line_start {
                self.pending.push(b);
                if self.pending.len() <= marker.len() && marker.starts_with(&self.pending) {
                    if self.pending.len() == marker.len() {
                        self.dropping = true;
                    }
                    continue;
                }
                out.append(&mut self.pending);
                self.at_line_start = b == b'\n' || b == b'\r';
                continue;
            }
            out.push(b);
            if b == b'\n' || b == b'\r' {
                self.at_line_start = true;
            }
        }
        out
    }
}

/// Attaches until the VM's console closes (it exited) or the user detaches;
/// returns the exit code (the VM's, or 0 when detached).
pub fn attach(ignis: &dyn Engine, vm: &str, raw: bool) -> anyhow::Result<i32> {
    attach_until(ignis, vm, raw).map(|(code, _)| code)
}

/// As [`attach`], also saying whether the user detached (the VM still
/// runs) rather than the VM ending.
pub fn attach_until(ignis: &dyn Engine, vm: &str, raw: bool) -> anyhow::Result<(i32, bool)> {
    let (id, stream) = ignis.vm_attach(vm)?;
    let is_tty = rustix::termios::isatty(rustix::stdio::stdin());
    let _raw = if raw && is_tty {
        RawMode::enable()
    } else {
        None
    };
    enum End {
        Detached,
        Closed(Option<i32>),
    }
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let mut to_vm = stream.writer;
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 1024];
            let mut prev = 0u8;
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => return, // end of input: keep watching output
                    Ok(n) => n,
                };
                if is_tty {
                    for &b in &buf[..n] {
                        if [prev, b] == DETACH {
                            let _ = tx.send(End::Detached);
                            return; // drops (closes) the console's write half
                        }
                        prev = b;
                    }
                }
                if to_vm
                    .write_all(&buf[..n])
                    .and_then(|()| to_vm.flush())
                    .is_err()
                {
                    return;
                }
            }
        });
    }
    {
        let mut from_vm = stream.reader;
        std::thread::spawn(move || {
            let mut out = std::io::stdout().lock();
            let mut buf = [0u8; 8192];
            let mut filter = ReportFilter::new();
            loop {
                match from_vm.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let shown = filter.feed(&buf[..n]);
                        if out.write_all(&shown).and_then(|()| out.flush()).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = tx.send(End::Closed(filter.exit_code));
        });
    }
    let end = rx.recv().unwrap_or(End::Closed(None));
    drop(_raw);
    let code = match end {
        End::Detached => {
            eprintln!("\r\nignis: detached from {id} (still running)");
            return Ok((0, true));
        }
        End::Closed(code) => code,
    };
    // The console closed: the VM is exiting; report its exit code (the
    // init's report, or the record's when there was none).
    if let Some(c) = code {
        return Ok((c, false));
    }
    for _ in 0..500 {
        match ignis.vm_inspect(&id) {
            Ok(v) if v.state() == VmState::Exited => {
                return Ok((v.status.exit_code.unwrap_or(0), false))
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break,
        }
    }
    Ok((0, false))
}

#[cfg(test)]
mod tests {
    use super::ReportFilter;

    #[test]
    fn reports_are_removed_even_when_split_across_reads() {
        let stream = b"boot\r\n\r\nIGNIS-INIT ready\r\n$ ls\r\nIGNORE-this stays\r\n\r\nIGNIS-INIT exit 4\r\n";
        for chunk in [1usize, 3, 7, stream.len()] {
            let mut f = ReportFilter::new();
            let mut shown = Vec::new();
            for c in stream.chunks(chunk) {
                shown.extend(f.feed(c));
            }
            assert_eq!(
                String::from_utf8_lossy(&shown),
                "boot\r\n\r\n$ ls\r\nIGNORE-this stays\r\n\r\n",
                "chunk {chunk}"
            );
            assert_eq!(f.exit_code, Some(4));
        }
    }
}
