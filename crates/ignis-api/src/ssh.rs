//! `GET /v1/vms/{vm}/ssh`: what `ignis ssh` needs to log in to a VM from
//! another machine (the connection itself goes through the daemon:
//! `GET /v1/vms/{vm}/ssh/connect`, an HTTP upgrade to the VM's sshd).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshAccess {
    /// The VM's ID.
    pub id: String,
    /// Its address on the daemon's host (reachable from there only).
    pub ip: String,
    pub port: u16,
    /// The VM's host keys (`TYPE BASE64` lines), read from the guest
    /// through its agent: pin them, never trust on first use.
    pub host_keys: Vec<String>,
    /// The generated private key (`--ssh` without a key; OpenSSH PEM), or
    /// null: the user logs in with their own key.
    pub private_key: Option<String>,
}
