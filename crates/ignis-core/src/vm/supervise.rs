//! The per-VM supervisor (launched as `ignis-supervisor --vm ID`): owns
//! the VMM child, writes the serial console to a size-capped console.log,
//! records the exit, cleans up. It outlives the CLI that started it; its
//! VMM dies with it (a watcher forked at its start kills the VMM when it
//! dies, see `ignis_vmm::reaper`), so a killed supervisor never leaves a
//! VM running unmanaged. It tells the process that started it what
//! happened (running, ready, exited) through a pipe.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ignis_api::{VmState, VmStatus};
use ignis_guest_config::{parse_report, Report};
use ignis_vmm::{Accel, Backend, BackendKind};

use super::{boot_id, process_start};
use crate::timing::Timeline;
use crate::{Error, ErrorKind, Ignis};

/// Held by the supervisor of a VM for its whole life (released by the
/// kernel when it dies).
pub(crate) const SUPERVISOR_LOCK: &str = "supervisor";

/// console.log is rotated to console.log.1 past this size.
pub const CONSOLE_CAP: u64 = 8 << 20;

/// Runtime files removed when the VM stops.
pub(crate) const RUNTIME_FILES: &[&str] = &[
    "qmp.sock",
    "firecracker.sock",
    "attach.sock",
    "fake.pid",
    "shutdown",
    "initrd.img",
    "stop-requested",
    "kill-requested",
    super::AGENT_SOCKET,
    ignis_vmm::AGENT_VMM_SOCKET,
    ignis_vmm::VSOCK_SOCKET,
];

/// `ignis attach` clients: they get the console output as it comes and
/// their input goes to the VM's serial port. A client that connects in the
/// middle of a line starts at the next one, so it never sees the tail of a
/// line (or of an init report).
#[derive(Default)]
struct Attached {
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

    fn broadcast(&self, bytes: &[u8]) {
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

    fn close_all(&self) {
        for (c, _) in self.inner.lock().expect("attach mutex").clients.drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Serves `attach.sock`: each client is added to the broadcast list and a
/// thread copies its input to the VM's serial input.
fn serve_attach(
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

/// How the launcher hands a VM to [`Ignis::vm_supervise`].
#[derive(Default)]
pub struct SuperviseOptions {
    /// The timeline of the command that started the VM (same clock).
    pub timeline: Timeline,
    /// When that command spawned the supervisor (`spawn` phase).
    pub spawned_ns: Option<u64>,
    /// Where to tell the starter that the status changed.
    pub notify: Option<std::fs::File>,
    /// The VMM's watcher, forked at the launcher's start while it was
    /// small; forked late (a full copy of the supervisor) when absent.
    pub watcher: Option<ignis_vmm::reaper::Watcher>,
}

/// The starter's end of the notification pipe: a line per status change
/// ("running", "ready", "health"); the starter re-reads the record. End
/// of file (the supervisor exited) is the last word.
pub(crate) struct Notifier(std::sync::Mutex<Option<std::fs::File>>);

impl Notifier {
    fn send(&self, what: &str) {
        let mut w = self.0.lock().expect("notify mutex");
        if let Some(f) = w.as_mut() {
            // The starter may be gone (its CLI was interrupted): stop telling.
            if writeln!(f, "{what}").is_err() {
                *w = None;
            }
        }
    }
}

/// Returns the heap's free memory to the kernel (glibc keeps it).
#[allow(unsafe_code)]
fn trim_heap() {
    // SAFETY: malloc_trim only walks glibc's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The firecracker binary: `$IGNIS_FIRECRACKER`, else on PATH.
pub(crate) fn firecracker_binary() -> Option<PathBuf> {
    std::env::var_os("IGNIS_FIRECRACKER")
        .map(PathBuf::from)
        .or_else(|| ignis_vmm::detect::find_in_path(ignis_vmm::firecracker::BINARY))
}

pub(crate) fn backend(kind: BackendKind) -> Result<Box<dyn Backend>, Error> {
    Ok(match kind {
        BackendKind::Firecracker => {
            let bin = firecracker_binary().ok_or_else(|| {
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
    /// Records what the agent mux observes (readiness, health) in the VM's
    /// status until the console ends.
    fn record_agent_events(
        &self,
        id: &str,
        events: std::sync::mpsc::Receiver<super::agent_mux::AgentEvent>,
        done: &std::sync::atomic::AtomicBool,
        timeline: &Timeline,
        launch_ns: u64,
        notify: &Notifier,
    ) {
        use super::agent_mux::AgentEvent;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let Ok(ev) = events.recv_timeout(std::time::Duration::from_millis(100)) else {
                continue;
            };
            let r = self.update_status(id, |s| {
                if s.state != Some(VmState::Running) {
                    return;
                }
                match &ev {
                    AgentEvent::Ready(d) => {
                        s.agent_ms = Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                        s.health = Some("healthy".into());
                        timeline.record_since("agent-ready", launch_ns);
                        crate::timing::merge(&mut s.timings, &timeline.phases());
                    }
                    AgentEvent::Healthy => s.health = Some("healthy".into()),
                    AgentEvent::Unhealthy(why) => {
                        tracing::warn!(vm = id, why, "agent unhealthy");
                        s.health = Some("unhealthy".into());
                    }
                }
            });
            match r {
                Err(e) => tracing::warn!(vm = id, error = %e, "cannot record the agent's health"),
                Ok(_) => notify.send("health"),
            }
        }
    }

    /// Runs the supervisor for VM `id` until its VMM exits. One per VM: a
    /// second one (a start racing another) leaves at once, changing nothing.
    pub fn vm_supervise(&self, id: &str, opts: SuperviseOptions) -> Result<(), Error> {
        let SuperviseOptions {
            timeline,
            spawned_ns,
            notify,
            watcher,
        } = opts;
        if let Some(at) = spawned_ns {
            timeline.record_since("spawn", at);
        }
        let prepare = timeline.phase("prepare");
        let notify = Notifier(std::sync::Mutex::new(notify));
        let Some(_only_supervisor) = self
            .store
            .try_object_lock(SUPERVISOR_LOCK, id)
            .map_err(|e| Error::internal("lock the VM", e))?
        else {
            tracing::info!(vm = id, "another supervisor runs this VM");
            if let Some(w) = watcher {
                w.dismiss();
            }
            return Ok(());
        };
        let rec = self
            .load_vm(id)?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no VM {id}")))?;
        let dir = self.vm_dir(id);
        let fail = |reason: String| {
            let _ = self.update_status(id, |s| {
                s.state = Some(VmState::Exited);
                s.finished_at = Some(crate::now());
                s.reason = Some(reason.clone());
                crate::timing::merge(&mut s.timings, &timeline.phases());
            });
            Error::new(ErrorKind::Internal, reason)
        };
        let kind = super::backend_kind(&rec.spec.backend)?;
        let accel = if rec.spec.accel == "kvm" {
            Accel::Kvm
        } else {
            Accel::Tcg
        };
        prepare.end();
        let phase = timeline.phase("initramfs");
        let mut spec = self
            .boot_spec(&rec, kind, accel)
            .map_err(|e| fail(format!("boot setup failed: {e}")))?;
        phase.end();
        let phase = timeline.phase("confine");
        let (confine, confinement) =
            self.vmm_confinement(&rec, kind, accel, firecracker_binary().as_deref());
        spec.confine = confine;
        phase.end();
        // From here on a failure releases what was set up for the VMM.
        let fail = |reason: String| {
            self.release_host_resources(&rec);
            fail(reason)
        };
        let backend = backend(kind).map_err(|e| fail(e.to_string()))?;
        let (reader, writer) =
            std::io::pipe().map_err(|e| fail(format!("cannot create the console pipe: {e}")))?;
        let (input_r, input_w) =
            std::io::pipe().map_err(|e| fail(format!("cannot create the console pipe: {e}")))?;
        let phase = timeline.phase("network");
        self.prepare_network(&rec)
            .map_err(|e| fail(format!("network setup failed: {e}")))?;
        phase.end();
        let restored = spec.restore.is_some();
        let started = Instant::now();
        let launch_ns = crate::timing::now_ns();
        let phase = timeline.phase(if restored { "load" } else { "vmm-spawn" });
        let mut child = match backend.launch(&spec, input_r.into(), writer.into()) {
            Ok(c) => c,
            Err(e) => {
                if let Some(w) = watcher {
                    w.dismiss();
                }
                return Err(fail(format!("cannot start {}: {e}", kind.as_str())));
            }
        };
        phase.end();
        // Into its cgroup, in the background: the migration waits for an
        // RCU grace period while the guest boots (see ignis_vmm::cgroup).
        let cgroup_join = spec.confine.cgroup.clone().map(|cg| {
            let pid = child.id();
            std::thread::spawn(move || cg.add(pid))
        });
        // The VMM dies with this supervisor even once it dropped its
        // credentials (which clears its own parent-death signal).
        let armed = match watcher {
            Some(w) => w.arm(child.id()),
            None => ignis_vmm::reaper::spawn(child.id()),
        };
        let mut reaper = match armed {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(vm = id, error = %e, "cannot fork the VMM's watcher");
                None
            }
        };
        crate::fault::point("supervise:vmm-started");
        let phase = timeline.phase("attach-network");
        if let Err(e) = self.attach_network(&rec) {
            let _ = child.kill();
            let _ = child.wait();
            if let Some(r) = reaper.take() {
                r.dismiss();
            }
            return Err(fail(format!("network setup failed: {e}")));
        }
        phase.end();
        let attached = std::sync::Arc::new(Attached::default());
        let input = std::sync::Arc::new(std::sync::Mutex::new(input_w));
        if let Err(e) = serve_attach(&dir.join("attach.sock"), attached.clone(), input) {
            tracing::warn!(vm = id, error = %e, "cannot serve attach.sock; ignis attach will not work");
        }
        let me = std::process::id();
        #[cfg(feature = "fake-vmm")]
        let has_agent = kind != BackendKind::Fake;
        #[cfg(not(feature = "fake-vmm"))]
        let has_agent = true;
        // A clone of a guest without the agent (the Firecracker test guest)
        // has none either.
        let has_agent =
            has_agent && !(restored && rec.spec.snapshot.as_ref().is_some_and(|o| !o.agent));
        let phase_running = crate::timing::now_ns();
        self.update_status(id, |s| {
            let timings = std::mem::take(&mut s.timings);
            *s = VmStatus {
                state: Some(VmState::Running),
                supervisor_pid: Some(me),
                supervisor_start: process_start(me),
                vmm_pid: Some(child.id()),
                boot_id: boot_id(),
                started_at: Some(crate::now()),
                health: has_agent.then(|| "starting".to_string()),
                // A resumed snapshot is already running its workload.
                ready_ms: restored
                    .then(|| u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)),
                confinement: confinement.clone(),
                timings,
                ..Default::default()
            };
            timeline.record_since("vmm-running", phase_running);
            if restored {
                timeline.record_since("guest-ready", launch_ns);
            }
            crate::timing::merge(&mut s.timings, &timeline.phases());
        })?;
        notify.send("running");
        let (events_tx, events) = std::sync::mpsc::channel();
        let mux = if has_agent {
            match super::agent_mux::Mux::start(kind, &dir, events_tx) {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::warn!(vm = id, error = %e, "cannot serve agent.sock; exec/cp will not work");
                    None
                }
            }
        } else {
            None
        };
        // Setup is over: give back what it took (a supervisor stays
        // resident for the VM's whole life).
        self.store.db().shrink_memory();
        trim_heap();
        let console_done = std::sync::atomic::AtomicBool::new(false);
        tracing::info!(
            vm = id,
            backend = kind.as_str(),
            pid = child.id(),
            "VMM started"
        );

        let mut console = Console::open(&dir.join("console.log"))
            .map_err(|e| Error::internal("open console.log", e))?;
        let mut reader = reader;
        let mut chunk = vec![0u8; 16 << 10];
        let mut partial: Vec<u8> = Vec::new();
        let mut exit_code: Option<i32> = None;
        let mut init_error: Option<String> = None;
        std::thread::scope(|scope| -> Result<(), Error> {
            let console_done = &console_done;
            let (timeline, notify) = (&timeline, &notify);
            scope.spawn(move || {
                self.record_agent_events(id, events, console_done, timeline, launch_ns, notify)
            });
            let result = (|| -> Result<(), Error> {
                loop {
                    let n = match std::io::Read::read(&mut reader, &mut chunk) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    };
                    let bytes = &chunk[..n];
                    // Serial consoles end lines with \r\n; the log keeps \n.
                    let cleaned: Vec<u8> = bytes.iter().copied().filter(|b| *b != b'\r').collect();
                    console.write(&cleaned);
                    attached.broadcast(bytes);
                    partial.extend_from_slice(&cleaned);
                    while let Some(pos) = partial.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = partial.drain(..=pos).collect();
                        match parse_report(&String::from_utf8_lossy(&line)) {
                            Some(Report::Ready { agent }) => {
                                let ms = u64::try_from(started.elapsed().as_millis())
                                    .unwrap_or(u64::MAX);
                                timeline.record_since("guest-ready", launch_ns);
                                self.update_status(id, |s| {
                                    s.ready_ms = Some(ms);
                                    // A guest without ignis-init has no agent to wait for.
                                    if !agent && s.health.as_deref() == Some("starting") {
                                        s.health = None;
                                    }
                                    crate::timing::merge(&mut s.timings, &timeline.phases());
                                })?;
                                notify.send("ready");
                            }
                            Some(Report::Exit(code)) => exit_code = Some(code),
                            Some(Report::Error(m)) => init_error = Some(m),
                            None => {}
                        }
                    }
                    // Bound the line buffer (a guest printing without newlines).
                    if partial.len() > 64 << 10 {
                        partial.clear();
                    }
                }
                Ok(())
            })();
            console_done.store(true, std::sync::atomic::Ordering::SeqCst);
            result
        })?;
        if let Some(m) = &mux {
            m.stop();
        }
        if let Some(h) = cgroup_join {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(vm = id, error = %e, "the VMM could not be moved into its cgroup")
                }
                Err(_) => tracing::warn!(vm = id, "the cgroup thread panicked"),
            }
        }
        // Attached clients see the end of the stream.
        attached.close_all();
        let status = child
            .wait()
            .map_err(|e| Error::internal("wait for the VMM", e))?;
        if let Some(r) = reaper {
            r.dismiss();
        }
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
            // Already settled by reconcile (host reboot): keep its verdict.
            if s.state == Some(VmState::Exited) {
                return;
            }
            s.state = Some(VmState::Exited);
            s.finished_at = Some(crate::now());
            s.exit_code = code;
            s.reason = Some(reason.clone());
            s.vmm_pid = None;
            s.paused = false;
            s.health = None;
        })?;
        tracing::info!(vm = id, ?code, reason, "VM exited");
        self.release_host_resources(&rec);
        if rec.spec.auto_remove {
            self.vm_remove(id, true)?;
        }
        Ok(())
    }
}
