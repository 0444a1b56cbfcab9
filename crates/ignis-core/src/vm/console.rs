//! The VM's serial console as the supervisor handles it: written to a
//! size-capped `console.log`, broadcast to `ignis attach` clients (whose
//! input goes to the VM's serial input) through `attach.sock`.

use std::io::Write;
use std::path::{Path, PathBuf};

/// console.log is rotated to console.log.1 past this size.
pub const CONSOLE_CAP: u64 = 8 << 20;

/// `ignis attach` clients: they get the console output as it comes and
/// their input goes to the VM's serial port. A client that connects in the
/// middle of a line starts at the next one, so it never sees the tail of a
/// line (or of an init report).
#[derive(Default)]
pub(crate) struct Attached {
    inner: std::sync::Mutex<AttachedInner>,
}

#[derive(Default)]
struct AttachedInner {
    clients: Vec<(std::os::unix::net::UnixStream, bool)>,
    mid_line: bool,
}

impl Attached {
    fn add(&self, c: std::os::unix::net::UnixStream) {
        let mut inner = self.inner.lock().expect("attach mutex");
        let synced = !inner.mid_line;
        inner.clients.push((c, synced));
    }

    pub(crate) fn broadcast(&self, bytes: &[u8]) {
        let Some(last) = bytes.last() else { return };
        let mut inner = self.inner.lock().expect("attach mutex");
        inner.mid_line = *last != b'\n';
        inner.clients.retain_mut(|(c, synced)| {
            let from = if *synced {
                0
            } else {
                match bytes.iter().position(|b| *b == b'\n') {
                    Some(p) => {
                        *synced = true;
                        p + 1
                    }
                    None => return true,
                }
            };
            c.write_all(&bytes[from..]).is_ok()
        });
    }

    pub(crate) fn close_all(&self) {
        for (c, _) in self.inner.lock().expect("attach mutex").clients.drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Serves `attach.sock`: each client is added to the broadcast list and a
/// thread copies its input to the VM's serial input.
pub(crate) fn serve_attach(
    path: &Path,
    attached: std::sync::Arc<Attached>,
    input: std::sync::Arc<std::sync::Mutex<std::io::PipeWriter>>,
) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let Ok(reader) = conn.try_clone() else {
                continue;
            };
            attached.add(conn);
            let input = input.clone();
            std::thread::spawn(move || {
                let mut reader = reader;
                let mut buf = [0u8; 4096];
                loop {
                    match std::io::Read::read(&mut reader, &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let mut w = input.lock().expect("input mutex");
                            if w.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    Ok(())
}

pub(crate) struct Console {
    path: PathBuf,
    file: std::fs::File,
    size: u64,
    /// `console.log.idx`: when each line began (see [`index_path`]).
    index: Option<std::fs::File>,
    /// The next byte written starts a line.
    at_line_start: bool,
}

/// The index beside a console log: one 16-byte record per line, the byte
/// offset where the line starts in the log and when it was written (Unix
/// nanoseconds), both little-endian (`logs --since`, `logs -t`). Rotated
/// with its log.
pub fn index_path(log: &Path) -> PathBuf {
    let mut p = log.as_os_str().to_owned();
    p.push(".idx");
    PathBuf::from(p)
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

impl Console {
    pub(crate) fn open(path: &Path) -> std::io::Result<Self> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            size,
            index: open_append(&index_path(path)).ok(),
            at_line_start: true,
        })
    }

    pub(crate) fn write(&mut self, line: &[u8]) {
        if line.is_empty() {
            return;
        }
        if self.size + line.len() as u64 > CONSOLE_CAP {
            let _ = std::fs::rename(&self.path, self.path.with_extension("log.1"));
            let _ = std::fs::rename(
                index_path(&self.path),
                index_path(&self.path.with_extension("log.1")),
            );
            if let Ok(f) = open_append(&self.path) {
                self.file = f;
                self.size = 0;
                self.index = open_append(&index_path(&self.path)).ok();
                // The rest of a line cut by the rotation starts the new log.
                self.at_line_start = true;
            }
        }
        // Every line starting in this chunk, stamped now.
        let now = super::logs::now_ns();
        let mut records = Vec::new();
        let mut start = self.at_line_start;
        for (i, b) in line.iter().enumerate() {
            if start {
                records.extend_from_slice(&(self.size + i as u64).to_le_bytes());
                records.extend_from_slice(&now.to_le_bytes());
            }
            start = *b == b'\n';
        }
        if self.file.write_all(line).is_ok() {
            self.size += line.len() as u64;
            self.at_line_start = start;
            if let Some(idx) = self.index.as_mut() {
                let _ = idx.write_all(&records);
            }
        }
    }
}
