//! One connection: the frame loop and its sessions.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use ignis_agent_proto::{
    error_chain, Credit, ErrorMsg, ExitMsg, Frame, FrameReader, Hello, Kind, Request, MAX_DATA,
    VERSION, WINDOW,
};

use crate::Context;

/// Input of a session (exec stdin, copy-in tar stream).
pub(crate) enum Input {
    Data(Vec<u8>),
    Eof,
}

pub(crate) struct Session {
    pub id: u32,
    /// Output bytes the host still accepts.
    pub credit: Credit,
    pub input: Mutex<Option<mpsc::Sender<Input>>>,
    /// The session's process (0 until started).
    pub pid: AtomicI32,
    /// PTY master (for resize), -1 without a PTY.
    pub pty: AtomicI32,
}

impl Session {
    fn new(id: u32) -> Self {
        Self {
            id,
            credit: Credit::new(WINDOW),
            input: Mutex::new(None),
            pid: AtomicI32::new(0),
            pty: AtomicI32::new(-1),
        }
    }

    fn signal(&self, sig: i32) {
        let pid = self.pid.load(Ordering::SeqCst);
        if pid > 0 && (1..=64).contains(&sig) {
            // SAFETY: sending a signal to our own child.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }
}

pub(crate) struct Conn {
    out: Mutex<Box<dyn Write + Send>>,
    sessions: Mutex<HashMap<u32, Arc<Session>>>,
    pub ctx: Arc<Context>,
}

impl Conn {
    /// Sends one frame (whole frames are written under the lock).
    pub fn send(&self, kind: Kind, session: u32, payload: &[u8]) -> std::io::Result<()> {
        let bytes = ignis_agent_proto::encode(kind, session, payload);
        let mut out = self.out.lock().expect("out mutex");
        out.write_all(&bytes)?;
        out.flush()
    }

    pub fn send_json<T: serde::Serialize>(&self, kind: Kind, session: u32, v: &T) {
        let _ = self.send(kind, session, &serde_json::to_vec(v).expect("json"));
    }

    pub fn error(&self, session: u32, message: impl Into<String>, code: Option<i32>) {
        self.send_json(
            Kind::Error,
            session,
            &ErrorMsg {
                message: message.into(),
                code,
            },
        );
    }

    /// Ends a session with its exit status.
    pub fn exit(&self, s: &Session, code: i32, signal: Option<i32>) {
        self.send_json(Kind::Exit, s.id, &ExitMsg { code, signal });
        self.end(s.id);
    }

    /// Ends a session with an error.
    pub fn fail(&self, s: &Session, message: impl Into<String>, code: Option<i32>) {
        self.error(s.id, message, code);
        self.end(s.id);
    }

    fn end(&self, id: u32) {
        if let Some(s) = self.sessions.lock().expect("sessions").remove(&id) {
            s.credit.close();
        }
    }
}

/// A writer of one session's output frames, within its credit.
pub(crate) struct SessionOut {
    pub conn: Arc<Conn>,
    pub session: Arc<Session>,
    pub kind: Kind,
}

impl Write for SessionOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self
            .session
            .credit
            .take(buf.len().min(MAX_DATA))
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "session closed"))?;
        self.conn.send(self.kind, self.session.id, &buf[..n])?;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A reader of one session's input frames; grants credit as it consumes.
pub(crate) struct SessionIn {
    pub conn: Arc<Conn>,
    pub id: u32,
    pub rx: mpsc::Receiver<Input>,
    pub buf: Vec<u8>,
    pub pos: usize,
}

impl std::io::Read for SessionIn {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            if !self.buf.is_empty() {
                let n = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
                let _ = self.conn.send(Kind::Credit, self.id, &n.to_be_bytes());
            }
            self.buf.clear();
            self.pos = 0;
            match self.rx.recv() {
                Ok(Input::Data(d)) => self.buf = d,
                Ok(Input::Eof) | Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Serves one stream until it ends. Malformed input is answered with an
/// error frame and skipped; nothing the host sends can stop the loop.
pub fn serve<R: std::io::Read, W: Write + Send + 'static>(r: R, w: W, ctx: Arc<Context>) {
    let conn = Arc::new(Conn {
        out: Mutex::new(Box::new(w)),
        sessions: Mutex::new(HashMap::new()),
        ctx,
    });
    let hello = Hello {
        version: VERSION,
        peer: format!("ignis-agent {}", env!("CARGO_PKG_VERSION")),
    };
    conn.send_json(Kind::Hello, 0, &hello);
    let mut frames = FrameReader::new(r);
    loop {
        let frame = match frames.read_frame() {
            Ok(Some(Ok(f))) => f,
            Ok(Some(Err(e))) => {
                conn.error(e.session(), format!("bad frame: {e}"), None);
                continue;
            }
            Ok(None) | Err(_) => break,
        };
        dispatch(&conn, frame, &hello);
    }
    // The host is gone: stop everything it started.
    let sessions: Vec<Arc<Session>> = conn
        .sessions
        .lock()
        .expect("sessions")
        .drain()
        .map(|(_, s)| s)
        .collect();
    for s in sessions {
        s.signal(libc::SIGKILL);
        s.credit.close();
    }
}

fn session(conn: &Conn, id: u32) -> Option<Arc<Session>> {
    conn.sessions.lock().expect("sessions").get(&id).cloned()
}

fn dispatch(conn: &Arc<Conn>, f: Frame, hello: &Hello) {
    let id = f.session;
    match f.kind {
        Kind::Hello => conn.send_json(Kind::Hello, 0, hello),
        Kind::Ping => {
            let _ = conn.send(Kind::Pong, id, &f.payload);
        }
        Kind::Open => open(conn, id, &f),
        Kind::Stdin | Kind::StdinEof => {
            let Some(s) = session(conn, id) else {
                return conn.error(id, "no such session", None);
            };
            if f.kind == Kind::Stdin && f.payload.len() > MAX_DATA {
                return conn.error(id, "stdin frame larger than the data limit", None);
            }
            let mut input = s.input.lock().expect("input");
            let msg = if f.kind == Kind::Stdin {
                Input::Data(f.payload)
            } else {
                Input::Eof
            };
            if let Some(tx) = input.as_ref() {
                if tx.send(msg).is_err() {
                    *input = None;
                }
            }
            if f.kind == Kind::StdinEof {
                *input = None;
            }
        }
        Kind::Credit => match (session(conn, id), f.as_u32()) {
            (Some(s), Some(n)) => s.credit.grant(u64::from(n)),
            (None, _) => {} // a late credit for a finished session
            (Some(_), None) => conn.error(id, "credit frame needs a u32", None),
        },
        Kind::Signal => match (session(conn, id), f.as_u32()) {
            (Some(s), Some(sig)) => s.signal(i32::try_from(sig).unwrap_or(0)),
            _ => conn.error(id, "signal: no such session or bad signal", None),
        },
        Kind::Resize => {
            if let (Some(s), Ok(b)) = (session(conn, id), <[u8; 4]>::try_from(f.payload.as_slice()))
            {
                crate::exec::resize(
                    &s,
                    u16::from_be_bytes([b[0], b[1]]),
                    u16::from_be_bytes([b[2], b[3]]),
                );
            }
        }
        Kind::Close => {
            if let Some(s) = session(conn, id) {
                s.signal(libc::SIGKILL);
                *s.input.lock().expect("input") = None;
                conn.end(id);
            }
        }
        other => conn.error(
            id,
            format!("unexpected {other:?} frame from the host"),
            None,
        ),
    }
}

fn open(conn: &Arc<Conn>, id: u32, f: &Frame) {
    if id == 0 {
        return conn.error(0, "session 0 is the connection itself", None);
    }
    let req: Request = match f.parse() {
        Ok(r) => r,
        Err(e) => return conn.error(id, error_chain(&e), None),
    };
    let s = Arc::new(Session::new(id));
    {
        let mut map = conn.sessions.lock().expect("sessions");
        if map.contains_key(&id) {
            drop(map);
            return conn.error(id, "session already open", None);
        }
        if map.len() >= 1024 {
            drop(map);
            return conn.error(id, "too many sessions (1024)", None);
        }
        map.insert(id, s.clone());
    }
    // Input may follow the Open frame at once: the channel exists before
    // the next frame is read.
    let rx = attach_input(&s);
    let conn = conn.clone();
    std::thread::spawn(move || match req {
        Request::Exec(e) => crate::exec::exec(&conn, &s, e, rx),
        Request::CopyIn(c) => {
            conn.send_json(Kind::Started, id, &serde_json::json!({}));
            let reader = SessionIn {
                conn: conn.clone(),
                id,
                rx,
                buf: vec![],
                pos: 0,
            };
            match ignis_agent_proto::unpack_at(reader, std::path::Path::new(&c.path)) {
                Ok(()) => conn.exit(&s, 0, None),
                Err(e) => conn.fail(&s, error_chain(&e), None),
            }
        }
        Request::CopyOut(c) => {
            let path = std::path::Path::new(&c.path);
            let found = match c.follow_link {
                true => std::fs::metadata(path),
                false => std::fs::symlink_metadata(path),
            };
            if let Err(e) = found {
                return conn.fail(&s, format!("{}: {e}", c.path), None);
            }
            conn.send_json(Kind::Started, id, &serde_json::json!({}));
            let out = SessionOut {
                conn: conn.clone(),
                session: s.clone(),
                kind: Kind::Stdout,
            };
            match ignis_agent_proto::pack_with(path, c.follow_link, out) {
                Ok(()) => conn.exit(&s, 0, None),
                Err(e) => conn.fail(&s, error_chain(&e), None),
            }
        }
        Request::Shutdown => {
            conn.exit(&s, 0, None);
            crate::hooks::shutdown(conn.ctx.shutdown_signal);
        }
        Request::Configure(n) => match crate::hooks::configure(&n) {
            Ok(()) => conn.exit(&s, 0, None),
            Err(e) => conn.fail(&s, error_chain(&e), None),
        },
    });
}

/// Connects the session's input to a channel; the returned receiver is
/// fed by Stdin frames.
pub(crate) fn attach_input(s: &Session) -> mpsc::Receiver<Input> {
    let (tx, rx) = mpsc::channel();
    *s.input.lock().expect("input") = Some(tx);
    rx
}
