//! The supervisor's control socket (`control.sock`, 0600): how any ignis
//! process (CLI, daemon) asks the supervisor that owns a VMM to stop or
//! kill it, and learns when the VM has ended, without polling and without
//! marker files.
//!
//! ```text
//! client ── {"stop":{"timeoutMs":10000}}\n ──> supervisor   (or {"kill":{}})
//!        <── "ok\n"                               request taken
//!        <── end of file                          the VM ended and its exit is recorded
//! ```
//!
//! The supervisor remembers what was asked ([`Intent`]) to tell "stopped"
//! from "killed" from "the workload exited" when the VMM ends.

use std::io::{BufRead, BufReader, Read as _, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::exit::Intent;

/// The socket in the VM's directory.
pub(crate) const SOCKET: &str = "control.sock";

/// A request to the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) enum Request {
    /// Shut the guest down; kill the VMM after `timeout_ms`.
    Stop {
        #[serde(rename = "timeoutMs")]
        timeout_ms: u64,
    },
    Kill {},
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ControlError {
    /// No supervisor answers (it is gone, or predates the control socket).
    #[error("the VM's supervisor does not answer at {path}")]
    Unreachable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the VM's supervisor refused the request: {0}")]
    Refused(String),
    #[error("the VM did not end within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("talking to the VM's supervisor")]
    Io(#[from] std::io::Error),
}

/// Sends `req` to the supervisor of the VM in `dir` and waits until the VM
/// ended (at most `wait`).
pub(crate) fn request(dir: &Path, req: Request, wait: Duration) -> Result<(), ControlError> {
    let path = dir.join(SOCKET);
    let s = UnixStream::connect(&path).map_err(|source| ControlError::Unreachable {
        path: path.display().to_string(),
        source,
    })?;
    let mut line = serde_json::to_vec(&req).expect("json");
    line.push(b'\n');
    (&s).write_all(&line)?;
    s.set_read_timeout(Some(wait))?;
    let mut r = BufReader::new(&s);
    let mut ack = String::new();
    r.read_line(&mut ack)?;
    if ack.trim() != "ok" {
        return Err(ControlError::Refused(ack.trim().to_string()));
    }
    // The supervisor closes the connection once the exit is recorded.
    let mut rest = Vec::new();
    match std::io::Read::read_to_end(&mut r, &mut rest) {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(ControlError::Timeout(wait))
        }
        Err(e) => Err(e.into()),
    }
}

/// What the supervisor's control side shares with the rest of it.
#[derive(Debug, Default)]
pub(crate) struct State {
    intent: AtomicU8,
    waiting: std::sync::Mutex<Vec<UnixStream>>,
}

impl State {
    pub(crate) fn intent(&self) -> Intent {
        match self.intent.load(Ordering::SeqCst) {
            1 => Intent::Stop,
            2 => Intent::Kill,
            _ => Intent::None,
        }
    }

    fn set(&self, i: Intent) {
        // A kill after a stop stays a kill; a stop never downgrades one.
        let v = match i {
            Intent::None => 0,
            Intent::Stop => 1,
            Intent::Kill => 2,
        };
        self.intent.fetch_max(v, Ordering::SeqCst);
    }

    /// Waits up to `delay` for a stop or kill request: false when one came.
    pub(crate) fn wait_request(&self, delay: Duration) -> bool {
        let deadline = std::time::Instant::now() + delay;
        loop {
            if self.intent() != Intent::None {
                return false;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(20)));
        }
    }

    /// The VM ended and its exit is recorded: tell every waiting client.
    pub(crate) fn ended(&self) {
        for c in self.waiting.lock().expect("control mutex").drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// What the supervisor does for a request (it knows the VMM).
pub(crate) trait Handler: Send + Sync + 'static {
    /// Asks the guest to shut down (agent, then the VMM's button); false
    /// when the request should be repeated until the VM ends (an init
    /// that may not listen yet).
    fn shutdown(&self) -> bool;
    /// Kills the VMM now.
    fn kill(&self);
    /// Whether the VMM has ended.
    fn ended(&self) -> bool;
}

/// Serves `control.sock` in `dir` until the process exits.
pub(crate) fn serve(
    dir: &Path,
    state: Arc<State>,
    handler: Arc<dyn Handler>,
) -> std::io::Result<()> {
    let path = dir.join(SOCKET);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (state, handler) = (state.clone(), handler.clone());
            std::thread::spawn(move || handle(conn, &state, handler.as_ref()));
        }
    });
    Ok(())
}

/// How often a stop asks again a guest whose init may not listen yet.
const SHUTDOWN_AGAIN: Duration = Duration::from_secs(2);

fn handle(conn: UnixStream, state: &State, handler: &dyn Handler) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    if BufReader::new(&conn)
        .take(4096)
        .read_line(&mut line)
        .is_err()
    {
        return;
    }
    let req: Request = match serde_json::from_str(line.trim()) {
        Ok(r) => r,
        Err(e) => {
            let _ = (&conn).write_all(format!("bad request: {e}\n").as_bytes());
            return;
        }
    };
    if (&conn).write_all(b"ok\n").is_err() {
        return;
    }
    // Wait with the others for the end (unless it already came). The
    // intent first: a supervisor between two runs of a restarting VM
    // sees it and stays down.
    state.set(match req {
        Request::Kill {} => Intent::Kill,
        Request::Stop { .. } => Intent::Stop,
    });
    if let Ok(c) = conn.try_clone() {
        state.waiting.lock().expect("control mutex").push(c);
    }
    if handler.ended() {
        state.ended();
        return;
    }
    match req {
        Request::Kill {} => handler.kill(),
        Request::Stop { timeout_ms } => {
            let mut asked = std::time::Instant::now();
            let mut done = handler.shutdown();
            let deadline = asked + Duration::from_millis(timeout_ms);
            while !handler.ended() {
                let now = std::time::Instant::now();
                if now >= deadline {
                    handler.kill();
                    break;
                }
                if !done && now >= asked + SHUTDOWN_AGAIN {
                    asked = now;
                    done = handler.shutdown();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    struct FakeVmm {
        ended: AtomicBool,
        obeys_shutdown: bool,
        /// Ignores this many shutdown requests first (an init still
        /// starting) and asks to be asked again.
        deaf: std::sync::atomic::AtomicU32,
        asked: std::sync::atomic::AtomicU32,
        killed: AtomicBool,
        state: Arc<State>,
    }

    impl Handler for FakeVmm {
        fn shutdown(&self) -> bool {
            self.asked.fetch_add(1, Ordering::SeqCst);
            let deaf = self.deaf.load(Ordering::SeqCst);
            if deaf > 0 {
                self.deaf.store(deaf - 1, Ordering::SeqCst);
                return false;
            }
            if self.obeys_shutdown {
                self.ended.store(true, Ordering::SeqCst);
                self.state.ended();
            }
            true
        }
        fn kill(&self) {
            self.killed.store(true, Ordering::SeqCst);
            self.ended.store(true, Ordering::SeqCst);
            self.state.ended();
        }
        fn ended(&self) -> bool {
            self.ended.load(Ordering::SeqCst)
        }
    }

    fn setup(obeys: bool) -> (tempfile::TempDir, Arc<State>, Arc<FakeVmm>) {
        let d = tempfile::tempdir().unwrap();
        let state = Arc::new(State::default());
        let vmm = Arc::new(FakeVmm {
            ended: AtomicBool::new(false),
            obeys_shutdown: obeys,
            deaf: Default::default(),
            asked: Default::default(),
            killed: AtomicBool::new(false),
            state: state.clone(),
        });
        serve(d.path(), state.clone(), vmm.clone()).unwrap();
        (d, state, vmm)
    }

    #[test]
    fn a_stop_returns_when_the_vm_ended_and_is_remembered() {
        let (d, state, vmm) = setup(true);
        request(
            d.path(),
            Request::Stop { timeout_ms: 5000 },
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(state.intent(), Intent::Stop);
        assert!(!vmm.killed.load(Ordering::SeqCst), "it shut down in time");
    }

    /// A system image stopped while its init starts: the request is
    /// repeated until the init takes it, never waiting for the timeout.
    #[test]
    fn a_stop_asks_again_an_init_that_does_not_listen_yet() {
        let (d, _state, vmm) = setup(true);
        vmm.deaf.store(1, Ordering::SeqCst);
        request(
            d.path(),
            Request::Stop { timeout_ms: 60_000 },
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(vmm.asked.load(Ordering::SeqCst), 2);
        assert!(
            !vmm.killed.load(Ordering::SeqCst),
            "it shut down, not killed"
        );
    }

    #[test]
    fn a_stop_kills_after_its_timeout_and_a_kill_wins() {
        let (d, state, vmm) = setup(false);
        request(
            d.path(),
            Request::Stop { timeout_ms: 50 },
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(vmm.killed.load(Ordering::SeqCst));
        assert_eq!(state.intent(), Intent::Stop);
        state.set(Intent::Kill);
        state.set(Intent::Stop);
        assert_eq!(
            state.intent(),
            Intent::Kill,
            "a stop never downgrades a kill"
        );
    }

    #[test]
    fn no_supervisor_and_bad_requests_are_errors() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(
            request(d.path(), Request::Kill {}, Duration::from_secs(1)),
            Err(ControlError::Unreachable { .. })
        ));
        let (d, _state, _vmm) = setup(true);
        let s = UnixStream::connect(d.path().join(SOCKET)).unwrap();
        (&s).write_all(b"{\"reboot\":{}}\n").unwrap();
        let mut reply = String::new();
        BufReader::new(&s).read_line(&mut reply).unwrap();
        assert!(reply.starts_with("bad request"), "{reply}");
        assert_eq!(
            serde_json::to_string(&Request::Stop { timeout_ms: 7 }).unwrap(),
            r#"{"stop":{"timeoutMs":7}}"#
        );
    }
}
