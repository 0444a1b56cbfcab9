use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ignis_api::{VmRecord, VmState, VmStatus};

use crate::{Error, ErrorKind, Ignis};

/// How long `start` waits for the guest init to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

impl Ignis {
    /// `ignis start`: launches the VM's supervisor (which outlives this
    /// process) and waits until the VMM runs, and with `wait_ready` until
    /// the guest init reports that the workload started and the guest agent
    /// answers.
    pub fn vm_start(&self, query: &str, wait_ready: bool) -> Result<VmRecord, Error> {
        let rec = self.find_vm(query)?;
        let rec = self.reconcile(rec)?;
        if rec.state() == VmState::Running {
            return Ok(rec);
        }
        let id = rec.id.clone();
        let dir = self.vm_dir(&id);
        // A supervisor is alive (another start of this VM is under way, e.g.
        // by a reconciler that was killed): wait for it, never start a second.
        let free = self
            .store
            .try_object_lock(super::supervise::SUPERVISOR_LOCK, &id)
            .map_err(|e| Error::internal("lock the VM", e))?
            .is_some();
        if !free {
            return self.wait_started(&id, wait_ready, None);
        }
        for f in ["stop-requested", "kill-requested"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        self.update_status(&id, |s| {
            *s = VmStatus {
                state: Some(VmState::Created),
                restore_pending: s.restore_pending,
                ..Default::default()
            }
        })?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("supervisor.log"))
            .map_err(|e| Error::internal("open the supervisor log", e))?;
        let exe =
            std::env::current_exe().map_err(|e| Error::internal("find the ignis binary", e))?;
        let mut cmd = Command::new(exe);
        cmd.arg("--root")
            .arg(self.root())
            .arg("__supervise")
            .arg(&id)
            // The bridge it makes is the subnet this command was given
            // (`--subnet` is not inherited the way IGNIS_SUBNET is).
            .env("IGNIS_SUBNET", self.subnet.to_string())
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|e| Error::internal("open the supervisor log", e))?,
            )
            .stderr(log);
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| Error::internal("start the VM supervisor", e))?;
        self.wait_started(&id, wait_ready, Some(child))
    }

    /// Waits until the VM runs (and with `wait_ready`, until it is ready),
    /// or fails with why it did not; `child` is the supervisor we spawned.
    fn wait_started(
        &self,
        id: &str,
        wait_ready: bool,
        mut child: Option<std::process::Child>,
    ) -> Result<VmRecord, Error> {
        let id = id.to_string();
        let dir = self.vm_dir(&id);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let rec = self.load_vm(&id)?.ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!("VM {id} was removed while starting"),
                )
            })?;
            match rec.state() {
                // Ready: the init started the workload and the agent (if
                // the backend has one) answered.
                VmState::Running
                    if !wait_ready
                        || (rec.status.ready_ms.is_some()
                            && rec.status.health.as_deref() != Some("starting")) =>
                {
                    return Ok(rec)
                }
                VmState::Exited => {
                    let reason = rec
                        .status
                        .reason
                        .clone()
                        .unwrap_or_else(|| "unknown".into());
                    // An app VM that already ran to completion started fine.
                    if rec.status.ready_ms.is_some() {
                        return Ok(rec);
                    }
                    return Err(Error::new(
                        ErrorKind::Internal,
                        format!(
                            "VM {} exited while booting: {reason}; see `ignis logs {}`",
                            rec.name, rec.name
                        ),
                    ));
                }
                _ => {}
            }
            let exited = child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                if status.success() {
                    // It found another supervisor running this VM: that
                    // one decides, keep waiting.
                    child = None;
                    continue;
                }
                if self
                    .load_vm(&id)?
                    .is_some_and(|r| r.state() != VmState::Exited)
                {
                    let log =
                        std::fs::read_to_string(dir.join("supervisor.log")).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(5).collect();
                    return Err(Error::new(
                        ErrorKind::Internal,
                        format!(
                            "the VM supervisor exited ({status}) before the VM ran: {}",
                            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                        ),
                    ));
                }
            }
            if Instant::now() > deadline {
                return Err(Error::new(
                    ErrorKind::Internal,
                    format!(
                        "VM {} did not report ready within {}s; see `ignis logs {}`",
                        rec.name,
                        READY_TIMEOUT.as_secs(),
                        rec.name
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
