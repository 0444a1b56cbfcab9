//! The supervisor's agent multiplexer.
//!
//! The VMM gives the host exactly one stream to the guest agent (QEMU's
//! virtio-serial chardev accepts one client; a Firecracker vsock stream is
//! one connection). The supervisor owns it and serves `agent.sock`: every
//! `ignis exec`/`cp`/`stop` connects there and speaks the same protocol;
//! the mux renumbers sessions so clients never see each other, passes
//! credit frames through (end-to-end flow control), and enforces the
//! guest's window per session, so a hostile guest cannot make the
//! supervisor buffer without bound.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use ignis_agent_proto::{encode, ErrorMsg, Frame, FrameReader, Kind, WINDOW};

/// Session number of the supervisor's own health pings.
const HEALTH_SESSION: u32 = u32::MAX;
/// How long a client waits for the agent's first greeting.
const HELLO_WAIT: Duration = Duration::from_secs(5);
/// How often the supervisor pings the agent.
const PING_EVERY: Duration = Duration::from_secs(10);

/// What the mux reports to the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AgentEvent {
    /// The agent greeted us (time since the mux started).
    Ready(Duration),
    Healthy,
    Unhealthy(String),
}

struct Client {
    tx: mpsc::Sender<Vec<u8>>,
    /// Client session → global session.
    locals: Mutex<HashMap<u32, u32>>,
}

impl Client {
    fn send(&self, kind: Kind, session: u32, payload: &[u8]) {
        let _ = self.tx.send(encode(kind, session, payload));
    }
    fn error(&self, session: u32, message: &str) {
        let msg = ErrorMsg {
            message: message.to_string(),
            code: None,
        };
        self.send(
            Kind::Error,
            session,
            &serde_json::to_vec(&msg).expect("json"),
        );
    }
}

struct Route {
    client: Arc<Client>,
    local: u32,
    outstanding: u64,
}

pub(crate) struct Mux {
    agent: Mutex<Option<UnixStream>>,
    hello: Mutex<Option<Vec<u8>>>,
    /// Signalled when the agent greets (clients wait on it, not by polling).
    greeted: std::sync::Condvar,
    routes: Mutex<HashMap<u32, Route>>,
    next: AtomicU32,
    events: mpsc::Sender<AgentEvent>,
    stop: AtomicBool,
    last_pong: Mutex<Option<Instant>>,
}

impl Mux {
    /// Starts the mux for the VM in `dir`: connects to the agent through
    /// the VMM with `connect` (its driver's; retried while the guest
    /// boots) and serves `agent.sock`.
    pub(crate) fn start(
        connect: impl Fn() -> Result<UnixStream, ignis_vmm::VmmError> + Send + 'static,
        dir: &Path,
        events: mpsc::Sender<AgentEvent>,
    ) -> std::io::Result<Arc<Self>> {
        Self::start_with(connect, dir, events)
    }

    /// As [`Self::start`], with the connection to the agent made by
    /// `connect` (tests put an in-process agent there).
    pub(crate) fn start_with(
        connect: impl Fn() -> Result<UnixStream, ignis_vmm::VmmError> + Send + 'static,
        dir: &Path,
        events: mpsc::Sender<AgentEvent>,
    ) -> std::io::Result<Arc<Self>> {
        let path = dir.join(super::AGENT_SOCKET);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        // Root-only: the agent runs anything as root in the guest.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let mux = Arc::new(Self {
            agent: Mutex::new(None),
            hello: Mutex::new(None),
            greeted: std::sync::Condvar::new(),
            routes: Mutex::new(HashMap::new()),
            next: AtomicU32::new(1),
            events,
            stop: AtomicBool::new(false),
            last_pong: Mutex::new(None),
        });
        let m = mux.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if m.stop.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(c) = conn {
                    let m = m.clone();
                    std::thread::spawn(move || m.serve_client(c));
                }
            }
        });
        let m = mux.clone();
        std::thread::spawn(move || m.connect_loop(connect));
        let m = mux.clone();
        std::thread::spawn(move || m.ping_loop());
        Ok(mux)
    }

    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    fn to_agent(&self, kind: Kind, session: u32, payload: &[u8]) -> bool {
        let mut a = self.agent.lock().expect("agent");
        match a.as_mut() {
            Some(s) => s.write_all(&encode(kind, session, payload)).is_ok(),
            None => false,
        }
    }

    fn connect_loop(
        self: Arc<Self>,
        connect: impl Fn() -> Result<UnixStream, ignis_vmm::VmmError>,
    ) {
        let started = Instant::now();
        // Retried quickly at first (a restored VM's agent is there at
        // once), then every 50 ms while a guest boots.
        let mut retry = Duration::from_millis(1);
        while !self.stop.load(Ordering::SeqCst) {
            let stream = match connect() {
                Ok(s) => s,
                Err(ignis_vmm::VmmError::NoAgent) => return,
                Err(_) => {
                    std::thread::sleep(retry);
                    retry = (retry * 2).min(Duration::from_millis(50));
                    continue;
                }
            };
            retry = Duration::from_millis(1);
            let Ok(reader) = stream.try_clone() else {
                continue;
            };
            *self.agent.lock().expect("agent") = Some(stream);
            // Greet: an agent that booted greets on its own, but one resumed
            // from a snapshot is mid-conversation with a host long gone.
            let hello = ignis_agent_proto::Hello {
                version: ignis_agent_proto::VERSION,
                peer: format!("ignis-supervisor {}", env!("CARGO_PKG_VERSION")),
            };
            self.to_agent(Kind::Hello, 0, &serde_json::to_vec(&hello).expect("json"));
            self.agent_loop(reader, started);
            *self.agent.lock().expect("agent") = None;
            *self.hello.lock().expect("hello") = None;
            for (_, r) in self.routes.lock().expect("routes").drain() {
                r.client
                    .error(r.local, "the connection to the VM's agent was lost");
            }
            let _ = self
                .events
                .send(AgentEvent::Unhealthy("agent connection lost".into()));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn agent_loop(&self, reader: UnixStream, started: Instant) {
        let mut frames = FrameReader::new(reader);
        loop {
            let f = match frames.read_frame() {
                Ok(Some(Ok(f))) => f,
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e, "bad frame from the guest agent");
                    continue;
                }
                Ok(None) | Err(_) => return,
            };
            match (f.kind, f.session) {
                (Kind::Hello, 0) => {
                    let first = self
                        .hello
                        .lock()
                        .expect("hello")
                        .replace(f.payload)
                        .is_none();
                    self.greeted.notify_all();
                    if first {
                        *self.last_pong.lock().expect("pong") = Some(Instant::now());
                        let _ = self.events.send(AgentEvent::Ready(started.elapsed()));
                    }
                }
                (Kind::Pong, HEALTH_SESSION) => {
                    *self.last_pong.lock().expect("pong") = Some(Instant::now());
                    let _ = self.events.send(AgentEvent::Healthy);
                }
                (_, 0) => tracing::debug!(?f.kind, "agent session-0 frame"),
                _ => self.route_from_agent(f),
            }
        }
    }

    fn route_from_agent(&self, f: Frame) {
        let mut routes = self.routes.lock().expect("routes");
        let Some(r) = routes.get_mut(&f.session) else {
            return; // a late frame of a closed session
        };
        if matches!(f.kind, Kind::Stdout | Kind::Stderr) {
            r.outstanding += f.payload.len() as u64;
            if r.outstanding > WINDOW {
                let r = routes.remove(&f.session).expect("route");
                drop(routes);
                r.client.locals.lock().expect("locals").remove(&r.local);
                r.client.error(
                    r.local,
                    "the guest agent sent more than its flow-control window; session closed",
                );
                self.to_agent(Kind::Close, f.session, b"");
                return;
            }
        }
        r.client.send(f.kind, r.local, &f.payload);
        if f.is_final() || f.kind == Kind::Pong {
            let r = routes.remove(&f.session).expect("route");
            r.client.locals.lock().expect("locals").remove(&r.local);
        }
    }

    fn serve_client(self: Arc<Self>, conn: UnixStream) {
        let Ok(mut writer) = conn.try_clone() else {
            return;
        };
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            for bytes in rx {
                if writer.write_all(&bytes).is_err() {
                    return;
                }
            }
        });
        let client = Arc::new(Client {
            tx,
            locals: Mutex::new(HashMap::new()),
        });
        // A client may come while the guest still boots (`run --no-wait`
        // then `exec`): give the agent a moment to greet.
        let hello = self
            .greeted
            .wait_timeout_while(self.hello.lock().expect("hello"), HELLO_WAIT, |h| {
                h.is_none()
            })
            .expect("hello")
            .0
            .clone();
        match hello {
            Some(h) => client.send(Kind::Hello, 0, &h),
            None => client.error(
                0,
                "the VM's agent is not connected (yet); is the VM still booting?",
            ),
        }
        let mut frames = FrameReader::new(conn);
        loop {
            let f = match frames.read_frame() {
                Ok(Some(Ok(f))) => f,
                Ok(Some(Err(e))) => {
                    client.error(e.session(), &format!("bad frame: {e}"));
                    continue;
                }
                Ok(None) | Err(_) => break,
            };
            self.client_frame(&client, f);
        }
        // The client is gone: abandon its sessions in the guest.
        let globals: Vec<u32> = client
            .locals
            .lock()
            .expect("locals")
            .drain()
            .map(|(_, g)| g)
            .collect();
        for g in globals {
            self.routes.lock().expect("routes").remove(&g);
            self.to_agent(Kind::Close, g, b"");
        }
    }

    fn client_frame(&self, client: &Arc<Client>, f: Frame) {
        let local = f.session;
        match f.kind {
            Kind::Hello => {}
            Kind::Open | Kind::Ping => {
                if local == 0 {
                    return client.error(0, "session 0 is the connection itself");
                }
                if client.locals.lock().expect("locals").contains_key(&local) {
                    return client.error(local, "session already open");
                }
                let mut global = self.next.fetch_add(1, Ordering::SeqCst);
                if global == HEALTH_SESSION || global == 0 {
                    global = self.next.fetch_add(2, Ordering::SeqCst);
                }
                self.routes.lock().expect("routes").insert(
                    global,
                    Route {
                        client: client.clone(),
                        local,
                        outstanding: 0,
                    },
                );
                client.locals.lock().expect("locals").insert(local, global);
                if !self.to_agent(f.kind, global, &f.payload) {
                    self.routes.lock().expect("routes").remove(&global);
                    client.locals.lock().expect("locals").remove(&local);
                    client.error(local, "the VM's agent is not connected");
                }
            }
            _ => {
                let Some(global) = client.locals.lock().expect("locals").get(&local).copied()
                else {
                    if f.kind != Kind::Credit {
                        client.error(local, "no such session");
                    }
                    return;
                };
                if f.kind == Kind::Credit {
                    if let (Some(n), Some(r)) = (
                        f.as_u32(),
                        self.routes.lock().expect("routes").get_mut(&global),
                    ) {
                        r.outstanding = r.outstanding.saturating_sub(u64::from(n));
                    }
                }
                if f.kind == Kind::Close {
                    self.routes.lock().expect("routes").remove(&global);
                    client.locals.lock().expect("locals").remove(&local);
                }
                self.to_agent(f.kind, global, &f.payload);
            }
        }
    }

    fn ping_loop(self: Arc<Self>) {
        let mut unhealthy = false;
        while !self.stop.load(Ordering::SeqCst) {
            std::thread::sleep(PING_EVERY);
            if self.hello.lock().expect("hello").is_none() {
                continue;
            }
            let sent = Instant::now();
            self.to_agent(Kind::Ping, HEALTH_SESSION, b"");
            std::thread::sleep(Duration::from_secs(5));
            let answered = self
                .last_pong
                .lock()
                .expect("pong")
                .is_some_and(|t| t >= sent);
            if !answered && !unhealthy {
                let _ = self.events.send(AgentEvent::Unhealthy(
                    "the agent did not answer a ping within 5 s".into(),
                ));
            }
            unhealthy = !answered;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ignis_agent_proto::client::Client;
    use ignis_agent_proto::{ExecRequest, Request};

    /// The mux in front of a real agent running in this process (host
    /// processes instead of a VM): `(mux dir, events)`.
    fn mux_with(
        agent: impl Fn(UnixStream) + Send + Sync + 'static,
    ) -> (tempfile::TempDir, Arc<Mux>, mpsc::Receiver<AgentEvent>) {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel();
        let agent = Arc::new(agent);
        let connected = Arc::new(AtomicBool::new(false));
        let mux = Mux::start_with(
            move || {
                // One agent connection per test (a reconnect would be a new VM).
                if connected.swap(true, Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_secs(3600));
                }
                let (host, guest) = UnixStream::pair().map_err(ignis_vmm::VmmError::Io)?;
                let agent = agent.clone();
                std::thread::spawn(move || agent(guest));
                Ok(host)
            },
            dir.path(),
            tx,
        )
        .unwrap();
        (dir, mux, rx)
    }

    fn real_agent(guest: UnixStream) {
        let w = guest.try_clone().unwrap();
        ignis_agent::serve(guest, w, Arc::new(ignis_agent::Context::default()));
    }

    fn client(dir: &Path) -> Client {
        let s = UnixStream::connect(dir.join(super::super::AGENT_SOCKET)).unwrap();
        Client::connect(s.try_clone().unwrap(), s).unwrap()
    }

    fn sh(script: &str) -> Request {
        Request::Exec(ExecRequest {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            ..Default::default()
        })
    }

    #[test]
    fn clients_share_one_agent_stream_without_seeing_each_other() {
        let (dir, _mux, events) = mux_with(real_agent);
        assert!(matches!(
            events.recv_timeout(Duration::from_secs(5)),
            Ok(AgentEvent::Ready(_))
        ));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let path = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    // Each client uses session numbers from 1: the mux renumbers.
                    let c = client(&path);
                    (0..3)
                        .map(|j| {
                            let s = c.open(&sh(&format!("echo {i}-{j}; exit {j}"))).unwrap();
                            let mut out = vec![];
                            let code = s.wait_output(&mut out, std::io::sink()).code();
                            (String::from_utf8(out).unwrap(), code)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for (i, t) in threads.into_iter().enumerate() {
            let got = t.join().unwrap();
            for (j, (out, code)) in got.into_iter().enumerate() {
                assert_eq!(out, format!("{i}-{j}\n"));
                assert_eq!(code, i32::try_from(j).unwrap());
            }
        }
    }

    #[test]
    fn a_client_that_goes_away_has_its_commands_killed() {
        let (dir, _mux, _events) = mux_with(real_agent);
        let marker = dir.path().join("survived");
        let c = client(dir.path());
        let s = c
            .open(&sh(&format!("sleep 1.5; touch {}", marker.display())))
            .unwrap();
        assert!(matches!(
            s.recv(),
            ignis_agent_proto::client::Event::Started(_)
        ));
        drop(s);
        drop(c);
        std::thread::sleep(Duration::from_millis(2500));
        assert!(!marker.exists(), "the abandoned exec was not killed");
    }

    /// A hostile guest that ignores flow control: the mux ends that session
    /// with an error for its client instead of queueing without bound.
    #[test]
    fn a_flooding_guest_loses_the_session_not_the_supervisor() {
        use std::io::Write;
        let (dir, _mux, _events) = mux_with(|mut guest: UnixStream| {
            let hello = ignis_agent_proto::Hello {
                version: ignis_agent_proto::VERSION,
                peer: "evil".into(),
            };
            let _ = guest.write_all(&encode(
                Kind::Hello,
                0,
                &serde_json::to_vec(&hello).unwrap(),
            ));
            let mut frames = FrameReader::new(guest.try_clone().unwrap());
            // Answer the first Open with far more than the window.
            while let Ok(Some(Ok(f))) = frames.read_frame() {
                if f.kind == Kind::Open {
                    let chunk = vec![b'x'; ignis_agent_proto::MAX_DATA];
                    for _ in 0..64 {
                        if guest
                            .write_all(&encode(Kind::Stdout, f.session, &chunk))
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        let c = client(dir.path());
        let s = c.open(&sh("anything")).unwrap();
        // Read without acknowledging: only the mux's check can end this.
        let mut got = 0u64;
        let end = loop {
            match s.recv() {
                ignis_agent_proto::client::Event::Stdout(d) => got += d.len() as u64,
                other => break other,
            }
        };
        match end {
            ignis_agent_proto::client::Event::Error(e) => {
                // The mux's verdict (the client has its own, worded apart).
                assert!(e.message.contains("guest agent sent more"), "{}", e.message)
            }
            other => panic!("{other:?}"),
        }
        assert!(got <= WINDOW);
    }
}
