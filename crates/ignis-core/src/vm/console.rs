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
}

impl Console {
    pub(crate) fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            size,
        })
    }

    pub(crate) fn write(&mut self, line: &[u8]) {
        if self.size + line.len() as u64 > CONSOLE_CAP {
            let _ = std::fs::rename(&self.path, self.path.with_extension("log.1"));
            if let Ok(f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
            {
                self.file = f;
                self.size = 0;
            }
        }
        if self.file.write_all(line).is_ok() {
            self.size += line.len() as u64;
        }
    }
}
