//! `--ssh` and `ignis ssh`: a per-VM ed25519 key pair (or the user's public
//! key) installed as root's authorized key, and a known-hosts file built
//! from the VM's host keys read through the agent, so `ssh` runs with
//! `StrictHostKeyChecking=yes` instead of trusting whatever answers first.

use std::io::Read;
use std::path::{Path, PathBuf};

use ignis_agent_proto::{CopyRequest, Request};
use ignis_api::{SshAccess, SshSpec, VmState};

use crate::{Error, ErrorKind, Ignis};

pub(crate) const AUTHORIZED_KEYS: &str = "authorized_keys";
pub const PRIVATE_KEY: &str = "id_ed25519";
const KNOWN_HOSTS: &str = "known_hosts";

fn invalid(msg: String) -> Error {
    Error::new(ErrorKind::Invalid, msg)
}

/// Whether `line` looks like one OpenSSH public key line.
fn is_key_line(line: &str) -> bool {
    let mut parts = line.split_whitespace();
    matches!(
        (parts.next(), parts.next()),
        (Some(kind), Some(b64))
            if (kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-"))
                && b64.len() > 16
                && b64.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
    )
}

/// The authorized key for `--ssh[=given]`, and the private key when ignis
/// generates the pair.
pub(crate) fn authorized_key(given: &str) -> Result<(SshSpec, Option<String>), Error> {
    if given.is_empty() {
        let key = ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)
            .map_err(|e| Error::internal("generate an SSH key", e))?;
        let private = key
            .to_openssh(ssh_key::LineEnding::LF)
            .map_err(|e| Error::internal("encode the SSH key", e))?
            .to_string();
        let public = key
            .public_key()
            .to_openssh()
            .map_err(|e| Error::internal("encode the SSH key", e))?;
        return Ok((
            SshSpec {
                authorized_key: format!("{public} ignis"),
                generated: true,
            },
            Some(private),
        ));
    }
    let line = if is_key_line(given) {
        given.trim().to_string()
    } else {
        let text = std::fs::read_to_string(given).map_err(|e| {
            invalid(format!(
                "--ssh={given}: not a public key line and not a readable file ({e})"
            ))
        })?;
        let line = text
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string();
        if !is_key_line(&line) {
            return Err(invalid(format!(
                "--ssh={given}: the file does not hold an OpenSSH public key (ssh-ed25519 AAAA...); pass the .pub file"
            )));
        }
        line
    };
    Ok((
        SshSpec {
            authorized_key: line,
            generated: false,
        },
        None,
    ))
}

fn write_private(path: &Path, data: &str, mode: u32) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::internal("write an SSH key file", e))?;
    f.write_all(data.as_bytes())
        .map_err(|e| Error::internal("write an SSH key file", e))
}

/// Writes `authorized_keys` (copied into the VM at boot) and, when
/// generated, the key pair, all 0600 in the VM's directory.
pub(crate) fn write_keys(dir: &Path, spec: &SshSpec, private: Option<&str>) -> Result<(), Error> {
    write_private(
        &dir.join(AUTHORIZED_KEYS),
        &format!("{}\n", spec.authorized_key),
        0o600,
    )?;
    if let Some(p) = private {
        write_private(&dir.join(PRIVATE_KEY), p, 0o600)?;
        write_private(
            &dir.join(format!("{PRIVATE_KEY}.pub")),
            &format!("{}\n", spec.authorized_key),
            0o644,
        )?;
    }
    Ok(())
}

/// How to reach a VM with the system `ssh`.
#[derive(Debug, Clone, Default)]
pub struct SshPlan {
    pub ip: String,
    /// The generated private key (`None`: the user's own keys).
    pub identity: Option<PathBuf>,
    /// Pinned host keys of this VM.
    pub known_hosts: PathBuf,
    /// A `ProxyCommand` that carries the connection (`--host`: through
    /// the daemon, which reaches the VM's address); `None`: direct.
    pub proxy_command: Option<String>,
    /// A directory holding the key files of this session only, removed
    /// once `ssh` ends (the remote path writes them there).
    pub temporary: Option<PathBuf>,
}

impl SshPlan {
    /// Writes `access`'s pinned host keys (and its private key, if any)
    /// into `dir` (0600) and plans a login with them.
    pub fn write(access: &SshAccess, dir: &Path) -> Result<Self, Error> {
        let known_hosts = dir.join(KNOWN_HOSTS);
        write_private(
            &known_hosts,
            &known_hosts_text(&access.ip, &access.host_keys),
            0o600,
        )?;
        let identity = match &access.private_key {
            Some(k) => {
                let p = dir.join(PRIVATE_KEY);
                write_private(&p, k, 0o600)?;
                Some(p)
            }
            None => None,
        };
        Ok(Self {
            ip: access.ip.clone(),
            identity,
            known_hosts,
            proxy_command: None,
            temporary: None,
        })
    }
}

/// A known-hosts file: each host key for `ip`.
fn known_hosts_text(ip: &str, keys: &[String]) -> String {
    keys.iter()
        .map(|k| {
            let mut p = k.split_whitespace();
            format!(
                "{ip} {} {}\n",
                p.next().unwrap_or(""),
                p.next().unwrap_or("")
            )
        })
        .collect()
}

/// The port of the guest's sshd.
pub const SSH_PORT: u16 = 22;

impl Ignis {
    /// A running VM's ID and address (`ssh` needs a network).
    fn ssh_target(&self, rec: &ignis_api::VmRecord) -> Result<String, Error> {
        rec.spec.network.ip.clone().ok_or_else(|| {
            Error::new(
                ErrorKind::Invalid,
                format!(
                    "VM {} has no network address (--network none); ssh needs --network bridge",
                    rec.name
                ),
            )
        })
    }

    /// Where a running VM's sshd listens, from this host: its ID and
    /// address (the daemon's `ssh/connect` stream connects there).
    pub fn vm_ssh_address(&self, query: &str) -> Result<(String, std::net::SocketAddr), Error> {
        let (rec, _) = self.vm_agent_socket(query)?;
        let ip = self.ssh_target(&rec)?;
        let ip: std::net::IpAddr = ip.parse().map_err(|e| {
            Error::with_source(
                ErrorKind::Internal,
                format!("VM {} has a bad address {ip}", rec.name),
                e,
            )
        })?;
        Ok((rec.id, std::net::SocketAddr::new(ip, SSH_PORT)))
    }

    /// Everything `ignis ssh` needs: the VM's address, its key, and the
    /// host keys the VM's sshd presents, read from
    /// `/etc/ssh/ssh_host_*_key.pub` through the agent (a trusted
    /// channel), so a man in the middle cannot answer instead.
    pub fn vm_ssh_access(&self, query: &str) -> Result<SshAccess, Error> {
        let (rec, client) = self.vm_agent(query)?;
        debug_assert_eq!(rec.state(), VmState::Running);
        let ip = self.ssh_target(&rec)?;
        let s = client
            .open(&Request::CopyOut(CopyRequest {
                path: "/etc/ssh".into(),
                follow_link: false,
            }))
            .map_err(|e| Error::new(ErrorKind::Unavailable, ignis_agent_proto::error_chain(&e)))?;
        let mut keys = Vec::new();
        {
            let mut reader = s.reader();
            let mut ar = tar::Archive::new(&mut reader);
            if let Ok(entries) = ar.entries() {
                for mut e in entries.flatten() {
                    let name = e
                        .path()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    let file = name.rsplit('/').next().unwrap_or("").to_string();
                    if !(file.starts_with("ssh_host_") && file.ends_with("_key.pub"))
                        || e.size() > 16 << 10
                    {
                        continue;
                    }
                    let mut text = String::new();
                    if e.read_to_string(&mut text).is_ok() && is_key_line(text.trim()) {
                        keys.push(text.trim().to_string());
                    }
                }
            }
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        }
        if keys.is_empty() {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "VM {} has no SSH host key (/etc/ssh/ssh_host_*_key.pub); does its image run sshd, and has it started?",
                    rec.name
                ),
            ));
        }
        let private_key = match rec.spec.ssh.as_ref().filter(|s| s.generated) {
            Some(_) => Some(
                std::fs::read_to_string(self.vm_dir(&rec.id).join(PRIVATE_KEY))
                    .map_err(|e| Error::internal("read the VM's SSH key", e))?,
            ),
            None => None,
        };
        Ok(SshAccess {
            id: rec.id,
            ip,
            port: SSH_PORT,
            host_keys: keys,
            private_key,
        })
    }

    /// [`Ignis::vm_ssh_access`] as files in the VM's directory (the
    /// generated key is already there).
    pub fn vm_ssh(&self, query: &str) -> Result<SshPlan, Error> {
        let mut access = self.vm_ssh_access(query)?;
        let dir = self.vm_dir(&access.id);
        let generated = access.private_key.take().is_some();
        let mut plan = SshPlan::write(&access, &dir)?;
        if generated {
            plan.identity = Some(dir.join(PRIVATE_KEY));
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_generated_or_validated() {
        let (spec, private) = authorized_key("").unwrap();
        assert!(spec.generated && spec.authorized_key.starts_with("ssh-ed25519 AAAA"));
        assert!(private
            .unwrap()
            .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        let line = spec.authorized_key.clone();
        assert_eq!(authorized_key(&line).unwrap().0.authorized_key, line);
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("k.pub");
        std::fs::write(&f, format!("\n{line}\n")).unwrap();
        assert_eq!(
            authorized_key(f.to_str().unwrap())
                .unwrap()
                .0
                .authorized_key,
            line
        );
        std::fs::write(&f, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
        let e = authorized_key(f.to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("pass the .pub file"), "{e}");
        assert!(authorized_key("/no/such.pub")
            .unwrap_err()
            .to_string()
            .contains("not a readable file"));
    }
}
