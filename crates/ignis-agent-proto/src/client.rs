//! The host side of the protocol: sessions over one stream, with credit
//! flow control both ways. A guest is never trusted: a session whose
//! output exceeds the window it was granted is closed with an error.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use crate::{
    CopyError, Credit, ErrorMsg, ExitMsg, Frame, FrameReader, Hello, Kind, PayloadError, Request,
    MAX_DATA, VERSION, WINDOW,
};

/// Why talking to an agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot greet the agent")]
    Greet(#[source] std::io::Error),
    #[error("no answer from the agent")]
    NoAnswer(#[source] std::io::Error),
    #[error("the agent closed the connection")]
    Closed,
    /// A control message that is not what its frame kind carries.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error("agent speaks protocol {agent} but ignis speaks {VERSION}")]
    Version { agent: u8 },
    /// The agent's own report (it refused the connection, or the session).
    #[error("{}", .0.message)]
    Agent(ErrorMsg),
    #[error("agent connection lost")]
    Lost(#[source] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Copy(#[from] CopyError),
}

/// What a session receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Started(serde_json::Value),
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(ExitMsg),
    Error(ErrorMsg),
}

struct Route {
    tx: mpsc::Sender<Event>,
    /// Stdin credit the agent granted us.
    credit: Arc<Credit>,
    /// Output bytes received and not yet acknowledged.
    outstanding: u64,
}

type Out = Arc<Mutex<Box<dyn Write + Send>>>;

/// A connection to an agent (directly, or through a VM's supervisor).
pub struct Client {
    out: Out,
    routes: Arc<Mutex<HashMap<u32, Route>>>,
    next: AtomicU32,
    pub hello: Hello,
}

fn send(out: &Out, kind: Kind, session: u32, payload: &[u8]) -> std::io::Result<()> {
    let bytes = crate::encode(kind, session, payload);
    let mut w = out.lock().expect("out mutex");
    w.write_all(&bytes)?;
    w.flush()
}

fn lost(message: &str) -> ErrorMsg {
    ErrorMsg {
        message: message.to_string(),
        code: None,
    }
}

impl Client {
    /// Greets the peer and waits for its Hello (`r` should have a read
    /// timeout for the greeting; it is the caller's stream).
    pub fn connect<R, W>(r: R, w: W) -> Result<Self, ClientError>
    where
        R: Read + Send + 'static,
        W: Write + Send + 'static,
    {
        let out: Out = Arc::new(Mutex::new(Box::new(w)));
        let me = Hello {
            version: VERSION,
            peer: format!("ignis {}", env!("CARGO_PKG_VERSION")),
        };
        send(
            &out,
            Kind::Hello,
            0,
            &serde_json::to_vec(&me).expect("json"),
        )
        .map_err(ClientError::Greet)?;
        let mut frames = FrameReader::new(r);
        let hello: Hello = loop {
            match frames.read_frame() {
                Ok(Some(Ok(f))) if f.kind == Kind::Hello => break f.parse()?,
                Ok(Some(Ok(f))) if f.kind == Kind::Error && f.session == 0 => {
                    return Err(ClientError::Agent(f.parse()?));
                }
                Ok(Some(_)) => continue,
                Ok(None) => return Err(ClientError::Closed),
                Err(e) => return Err(ClientError::NoAnswer(e)),
            }
        };
        if hello.version != VERSION {
            return Err(ClientError::Version {
                agent: hello.version,
            });
        }
        let routes: Arc<Mutex<HashMap<u32, Route>>> = Arc::default();
        let (rts, o) = (routes.clone(), out.clone());
        std::thread::spawn(move || read_loop(frames, rts, o));
        Ok(Self {
            out,
            routes,
            next: AtomicU32::new(1),
            hello,
        })
    }

    /// Opens a session.
    pub fn open(&self, req: &Request) -> Result<Session, ClientError> {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel();
        let credit = Arc::new(Credit::new(WINDOW));
        self.routes.lock().expect("routes").insert(
            id,
            Route {
                tx,
                credit: credit.clone(),
                outstanding: 0,
            },
        );
        send(
            &self.out,
            Kind::Open,
            id,
            &serde_json::to_vec(req).expect("json"),
        )
        .map_err(ClientError::Lost)?;
        Ok(Session {
            id,
            out: self.out.clone(),
            routes: self.routes.clone(),
            rx,
            credit,
        })
    }

    /// Round trip of a Ping (health check).
    pub fn ping(&self, timeout: Duration) -> Result<Duration, ClientError> {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel();
        self.routes.lock().expect("routes").insert(
            id,
            Route {
                tx,
                credit: Arc::new(Credit::new(0)),
                outstanding: 0,
            },
        );
        let t = std::time::Instant::now();
        send(&self.out, Kind::Ping, id, b"").map_err(ClientError::Lost)?;
        let r = rx.recv_timeout(timeout);
        self.routes.lock().expect("routes").remove(&id);
        match r {
            Ok(_) => Ok(t.elapsed()),
            Err(_) => Err(ClientError::Timeout(timeout)),
        }
    }
}

fn read_loop<R: Read>(
    mut frames: FrameReader<R>,
    routes: Arc<Mutex<HashMap<u32, Route>>>,
    out: Out,
) {
    loop {
        let f = match frames.read_frame() {
            Ok(Some(Ok(f))) => f,
            Ok(Some(Err(_))) => continue,
            Ok(None) | Err(_) => break,
        };
        let mut map = routes.lock().expect("routes");
        let Some(route) = map.get_mut(&f.session) else {
            continue;
        };
        let ev = match f.kind {
            Kind::Stdout | Kind::Stderr => {
                if f.payload.is_empty() {
                    continue;
                }
                route.outstanding += f.payload.len() as u64;
                if route.outstanding > WINDOW {
                    // The guest ignored flow control: end the session.
                    let _ = route.tx.send(Event::Error(lost(
                        "the agent sent more than its flow-control window; session closed",
                    )));
                    map.remove(&f.session);
                    drop(map);
                    let _ = send(&out, Kind::Close, f.session, b"");
                    continue;
                }
                if f.kind == Kind::Stdout {
                    Event::Stdout(f.payload)
                } else {
                    Event::Stderr(f.payload)
                }
            }
            Kind::Credit => {
                if let Some(n) = f.as_u32() {
                    route.credit.grant(u64::from(n));
                }
                continue;
            }
            Kind::Started => Event::Started(f.parse().unwrap_or_default()),
            Kind::Pong => Event::Started(serde_json::Value::Null),
            Kind::Exit => match f.parse::<ExitMsg>() {
                Ok(e) => Event::Exit(e),
                Err(e) => Event::Error(lost(&crate::error_chain(&e))),
            },
            Kind::Error => Event::Error(
                f.parse::<ErrorMsg>()
                    .unwrap_or_else(|e| lost(&crate::error_chain(&e))),
            ),
            _ => continue,
        };
        let last = matches!(ev, Event::Exit(_) | Event::Error(_));
        let _ = route.tx.send(ev);
        if last {
            if let Some(r) = map.remove(&f.session) {
                r.credit.close();
            }
        }
    }
    // Connection gone: every session sees it.
    for (_, r) in routes.lock().expect("routes").drain() {
        r.credit.close();
        let _ = r.tx.send(Event::Error(lost(
            "the connection to the VM's agent was lost",
        )));
    }
}

/// One session of a [`Client`].
pub struct Session {
    pub id: u32,
    out: Out,
    routes: Arc<Mutex<HashMap<u32, Route>>>,
    rx: mpsc::Receiver<Event>,
    credit: Arc<Credit>,
}

impl Session {
    /// The next event; data events must be acknowledged with [`Self::ack`].
    pub fn recv(&self) -> Event {
        self.rx
            .recv()
            .unwrap_or_else(|_| Event::Error(lost("the connection to the VM's agent was lost")))
    }

    /// Returns `n` consumed output bytes to the agent's window.
    pub fn ack(&self, n: usize) {
        if let Some(r) = self.routes.lock().expect("routes").get_mut(&self.id) {
            r.outstanding = r.outstanding.saturating_sub(n as u64);
        }
        let _ = send(
            &self.out,
            Kind::Credit,
            self.id,
            &u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes(),
        );
    }

    /// A handle that sends input and control frames from another thread.
    pub fn input(&self) -> Input {
        Input {
            id: self.id,
            out: self.out.clone(),
            credit: self.credit.clone(),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Still open (we stopped listening early): tell the agent.
        if self
            .routes
            .lock()
            .expect("routes")
            .remove(&self.id)
            .is_some()
        {
            self.credit.close();
            let _ = send(&self.out, Kind::Close, self.id, b"");
        }
    }
}

/// Input side of a session.
#[derive(Clone)]
pub struct Input {
    id: u32,
    out: Out,
    credit: Arc<Credit>,
}

impl Input {
    /// Sends stdin bytes within the agent's window (blocks while it is full);
    /// false once the session is over.
    pub fn write(&self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            let Some(n) = self.credit.take(data.len().min(MAX_DATA)) else {
                return false;
            };
            if send(&self.out, Kind::Stdin, self.id, &data[..n]).is_err() {
                return false;
            }
            data = &data[n..];
        }
        true
    }

    pub fn close(&self) {
        let _ = send(&self.out, Kind::StdinEof, self.id, b"");
    }

    pub fn signal(&self, sig: i32) {
        let _ = send(
            &self.out,
            Kind::Signal,
            self.id,
            &u32::try_from(sig).unwrap_or(0).to_be_bytes(),
        );
    }

    pub fn resize(&self, rows: u16, cols: u16) {
        let mut p = rows.to_be_bytes().to_vec();
        p.extend_from_slice(&cols.to_be_bytes());
        let _ = send(&self.out, Kind::Resize, self.id, &p);
    }

    /// Copies `r` to the session's stdin, then closes it.
    pub fn copy_from(&self, mut r: impl Read) -> std::io::Result<u64> {
        let mut buf = vec![0u8; MAX_DATA];
        let mut total = 0;
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if !self.write(&buf[..n]) {
                return Ok(total);
            }
            total += n as u64;
        }
        self.close();
        Ok(total)
    }
}

/// Result of a finished exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Exited(ExitMsg),
    Failed(ErrorMsg),
}

impl Outcome {
    /// The exit code `docker exec` would return.
    pub fn code(&self) -> i32 {
        match self {
            Self::Exited(e) => e.code,
            Self::Failed(e) => e.code.unwrap_or(126),
        }
    }
}

impl Session {
    /// Drives the session to its end, writing output to `stdout`/`stderr`.
    pub fn wait_output(&self, mut stdout: impl Write, mut stderr: impl Write) -> Outcome {
        loop {
            match self.recv() {
                Event::Stdout(d) => {
                    let _ = stdout.write_all(&d).and_then(|()| stdout.flush());
                    self.ack(d.len());
                }
                Event::Stderr(d) => {
                    let _ = stderr.write_all(&d).and_then(|()| stderr.flush());
                    self.ack(d.len());
                }
                Event::Started(_) => {}
                Event::Exit(e) => return Outcome::Exited(e),
                Event::Error(e) => return Outcome::Failed(e),
            }
        }
    }

    /// Copy out: unpacks the session's tar stream at `target` (`docker cp`
    /// placement) and waits for the agent's verdict.
    pub fn unpack_to(&self, target: &std::path::Path) -> Result<(), ClientError> {
        let mut r = self.reader();
        let unpacked = crate::unpack_at(&mut r, target);
        // The tar ends before the stream does: drain to the Exit.
        let drained = std::io::copy(&mut r, &mut std::io::sink());
        match (r.done, unpacked, drained) {
            (Some(Outcome::Failed(e)), _, _) => Err(ClientError::Agent(e)),
            (_, Err(e), _) => Err(e.into()),
            (_, _, Err(e)) => Err(ClientError::Lost(e)),
            _ => Ok(()),
        }
    }

    /// A reader of the session's stdout (copy out): ends at Exit, fails on
    /// Error.
    pub fn reader(&self) -> SessionReader<'_> {
        SessionReader {
            s: self,
            buf: vec![],
            pos: 0,
            done: None,
        }
    }
}

pub struct SessionReader<'a> {
    s: &'a Session,
    buf: Vec<u8>,
    pos: usize,
    pub done: Option<Outcome>,
}

impl Read for SessionReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            if let Some(d) = &self.done {
                return match d {
                    Outcome::Exited(_) => Ok(0),
                    Outcome::Failed(e) => Err(std::io::Error::other(e.message.clone())),
                };
            }
            match self.s.recv() {
                Event::Stdout(d) => {
                    self.s.ack(d.len());
                    self.buf = d;
                    self.pos = 0;
                }
                Event::Stderr(d) => self.s.ack(d.len()),
                Event::Started(_) => {}
                Event::Exit(e) => self.done = Some(Outcome::Exited(e)),
                Event::Error(e) => self.done = Some(Outcome::Failed(e)),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Frame {
    /// Whether this frame ends its session.
    pub fn is_final(&self) -> bool {
        matches!(self.kind, Kind::Exit | Kind::Error) && self.session != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// Greeting failures are told apart by variant, not by message.
    #[test]
    fn greeting_failures_are_typed() {
        let (host, guest) = UnixStream::pair().unwrap();
        drop(guest);
        let err = Client::connect(host.try_clone().unwrap(), host)
            .err()
            .unwrap();
        assert!(
            matches!(err, ClientError::Greet(_) | ClientError::Closed),
            "{err:?}"
        );

        let (host, mut guest) = UnixStream::pair().unwrap();
        let refusal = ErrorMsg {
            message: "busy".into(),
            code: None,
        };
        guest
            .write_all(&crate::encode(
                Kind::Error,
                0,
                &serde_json::to_vec(&refusal).unwrap(),
            ))
            .unwrap();
        let err = Client::connect(host.try_clone().unwrap(), host)
            .err()
            .unwrap();
        assert!(
            matches!(&err, ClientError::Agent(m) if m == &refusal),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "busy");

        let (host, mut guest) = UnixStream::pair().unwrap();
        guest
            .write_all(&crate::encode(Kind::Hello, 0, b"{not json"))
            .unwrap();
        let err = Client::connect(host.try_clone().unwrap(), host)
            .err()
            .unwrap();
        assert!(matches!(err, ClientError::Payload(_)), "{err:?}");
        let text = crate::error_chain(&err);
        assert!(text.starts_with("bad Hello payload: "), "{text}");
        assert_eq!(text.matches("bad Hello payload").count(), 1, "{text}");
    }

    /// A hostile "agent" that ignores flow control: the session ends with
    /// an error instead of the host buffering without bound.
    #[test]
    fn a_guest_exceeding_its_window_loses_the_session() {
        let (host, mut guest) = UnixStream::pair().unwrap();
        let hello = Hello {
            version: VERSION,
            peer: "evil".into(),
        };
        guest
            .write_all(&crate::encode(
                Kind::Hello,
                0,
                &serde_json::to_vec(&hello).unwrap(),
            ))
            .unwrap();
        let c = Client::connect(host.try_clone().unwrap(), host).unwrap();
        let s = c.open(&Request::Shutdown).unwrap();
        let flood = std::thread::spawn(move || {
            let chunk = vec![0u8; MAX_DATA];
            for _ in 0..40 {
                if guest
                    .write_all(&crate::encode(Kind::Stdout, 1, &chunk))
                    .is_err()
                {
                    break;
                }
            }
            guest
        });
        let mut got = 0usize;
        loop {
            match s.recv() {
                Event::Stdout(d) => got += d.len(), // never acknowledged
                Event::Error(e) => {
                    assert!(e.message.contains("flow-control window"), "{}", e.message);
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(got as u64 <= WINDOW, "{got}");
        drop(flood.join().unwrap());
    }
}
