use std::time::{Duration, Instant};

use ignis_api::{VmRecord, VmState};

use crate::{Error, ErrorKind, Ignis};

impl Ignis {
    fn wait_exited(&self, id: &str, timeout: Duration) -> Result<Option<VmRecord>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(rec) = self.load_vm(id)? else {
                return Ok(None);
            };
            let rec = self.reconcile(rec)?;
            if rec.state() != VmState::Running || Instant::now() > deadline {
                return Ok(Some(rec));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill_vmm(&self, rec: &VmRecord) {
        if let Some(pid) = rec
            .status
            .vmm_pid
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }

    /// `ignis stop [--time T]`: asks the guest to shut down (through its
    /// agent: sync, stop the workload or the image's init, unmount, power
    /// off; without an agent: Ctrl-Alt-Del on Firecracker, the ACPI power
    /// button on QEMU), kills it after `timeout`.
    pub fn vm_stop(&self, query: &str, timeout: Duration) -> Result<VmRecord, Error> {
        let rec = self.reconcile(self.find_vm(query)?)?;
        if rec.state() != VmState::Running {
            return Ok(rec);
        }
        if rec.status.paused {
            // A frozen guest cannot shut down: thaw it first.
            self.vm_pause(&rec.id, false)?;
        }
        let dir = self.vm_dir(&rec.id);
        std::fs::write(dir.join("stop-requested"), b"")
            .map_err(|e| Error::internal("mark the stop", e))?;
        let kind = super::backend_kind(&rec.spec.backend)?;
        let by_agent = rec.status.health.as_deref() == Some("healthy")
            && match self.agent_shutdown(&rec) {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(vm = %rec.id, error = %e, "agent shutdown failed; asking the VMM");
                    false
                }
            };
        if !by_agent {
            if let Err(e) = ignis_vmm::control(kind, &dir).shutdown() {
                tracing::debug!(vm = %rec.id, error = %e, "graceful shutdown request failed; will kill");
            }
        }
        let rec = match self.wait_exited(&rec.id, timeout)? {
            Some(r) if r.state() == VmState::Running => {
                self.kill_vmm(&r);
                self.wait_exited(&r.id, Duration::from_secs(10))?
            }
            other => other,
        };
        rec.ok_or_else(|| Error::new(ErrorKind::NotFound, "the VM was removed while stopping"))
    }

    /// `ignis pause` / `ignis unpause`: freezes or thaws the vCPUs through
    /// the VMM (Firecracker `PATCH /vm`, QEMU `stop`/`cont`).
    pub fn vm_pause(&self, query: &str, pause: bool) -> Result<VmRecord, Error> {
        let rec = self.reconcile(self.find_vm(query)?)?;
        if rec.state() != VmState::Running {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("VM {} is not running", rec.name),
            ));
        }
        if rec.status.paused == pause {
            return Ok(rec);
        }
        let kind = super::backend_kind(&rec.spec.backend)?;
        let control = ignis_vmm::control(kind, &self.vm_dir(&rec.id));
        let res = if pause {
            control.pause()
        } else {
            control.resume()
        };
        res.map_err(|e| {
            Error::with_source(
                ErrorKind::Internal,
                format!(
                    "cannot {} VM {}: {e}",
                    if pause { "pause" } else { "unpause" },
                    rec.name
                ),
                e,
            )
        })?;
        self.update_status(&rec.id, |s| s.paused = pause)?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "the VM was removed"))
    }

    /// `ignis kill`: stops the VMM at once.
    pub fn vm_kill(&self, query: &str) -> Result<VmRecord, Error> {
        let rec = self.reconcile(self.find_vm(query)?)?;
        if rec.state() != VmState::Running {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("VM {} is not running", rec.name),
            ));
        }
        let _ = std::fs::write(self.vm_dir(&rec.id).join("kill-requested"), b"");
        self.kill_vmm(&rec);
        self.wait_exited(&rec.id, Duration::from_secs(10))?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "the VM was removed while being killed"))
    }
}
