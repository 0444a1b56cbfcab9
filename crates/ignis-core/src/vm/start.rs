use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ignis_api::{VmRecord, VmState};

use crate::timing::Timeline;
use crate::{Error, ErrorKind, Ignis};

/// How long `start` waits for the guest init to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// The supervisor launcher binary.
pub const SUPERVISOR_BINARY: &str = "ignis-supervisor";
/// Where the supervisor launcher is when it is not next to the running
/// binary, on PATH, or in `/usr/lib/ignis`.
pub const ENV_SUPERVISOR: &str = "IGNIS_SUPERVISOR";

/// The descriptor number the supervisor's notification pipe has in it.
pub const NOTIFY_FD: i32 = 3;

/// The supervisor launcher: `$IGNIS_SUPERVISOR`, next to the running
/// binary (the CLI, the daemon, a test), on PATH, or in the system library
/// directory.
pub fn find_supervisor() -> Result<PathBuf, Error> {
    if let Some(p) = std::env::var_os(ENV_SUPERVISOR) {
        return Ok(PathBuf::from(p));
    }
    let beside = std::env::current_exe().ok().and_then(|exe| {
        let dir = exe.parent()?.to_path_buf();
        // Test binaries live in target/<profile>/deps, the launcher one up.
        [
            dir.join(SUPERVISOR_BINARY),
            dir.join("..").join(SUPERVISOR_BINARY),
        ]
        .into_iter()
        .find(|p| p.is_file())
    });
    beside
        .or_else(|| ignis_vmm::detect::find_in_path(SUPERVISOR_BINARY))
        .or_else(|| {
            ["/usr/local/lib/ignis", "/usr/lib/ignis"]
                .iter()
                .map(|d| PathBuf::from(d).join(SUPERVISOR_BINARY))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                format!("{SUPERVISOR_BINARY} was not found next to this binary, on PATH or in /usr/lib/ignis; install it with ignis (cargo build builds both) or set {ENV_SUPERVISOR}"),
            )
        })
}

impl Ignis {
    /// `ignis start`: launches the VM's supervisor (which outlives this
    /// process) and waits until the VMM runs, and with `wait_ready` until
    /// the guest init reports that the workload started and the guest agent
    /// answers.
    pub fn vm_start(&self, query: &str, wait_ready: bool) -> Result<VmRecord, Error> {
        self.vm_start_timed(query, wait_ready, &Timeline::new())
    }

    /// [`Ignis::vm_start`] continuing `timeline` (a `run` passes the one
    /// its create began): the supervisor records its phases on it.
    pub fn vm_start_timed(
        &self,
        query: &str,
        wait_ready: bool,
        timeline: &Timeline,
    ) -> Result<VmRecord, Error> {
        let rec = self.find_vm(query)?;
        let rec = self.reconcile(rec)?;
        if !rec.run_state().can_start() {
            return Ok(rec);
        }
        // Starts of VMs with volumes one at a time, until each VMM runs:
        // two cannot both see a volume free.
        let _volumes = if rec.spec.volumes.is_empty() {
            None
        } else {
            let lock = self
                .store
                .object_lock("volumes", "attach")
                .map_err(|e| Error::internal("lock the volumes", e))?;
            self.volumes_check_free(&rec)?;
            Some(lock)
        };
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
        let launcher = find_supervisor()?;
        // A fresh status for this start (a VM just created has one: no
        // write). The supervisor records this start's phases.
        let mut fresh = rec.status.clone();
        fresh
            .begin_start()
            .map_err(|e| Error::wrap(ErrorKind::Conflict, e))?;
        fresh.timings = rec.status.timings.clone();
        if rec.status != fresh {
            let mut refused = None;
            self.update_status(&id, |s| refused = s.begin_start().err())?;
            if let Some(e) = refused {
                // Started by someone else meanwhile: wait for that start.
                tracing::debug!(vm = %id, error = %e, "started meanwhile");
                return self.wait_started(&id, wait_ready, None);
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("supervisor.log"))
            .map_err(|e| Error::internal("open the supervisor log", e))?;
        // The supervisor tells us when the VM's status changed (running,
        // ready, exited) through a pipe: no polling. End of file means it
        // exited.
        let (notify_r, notify_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| {
                Error::internal("create the notification pipe", std::io::Error::from(e))
            })?;
        let mut cmd = Command::new(launcher);
        cmd.arg("--root")
            .arg(self.root())
            .arg("--subnet")
            .arg(self.subnet.to_string())
            .arg("--subnet6")
            .arg(self.subnet6_setting())
            .arg("--origin")
            .arg(timeline.origin_ns().to_string())
            .arg("--phases")
            .arg(serde_json::to_string(&timeline.phases()).expect("json"))
            .arg("--spawned")
            .arg(crate::timing::now_ns().to_string())
            .arg("--notify-fd")
            .arg(NOTIFY_FD.to_string())
            .arg("--vm")
            .arg(&id)
            // The bridge it makes is the subnet this command was given
            // (`--subnet` is not inherited the way IGNIS_SUBNET is).
            .env("IGNIS_SUBNET", self.subnet.to_string())
            .env("IGNIS_SUBNET6", self.subnet6_setting())
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|e| Error::internal("open the supervisor log", e))?,
            )
            .stderr(log);
        cmd.process_group(0);
        pass_fd(&mut cmd, notify_w.as_fd().as_raw_fd(), NOTIFY_FD);
        let child = cmd
            .spawn()
            .map_err(|e| Error::internal("start the VM supervisor", e))?;
        drop(notify_w);
        self.wait_started(&id, wait_ready, Some((child, notify_r)))
    }

    /// Waits until the VM runs (and with `wait_ready`, until it is ready),
    /// or fails with why it did not; `spawned` is the supervisor we spawned
    /// and the read end of its notification pipe.
    fn wait_started(
        &self,
        id: &str,
        wait_ready: bool,
        mut spawned: Option<(std::process::Child, OwnedFd)>,
    ) -> Result<VmRecord, Error> {
        let id = id.to_string();
        let dir = self.vm_dir(&id);
        let deadline = Instant::now() + READY_TIMEOUT;
        let load = || {
            self.load_vm(&id)?.ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!("VM {id} was removed while starting"),
                )
            })
        };
        loop {
            let rec = load()?;
            if let Some(done) = started(&rec, wait_ready) {
                return done;
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
            let Some((child, notify)) = spawned.as_mut() else {
                // Another process's supervisor: it tells us nothing.
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            if wait_notification(notify, deadline) {
                continue;
            }
            // End of file: the supervisor exited (or handed the VM to
            // another one that already ran it).
            let status = child
                .wait()
                .map_err(|e| Error::internal("wait for the VM supervisor", e))?;
            let rec = load()?;
            if let Some(done) = started(&rec, wait_ready) {
                return done;
            }
            if status.success() && rec.state() != VmState::Exited {
                // It found another supervisor running this VM: that one
                // decides, keep waiting.
                spawned = None;
                continue;
            }
            let log = std::fs::read_to_string(dir.join("supervisor.log")).unwrap_or_default();
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
}

/// Whether a start is over: `Some(Ok)` when the VM runs (and is ready if
/// asked), `Some(Err)` when it exited before it got there.
fn started(rec: &VmRecord, wait_ready: bool) -> Option<Result<VmRecord, Error>> {
    match rec.state() {
        // Rebooting (or restarted by its policy): the next run decides.
        VmState::Exited | VmState::Created if rec.status.restarting => None,
        // Ready: the init started the workload and the agent (if the
        // backend has one) answered.
        VmState::Running
            if !wait_ready
                || (rec.status.ready_ms.is_some()
                    && rec.status.health != Some(ignis_api::Health::Starting)) =>
        {
            Some(Ok(rec.clone()))
        }
        // An app VM that already ran to completion started fine.
        VmState::Exited if rec.status.ready_ms.is_some() => Some(Ok(rec.clone())),
        VmState::Exited => {
            let reason = rec.status.reason.as_deref().unwrap_or("unknown");
            Some(Err(Error::new(
                ErrorKind::Internal,
                format!(
                    "VM {} exited while booting: {reason}; see `ignis logs {}`",
                    rec.name, rec.name
                ),
            )))
        }
        _ => None,
    }
}

/// Blocks until the supervisor writes a notification (true) or closes
/// the pipe (false), at most until `deadline` (true: look again).
fn wait_notification(notify: &OwnedFd, deadline: Instant) -> bool {
    use rustix::event::{poll, PollFd, PollFlags};
    let left = deadline.saturating_duration_since(Instant::now());
    let timeout = rustix::event::Timespec {
        tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(left.subsec_nanos()),
    };
    let mut fds = [PollFd::new(notify, PollFlags::IN)];
    match poll(&mut fds, Some(&timeout)) {
        Ok(0) | Err(_) => return true,
        Ok(_) => {}
    }
    let mut buf = [0u8; 512];
    match rustix::io::read(notify, &mut buf) {
        Ok(0) => false,
        Ok(_) => true,
        Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => true,
        Err(_) => false,
    }
}

/// Makes `fd` of this process descriptor `target` of the child (without
/// close-on-exec), leaving it closed in every other child: other threads
/// may spawn at the same time (`fork -n`), and a copy of the pipe's write
/// end in another child would hold it open.
#[allow(unsafe_code)]
fn pass_fd(cmd: &mut Command, fd: i32, target: i32) {
    // SAFETY: the closure runs between fork and exec and calls only dup2
    // and fcntl, which are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if fd == target {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, target) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
