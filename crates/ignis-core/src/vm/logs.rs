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
