//! VM operations: create, start (through a per-VM supervisor process),
//! stop, kill, rm, ps, logs, inspect.
//!
//! A VM's files live in `<root>/vms/<id>/`: `data.ext4` (writable disk, the
//! overlay's upper layer), `initrd.img` (per-VM initramfs), `console.log`,
//! `supervisor.log` and the VMM's control socket.

mod after_boot;
pub mod agent;
mod agent_mux;
mod boot;
mod cni;
mod confine;
mod console;
mod control;
mod create;
mod events;
mod exit;
mod info;
mod list;
mod logs;
mod netinfo;
mod network;
mod options;
mod plan;
mod remove;
pub mod seed;
mod ssh;
mod start;
mod stats;
mod stop;
mod supervise;

pub use confine::{vmm_uid, ENV_CONFINE, UID_BASE};
pub use console::CONSOLE_CAP;
pub(crate) use create::mkfs_ext4;
pub use events::VmWatcher;
pub use ignis_api::NetworkMode;
pub use ignis_vmm::firecracker::metrics::Totals as VmmTotals;
pub use ignis_vmm::firecracker::ENV_JAILER;
pub use ignis_vmm::BootPlan;
pub use info::Info;
pub use logs::{rfc3339_ns, LogFollower, LogOptions};
pub use netinfo::{LeaseInfo, NetworkInfo};
pub use options::{
    check_seed_file, parse_network, parse_volume, CniDirs, CopyFile, CreateOptions, Field, Macvtap,
    NicRequest, SshKey, VmSettings, VolumeRequest, VolumeSource, DEFAULT_STOP_TIMEOUT,
    MAX_SEED_FILE, MAX_STOP_TIMEOUT, MIN_VOLUME_SIZE,
};
pub use ssh::SshPlan;
pub use start::{find_supervisor, ENV_SUPERVISOR, SUPERVISOR_BINARY};
pub use stats::vm_sample;
pub use supervise::SuperviseOptions;

use std::path::PathBuf;

use ignis_api::BackendKind;
use ignis_api::{VmRecord, VmStatus};
use ignis_state::ObjectRow;

use crate::{Error, ErrorKind, Ignis};

pub(crate) const KIND: &str = "vm";
pub(crate) use supervise::SUPERVISOR_LOCK;
/// The supervisor's agent socket in a VM's directory (see `agent_mux`).
pub(crate) const AGENT_SOCKET: &str = "agent.sock";

pub(crate) fn parse(row: &ObjectRow) -> Result<VmRecord, Error> {
    serde_json::from_str(&row.record).map_err(|e| {
        Error::with_source(
            ErrorKind::Internal,
            format!("VM record {} is unreadable", row.id),
            e,
        )
    })
}

/// A VM's directory in the state root `root`.
pub(crate) fn vm_dir_in(root: &std::path::Path, id: &str) -> PathBuf {
    root.join("vms").join(id)
}

/// The driver of a VM's VMM: everything that differs between VMMs goes
/// through it (see `ignis_vmm::Driver`).
pub(crate) fn driver(kind: BackendKind) -> Result<Box<dyn ignis_vmm::Driver>, Error> {
    ignis_vmm::driver(kind).map_err(|e| Error::wrap(ErrorKind::Unavailable, e))
}

impl Ignis {
    pub(crate) fn vm_dir(&self, id: &str) -> PathBuf {
        vm_dir_in(self.store.root(), id)
    }

    /// Finds a VM by name or ID prefix.
    pub(crate) fn find_vm(&self, query: &str) -> Result<VmRecord, Error> {
        let rows = self.store.db().read(|tx| tx.list_objects(KIND))?;
        parse(crate::resolve(KIND, query, None, &rows)?)
    }

    pub(crate) fn load_vm(&self, id: &str) -> Result<Option<VmRecord>, Error> {
        match self.store.db().read(|tx| tx.get_object(KIND, id))? {
            Some(row) => parse(&row).map(Some),
            None => Ok(None),
        }
    }

    /// Read-modify-write of a VM's status in one transaction; `None` when
    /// the VM is gone.
    pub(crate) fn update_status(
        &self,
        id: &str,
        f: impl FnOnce(&mut VmStatus),
    ) -> Result<Option<VmRecord>, Error> {
        self.store.db().tx(|tx| {
            let Some(row) = tx.get_object(KIND, id)? else {
                return Ok(None);
            };
            let mut rec = parse(&row)?;
            f(&mut rec.status);
            tx.update_record(KIND, id, &serde_json::to_string(&rec).expect("json"))?;
            Ok::<_, Error>(Some(rec))
        })
    }
}

/// 16 random hex digits, as Ignite's VM IDs.
pub(crate) fn new_id() -> String {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        b = (t.subsec_nanos() as u64 ^ t.as_secs() ^ u64::from(std::process::id())).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const ADJECTIVES: &[&str] = &[
    "amber", "bold", "brisk", "calm", "crimson", "dusty", "eager", "fierce", "gentle", "golden",
    "hidden", "icy", "jolly", "keen", "lively", "misty", "noble", "odd", "proud", "quiet", "rapid",
    "silent", "swift", "tidy", "vivid", "wild",
];
const NOUNS: &[&str] = &[
    "ember", "spark", "flame", "cinder", "blaze", "torch", "comet", "meteor", "nova", "pulsar",
    "quasar", "beacon", "flare", "glow", "kiln", "lantern", "forge", "furnace", "ash", "smoke",
    "phoenix", "sun", "star", "candle",
];

/// A random `adjective-noun` name.
pub(crate) fn new_name(id: &str) -> String {
    let n = u64::from_str_radix(&id[..8.min(id.len())], 16).unwrap_or(0);
    let a = ADJECTIVES[usize::try_from(n % ADJECTIVES.len() as u64).unwrap_or(0)];
    let b = NOUNS[usize::try_from((n / 97) % NOUNS.len() as u64).unwrap_or(0)];
    format!("{a}-{b}")
}

/// Docker's name rule.
pub(crate) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && name.len() <= 64
}

/// Overrides the host's boot ID (tests fake a host reboot with it).
pub const ENV_BOOT_ID: &str = "IGNIS_BOOT_ID";

/// Host boot ID (changes on every reboot); `$IGNIS_BOOT_ID` when set.
pub(crate) fn boot_id() -> Option<String> {
    if let Some(id) = std::env::var(ENV_BOOT_ID).ok().filter(|s| !s.is_empty()) {
        return Some(id);
    }
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// Start time of a process in clock ticks since boot (field 22 of
/// /proc/PID/stat), `None` when it does not exist.
pub(crate) fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    // A zombie (not reaped by whoever adopted it) is dead for our purposes.
    if matches!(fields.next(), Some("Z" | "X")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ids_and_process_start() {
        let id = new_id();
        assert_eq!(id.len(), 16);
        assert!(valid_name(&new_name(&id)));
        assert!(valid_name("web-1.prod_a"));
        assert!(!valid_name("-web") && !valid_name("") && !valid_name("a b") && !valid_name("a/b"));
        let me = process_start(std::process::id()).unwrap();
        assert!(me > 0);
        assert_eq!(process_start(u32::MAX - 1), None);
    }
}
