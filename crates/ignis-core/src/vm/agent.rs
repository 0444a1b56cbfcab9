//! Talking to a running VM's guest agent (through its supervisor's
//! `agent.sock`): exec sessions, cp, clean shutdown, fork-time hooks.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use ignis_agent_proto::client::{Client, Outcome};
use ignis_agent_proto::{error_chain, CopyRequest, ExecRequest, NetConfig, Request};
use ignis_api::{ExecOutput, VmRecord, VmState};

use crate::{Error, ErrorKind, Ignis};

/// How long a greeting from the agent may take.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

fn failed(what: &str, vm: &str, o: Outcome) -> Result<(), Error> {
    match o {
        Outcome::Exited(e) if e.code == 0 => Ok(()),
        Outcome::Exited(e) => Err(Error::new(
            ErrorKind::Internal,
            format!("{what} in VM {vm} failed with exit code {}", e.code),
        )),
        Outcome::Failed(e) => Err(Error::new(
            ErrorKind::Internal,
            format!("{what} in VM {vm} failed: {}", e.message),
        )),
    }
}

impl Ignis {
    /// Connects to the agent of a running VM.
    pub fn vm_agent(&self, query: &str) -> Result<(VmRecord, Client), Error> {
        let (rec, _) = self.vm_agent_socket(query)?;
        let client = self.agent_client(&rec)?;
        Ok((rec, client))
    }

    /// The agent socket of a running, unpaused VM (what the daemon proxies
    /// `GET /v1/vms/{vm}/agent` to).
    pub fn vm_agent_socket(&self, query: &str) -> Result<(VmRecord, std::path::PathBuf), Error> {
        let rec = self.reconcile(self.find_vm(query)?)?;
        if rec.state() != VmState::Running {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "VM {} is not running; start it with `ignis start {}`",
                    rec.name, rec.name
                ),
            ));
        }
        if rec.status.paused {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "VM {} is paused; `ignis unpause {}` first",
                    rec.name, rec.name
                ),
            ));
        }
        if rec.status.health.is_none() {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "the agent of VM {} is not reachable: this VM runs without an agent",
                    rec.name
                ),
            ));
        }
        let path = self.vm_dir(&rec.id).join(super::AGENT_SOCKET);
        Ok((rec, path))
    }

    /// Runs a command to completion (no stdin, no TTY) and returns its
    /// output, each stream bounded to `limit` bytes (the rest is dropped).
    pub fn vm_exec_output(
        &self,
        query: &str,
        req: ExecRequest,
        limit: usize,
    ) -> Result<ExecOutput, Error> {
        let (rec, client) = self.vm_agent(query)?;
        let s = client
            .open(&Request::Exec(ExecRequest {
                tty: false,
                stdin: false,
                ..req
            }))
            .map_err(|e| Error::new(ErrorKind::Unavailable, error_chain(&e)))?;
        let (mut out, mut err) = (Bounded::new(limit), Bounded::new(limit));
        match s.wait_output(&mut out, &mut err) {
            Outcome::Exited(e) => Ok(ExecOutput {
                exit_code: e.code,
                stdout: out.buf,
                stderr: err.buf,
            }),
            Outcome::Failed(e) => Err(Error::new(
                ErrorKind::Invalid,
                format!("exec in VM {}: {}", rec.name, e.message),
            )),
        }
    }

    pub(crate) fn agent_client(&self, rec: &VmRecord) -> Result<Client, Error> {
        client_at(&self.vm_dir(&rec.id), rec)
    }

    /// `ignis cp HOST VM:PATH`: a tar of `host` unpacked at `vm_path`.
    pub fn vm_copy_to(&self, query: &str, host: &Path, vm_path: &str) -> Result<(), Error> {
        std::fs::symlink_metadata(host).map_err(|e| {
            Error::with_source(
                ErrorKind::NotFound,
                format!("cannot copy {}", host.display()),
                e,
            )
        })?;
        let (rec, client) = self.vm_agent(query)?;
        copy_to(&client, &rec.name, host, vm_path)
    }

    /// `ignis cp VM:PATH HOST`.
    pub fn vm_copy_from(&self, query: &str, vm_path: &str, host: &Path) -> Result<(), Error> {
        let (rec, client) = self.vm_agent(query)?;
        copy_from(&client, &rec.name, vm_path, host)
    }

    /// Fork-time identity change (the snapshot issue's restore path; also
    /// `ignis __configure`).
    pub fn vm_configure(&self, query: &str, cfg: NetConfig) -> Result<(), Error> {
        let (rec, client) = self.vm_agent(query)?;
        configure(&client, &rec.name, cfg)
    }
}

/// `ignis cp HOST VM:PATH` over an agent session (local or through the
/// daemon): a tar of `host` unpacked at `vm_path`, produced while it
/// streams (never held in memory).
pub fn copy_to(client: &Client, vm: &str, host: &Path, vm_path: &str) -> Result<(), Error> {
    std::fs::symlink_metadata(host).map_err(|e| {
        Error::with_source(
            ErrorKind::NotFound,
            format!("cannot copy {}", host.display()),
            e,
        )
    })?;
    let s = client
        .open(&Request::CopyIn(CopyRequest {
            path: vm_path.to_string(),
        }))
        .map_err(|e| Error::new(ErrorKind::Unavailable, error_chain(&e)))?;
    let input = s.input();
    let host = host.to_path_buf();
    let writer = std::thread::spawn(move || {
        let mut w = InputWriter(input.clone());
        let r = ignis_agent_proto::pack(&host, &mut w);
        input.close();
        r
    });
    let outcome = s.wait_output(std::io::sink(), std::io::sink());
    let packed = writer.join();
    failed(&format!("copy to {vm_path}"), vm, outcome)?;
    match packed {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::new(ErrorKind::Internal, error_chain(&e))),
        Err(_) => Err(Error::new(ErrorKind::Internal, "archiver panicked")),
    }
}

/// `ignis cp VM:PATH HOST` over an agent session.
pub fn copy_from(client: &Client, vm: &str, vm_path: &str, host: &Path) -> Result<(), Error> {
    let s = client
        .open(&Request::CopyOut(CopyRequest {
            path: vm_path.to_string(),
        }))
        .map_err(|e| Error::new(ErrorKind::Unavailable, error_chain(&e)))?;
    s.unpack_to(host).map_err(|e| {
        Error::new(
            ErrorKind::Internal,
            format!(
                "copy {vm}:{vm_path} to {}: {}",
                host.display(),
                error_chain(&e)
            ),
        )
    })
}

/// Sets a VM's identity over an agent session (fork-time hooks).
pub fn configure(client: &Client, vm: &str, cfg: NetConfig) -> Result<(), Error> {
    let s = client
        .open(&Request::Configure(cfg))
        .map_err(|e| Error::new(ErrorKind::Unavailable, error_chain(&e)))?;
    failed(
        "configure",
        vm,
        s.wait_output(std::io::sink(), std::io::sink()),
    )
}

/// A writer keeping the first `limit` bytes.
struct Bounded {
    buf: Vec<u8>,
    limit: usize,
}

impl Bounded {
    fn new(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            limit,
        }
    }
}

impl std::io::Write for Bounded {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let room = self.limit.saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&b[..b.len().min(room)]);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A client of the agent of `rec`, whose directory is `dir`.
fn client_at(dir: &Path, rec: &VmRecord) -> Result<Client, Error> {
    let path = dir.join(super::AGENT_SOCKET);
    let unreachable = |why: String| {
        Error::new(
            ErrorKind::Unavailable,
            format!("the agent of VM {} is not reachable: {why}", rec.name),
        )
    };
    let s = UnixStream::connect(&path).map_err(|e| {
        unreachable(match rec.status.health {
            None => "this VM runs without an agent".into(),
            _ => format!("{}: {e}", path.display()),
        })
    })?;
    let ctl = s.try_clone().map_err(|e| unreachable(e.to_string()))?;
    let w = s.try_clone().map_err(|e| unreachable(e.to_string()))?;
    // Socket options are shared by the clones: bound the greeting only.
    let _ = ctl.set_read_timeout(Some(HELLO_TIMEOUT));
    let client = Client::connect(s, w).map_err(|e| unreachable(error_chain(&e)))?;
    let _ = ctl.set_read_timeout(None);
    Ok(client)
}

/// Asks the guest agent of `rec` (in the state root `root`) to power the
/// VM off; Ok once it accepted. Bounded: a guest whose agent accepts the
/// request but never answers (hung, or paused by a failed snapshot) must
/// not hang `stop`; the caller then asks the VMM.
pub(crate) fn shutdown_at(root: &Path, rec: &VmRecord) -> Result<(), Error> {
    let client = client_at(&super::vm_dir_in(root, &rec.id), rec)?;
    let name = rec.name.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = client
            .open(&Request::Shutdown)
            .map_err(|e| Error::new(ErrorKind::Unavailable, error_chain(&e)))
            .and_then(|s| {
                failed(
                    "shutdown",
                    &name,
                    s.wait_output(std::io::sink(), std::io::sink()),
                )
            });
        let _ = tx.send(r);
    });
    rx.recv_timeout(AGENT_SHUTDOWN_TIMEOUT).unwrap_or_else(|_| {
        Err(Error::new(
            ErrorKind::Unavailable,
            format!(
                "the agent of {} did not answer the shutdown within {} s",
                rec.name,
                AGENT_SHUTDOWN_TIMEOUT.as_secs()
            ),
        ))
    })
}

const AGENT_SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `io::Write` into a session's stdin (within the agent's window).
struct InputWriter(ignis_agent_proto::client::Input);

impl std::io::Write for InputWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.write(buf) {
            Ok(buf.len())
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the agent ended the copy",
            ))
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
