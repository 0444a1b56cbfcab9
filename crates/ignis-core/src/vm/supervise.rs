//! The per-VM supervisor (`ignis __supervise ID`): owns the VMM child,
//! writes the serial console to a size-capped console.log, records the
//! exit, cleans up. It outlives the CLI that started it; its VMM dies with
//! it (PR_SET_PDEATHSIG), so a killed supervisor never leaves a VM running
//! unmanaged.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use ignis_api::{VmState, VmStatus};
use ignis_guest_config::{parse_report, Report};
use ignis_vmm::{Accel, Backend, BackendKind};

use super::{boot_id, process_start};
use crate::{Error, ErrorKind, Ignis};

/// console.log is rotated to console.log.1 past this size.
pub const CONSOLE_CAP: u64 = 8 << 20;

/// Runtime files removed when the VM stops.
pub(crate) const RUNTIME_FILES: &[&str] = &[
    "qmp.sock",
    "firecracker.sock",
    "fake.pid",
    "shutdown",
    "initrd.img",
    "stop-requested",
    "kill-requested",
];

struct Console {
    path: PathBuf,
    file: std::fs::File,
    size: u64,
}

impl Console {
    fn open(path: &Path) -> std::io::Result<Self> {
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

    fn write(&mut self, line: &[u8]) {
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

pub(crate) fn backend(kind: BackendKind) -> Result<Box<dyn Backend>, Error> {
    Ok(match kind {
        BackendKind::Firecracker => {
            let bin = std::env::var_os("IGNIS_FIRECRACKER")
                .map(PathBuf::from)
                .or_else(|| ignis_vmm::detect::find_in_path(ignis_vmm::firecracker::BINARY))
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Unavailable,
                        "firecracker not found on PATH or in IGNIS_FIRECRACKER",
                    )
                })?;
            Box::new(ignis_vmm::firecracker::FirecrackerBackend::new(bin))
        }
        BackendKind::Qemu => {
            let bin =
                ignis_vmm::detect::find_in_path(ignis_vmm::qemu::BINARY).ok_or_else(|| {
                    Error::new(
                        ErrorKind::Unavailable,
                        "qemu-system-x86_64 not found: apt-get install qemu-system-x86",
                    )
                })?;
            Box::new(ignis_vmm::qemu::QemuBackend::new(bin))
        }
        #[cfg(feature = "fake-vmm")]
        BackendKind::Fake => Box::new(ignis_vmm::fake::FakeBackend),
    })
}

impl Ignis {
    /// Runs the supervisor for VM `id` until its VMM exits.
    pub fn vm_supervise(&self, id: &str) -> Result<(), Error> {
        let rec = self
            .load_vm(id)?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no VM {id}")))?;
        let dir = self.vm_dir(id);
        let fail = |reason: String| {
            let _ = self.update_status(id, |s| {
                s.state = Some(VmState::Exited);
                s.finished_at = Some(crate::now());
                s.reason = Some(reason.clone());
            });
            Error::new(ErrorKind::Internal, reason)
        };
        let kind = super::backend_kind(&rec.spec.backend)?;
        let accel = if rec.spec.accel == "kvm" {
            Accel::Kvm
        } else {
            Accel::Tcg
        };
        let spec = self
            .boot_spec(&rec, kind, accel)
            .map_err(|e| fail(format!("boot setup failed: {e}")))?;
        let backend = backend(kind).map_err(|e| fail(e.to_string()))?;
        let (reader, writer) =
            std::io::pipe().map_err(|e| fail(format!("cannot create the console pipe: {e}")))?;
        let started = Instant::now();
        let mut child = backend
            .launch(&spec, writer.into())
            .map_err(|e| fail(format!("cannot start {}: {e}", kind.as_str())))?;
        let me = std::process::id();
        self.update_status(id, |s| {
            *s = VmStatus {
                state: Some(VmState::Running),
                supervisor_pid: Some(me),
                supervisor_start: process_start(me),
                vmm_pid: Some(child.id()),
                boot_id: boot_id(),
                started_at: Some(crate::now()),
                ..Default::default()
            }
        })?;
        tracing::info!(
            vm = id,
            backend = kind.as_str(),
            pid = child.id(),
            "VMM started"
        );

        let mut console = Console::open(&dir.join("console.log"))
            .map_err(|e| Error::internal("open console.log", e))?;
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        let mut exit_code: Option<i32> = None;
        let mut init_error: Option<String> = None;
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            // Serial consoles end lines with \r\n.
            if line.ends_with(b"\r\n") {
                line.truncate(line.len() - 2);
                line.push(b'\n');
            }
            console.write(&line);
            match parse_report(&String::from_utf8_lossy(&line)) {
                Some(Report::Ready) => {
                    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    self.update_status(id, |s| s.ready_ms = Some(ms))?;
                }
                Some(Report::Exit(code)) => exit_code = Some(code),
                Some(Report::Error(m)) => init_error = Some(m),
                None => {}
            }
        }
        let status = child
            .wait()
            .map_err(|e| Error::internal("wait for the VMM", e))?;
        let stopped = dir.join("stop-requested").exists();
        let killed = dir.join("kill-requested").exists();
        use std::os::unix::process::ExitStatusExt;
        let (code, reason) = match (exit_code, init_error, status.signal()) {
            (_, Some(m), _) => (
                exit_code.or(Some(ignis_guest_config::INIT_FAILED)),
                format!("guest init failed: {m}"),
            ),
            (Some(c), None, _) if stopped => (Some(c), "stopped".to_string()),
            (Some(c), None, _) => (Some(c), "workload exited".to_string()),
            (None, None, Some(_)) if killed => (Some(137), "killed".to_string()),
            (None, None, Some(_)) if stopped => {
                (Some(137), "stopped (killed after the timeout)".to_string())
            }
            (None, None, Some(sig)) => (Some(128 + sig), format!("VMM killed by signal {sig}")),
            // System images report no exit code: a clean VMM exit is the
            // guest powering off.
            (None, None, None) if status.success() && stopped => (Some(0), "stopped".to_string()),
            (None, None, None) if status.success() => (Some(0), "guest powered off".to_string()),
            (None, None, None) => (
                status.code(),
                format!(
                    "VMM exited ({status}) without a report from the guest; see `ignis logs {}`",
                    rec.name
                ),
            ),
        };
        self.update_status(id, |s| {
            s.state = Some(VmState::Exited);
            s.finished_at = Some(crate::now());
            s.exit_code = code;
            s.reason = Some(reason.clone());
            s.vmm_pid = None;
        })?;
        tracing::info!(vm = id, ?code, reason, "VM exited");
        for f in RUNTIME_FILES {
            let _ = std::fs::remove_file(dir.join(f));
        }
        if rec.spec.auto_remove {
            self.vm_remove(id, true)?;
        }
        Ok(())
    }
}
