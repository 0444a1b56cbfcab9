//! Talking to a running VM's guest agent (through its supervisor's
//! `agent.sock`): exec sessions, cp, clean shutdown, fork-time hooks.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use ignis_agent_proto::client::{Client, Outcome};
use ignis_agent_proto::{error_chain, CopyRequest, NetConfig, Request};
use ignis_api::{VmRecord, VmState};

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
        let client = self.agent_client(&rec)?;
        Ok((rec, client))
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
        let s = client
            .open(&Request::CopyIn(CopyRequest {
                path: vm_path.to_string(),
            }))
            .map_err(|e| Error::new(ErrorKind::Unavailable, error_chain(&e)))?;
        let input = s.input();
        let host = host.to_path_buf();
        // The tar is produced while it streams: never held in memory.
        let writer = std::thread::spawn(move || {
            let mut w = InputWriter(input.clone());
            let r = ignis_agent_proto::pack(&host, &mut w);
            input.close();
            r
        });
        let outcome = s.wait_output(std::io::sink(), std::io::sink());
        let packed = writer.join();
        failed(&format!("copy to {vm_path}"), &rec.name, outcome)?;
        match packed {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::new(ErrorKind::Internal, error_chain(&e))),
            Err(_) => Err(Error::new(ErrorKind::Internal, "archiver panicked")),
        }
    }

    /// `ignis cp VM:PATH HOST`.
    pub fn vm_copy_from(&self, query: &str, vm_path: &str, host: &Path) -> Result<(), Error> {
        let (rec, client) = self.vm_agent(query)?;
        let s = client
            .open(&Request::CopyOut(CopyRequest {
                path: vm_path.to_string(),
            }))
            .map_err(|e| Error::new(ErrorKind::Unavailable, error_chain(&e)))?;
        s.unpack_to(host).map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!(
                    "copy {}:{vm_path} to {}: {}",
                    rec.name,
                    host.display(),
                    error_chain(&e)
                ),
            )
        })
    }

    /// Fork-time identity change (the snapshot issue's restore path; also
    /// `ignis __configure`).
    pub fn vm_configure(&self, query: &str, cfg: NetConfig) -> Result<(), Error> {
        let (rec, client) = self.vm_agent(query)?;
        let s = client
            .open(&Request::Configure(cfg))
            .map_err(|e| Error::new(ErrorKind::Unavailable, error_chain(&e)))?;
        failed(
            "configure",
            &rec.name,
            s.wait_output(std::io::sink(), std::io::sink()),
        )
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
