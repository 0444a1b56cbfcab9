//! `ignis system check`: finds what a crash (SIGKILL of a command or a
//! supervisor, a host crash) can leave inconsistent, and `system prune`
//! repairs it. Only resources this state directory owns are considered:
//! cgroups, jails, RAM files and TAPs are named after VM IDs, so a VM of
//! another ignis root on the same host is never touched.

use std::collections::BTreeSet;
use std::path::Path;

use ignis_api::{VmRecord, VmState};
use serde::{Deserialize, Serialize};

use crate::{Error, Ignis};

/// One inconsistency and how it is repaired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// `vm-files`, `orphan-dir`, `stale-cgroup`, `stale-jail`,
    /// `stale-memory`, `stale-tap`, `stale-lock`, `orphan-supervisor`,
    /// `orphan-volume`, `temp`.
    pub kind: String,
    pub what: String,
    /// The command that repairs it.
    pub fix: String,
}

fn problem(kind: &str, what: String, fix: &str) -> Problem {
    Problem {
        kind: kind.into(),
        what,
        fix: fix.into(),
    }
}

/// Supervisors of this root (`ignis-supervisor --root ROOT ... --vm ID`)
/// by VM ID.
fn supervisors(root: &Path) -> Vec<(i32, String)> {
    let root = root.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmd
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let launcher = std::path::Path::new(args.first()?).file_name()?;
            if launcher != crate::vm::SUPERVISOR_BINARY {
                return None;
            }
            let flag = |name: &str| args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone());
            (flag("--root")? == root && pid != rustix::process::getpid().as_raw_nonzero().get())
                .then(|| Some((pid, flag("--vm")?)))
                .flatten()
        })
        .collect()
}

fn tap_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// The macvtaps of VM `id` on this host (`mv<id>N`, any N).
fn macvtaps_of(id: &str) -> Vec<String> {
    let prefix = ignis_net::macvtap::macvtap_name(id, 0);
    let prefix = &prefix[..prefix.len() - 1];
    std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n.strip_prefix(prefix)
                        .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Ignis {
    /// Finds inconsistencies; changes nothing except what every command
    /// does (a "running" VM whose supervisor died is recorded as exited).
    pub fn system_check(&self) -> Result<Vec<Problem>, Error> {
        let mut problems = Vec::new();
        let rows = self
            .store
            .db()
            .read(|tx| tx.list_objects(crate::vm::KIND))?;
        let mut known = BTreeSet::new();
        let mut running = BTreeSet::new();
        let mut vms: Vec<VmRecord> = Vec::new();
        for row in &rows {
            known.insert(row.id.clone());
            match crate::vm::parse(row).and_then(|r| self.reconcile(r)) {
                Ok(v) => {
                    if v.state() == VmState::Running {
                        running.insert(v.id.clone());
                    }
                    vms.push(v);
                }
                Err(e) => problems.push(problem(
                    "vm-record",
                    format!("VM {}: {e}", row.id),
                    "ignis rm -f <id>",
                )),
            }
        }
        // Records without their files.
        for v in &vms {
            let disk = self.vm_dir(&v.id).join("data.ext4");
            if !disk.exists() {
                problems.push(problem(
                    "vm-files",
                    format!(
                        "VM {} ({}) has no writable disk {}",
                        v.name,
                        v.id,
                        disk.display()
                    ),
                    &format!("ignis rm -f {}", v.id),
                ));
            }
        }
        // Files without a record.
        let vms_dir = self.store.root().join("vms");
        let mut dirs = BTreeSet::new();
        for e in std::fs::read_dir(&vms_dir)
            .map_err(|e| Error::internal("read the VM directory", e))?
            .flatten()
        {
            let id = e.file_name().to_string_lossy().into_owned();
            if !known.contains(&id) {
                problems.push(problem(
                    "orphan-dir",
                    format!("{} belongs to no VM", e.path().display()),
                    "ignis system prune",
                ));
            }
            dirs.insert(id);
        }
        // Host resources of VMs that do not run.
        let cgroups = ignis_vmm::cgroup::Hierarchy::detect().ok();
        let cgroup_ids: BTreeSet<String> = cgroups
            .as_ref()
            .map(|h| h.list())
            .unwrap_or_default()
            .into_iter()
            .collect();
        for id in known.union(&dirs) {
            if running.contains(id) {
                continue;
            }
            if cgroup_ids.contains(id) {
                problems.push(problem(
                    "stale-cgroup",
                    format!("cgroup ignis/{id} of a VM that does not run"),
                    "ignis system prune",
                ));
            }
            let dir = self.vm_dir(id);
            // Whatever VMM it had (a directory without a record names none).
            for d in ignis_vmm::drivers() {
                for l in d.leftovers(&dir) {
                    problems.push(problem(
                        &format!("stale-{}", l.kind),
                        format!("{} {} of a VM that does not run", l.kind, l.path.display()),
                        "ignis system prune",
                    ));
                }
            }
            let tap = ignis_net::tap_name(id);
            if tap_exists(&tap) {
                problems.push(problem(
                    "stale-tap",
                    format!("TAP {tap} of a VM that does not run"),
                    "ignis system prune",
                ));
            }
            for m in macvtaps_of(id) {
                problems.push(problem(
                    "stale-tap",
                    format!("macvtap {m} of a VM that does not run"),
                    "ignis system prune",
                ));
            }
        }
        // CNI attachments (and namespaces) of VMs that are gone: DEL never ran.
        let cni: BTreeSet<String> = self.cni_attached().into_iter().collect();
        for id in cni.union(&dirs) {
            if !known.contains(id) && (cni.contains(id) || ignis_net::cni::netns_path(id).exists())
            {
                problems.push(problem(
                    "orphan-cni",
                    format!(
                        "CNI attachment (network namespace {}) of VM {id}, which has no record",
                        ignis_net::cni::netns_name(id)
                    ),
                    "ignis system prune",
                ));
            }
        }
        // Supervisors of VMs this root no longer has.
        for (pid, id) in supervisors(self.store.root()) {
            if !known.contains(&id) {
                problems.push(problem(
                    "orphan-supervisor",
                    format!("supervisor (pid {pid}) of VM {id}, which has no record"),
                    "ignis system prune",
                ));
            }
        }
        // Lock files of VMs that are gone.
        for e in std::fs::read_dir(self.store.root().join("locks"))
            .map_err(|e| Error::internal("read the lock directory", e))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name
                .strip_prefix(&format!("{}-", crate::vm::SUPERVISOR_LOCK))
                .and_then(|n| n.strip_suffix(".lock"))
            {
                if !known.contains(id) {
                    problems.push(problem(
                        "stale-lock",
                        format!("lock file {name} of a VM that is gone"),
                        "ignis system prune",
                    ));
                }
            }
        }
        // Anonymous volumes of creates that died before recording their VM.
        for v in self.orphan_volumes()? {
            problems.push(problem(
                "orphan-volume",
                format!(
                    "anonymous volume {} ({}) was made for VM {}, which was never recorded",
                    v.name,
                    v.path,
                    v.labels.get(crate::volume::VM_LABEL).map_or("?", |s| s)
                ),
                "ignis system prune",
            ));
        }
        // Scratch space of interrupted imports and pulls.
        let tmp = self.store.root().join("tmp");
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for e in entries.flatten() {
                problems.push(problem(
                    "temp",
                    format!("scratch {} of an interrupted operation", e.path().display()),
                    "ignis system prune",
                ));
            }
        }
        Ok(problems)
    }

    /// The host-resource part of `system prune`: kills supervisors of VMs
    /// without a record, releases what stopped VMs still hold, removes lock
    /// files of VMs that are gone. Returns how many things it repaired.
    pub(crate) fn prune_host_resources(&self) -> Result<u64, Error> {
        let before = self
            .system_check()?
            .iter()
            .filter(|p| !matches!(p.kind.as_str(), "temp" | "orphan-dir" | "orphan-volume"))
            .count();
        let rows = self
            .store
            .db()
            .read(|tx| tx.list_objects(crate::vm::KIND))?;
        let known: BTreeSet<String> = rows.iter().map(|r| r.id.clone()).collect();
        for (pid, id) in supervisors(self.store.root()) {
            if !known.contains(&id) {
                if let Some(p) = rustix::process::Pid::from_raw(pid) {
                    // Its VMM dies with it: its watcher (reaper.rs) kills it.
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                }
            }
        }
        let mut ids: BTreeSet<String> = known.clone();
        ids.extend(self.cni_attached());
        if let Ok(entries) = std::fs::read_dir(self.store.root().join("vms")) {
            ids.extend(
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
        for row in &rows {
            if let Ok(v) = crate::vm::parse(row).and_then(|r| self.reconcile(r)) {
                if v.state() != VmState::Running {
                    self.release_host_resources(&v);
                }
            }
        }
        for id in ids.difference(&known) {
            // A VM directory without a record: its resources by name.
            let dir = self.vm_dir(id);
            for d in ignis_vmm::drivers() {
                d.release(&dir);
            }
            if let Ok(h) = ignis_vmm::cgroup::Hierarchy::detect() {
                h.remove(id);
            }
            let tap = ignis_net::tap_name(id);
            if tap_exists(&tap) {
                let _ = self.net.delete_link(&tap);
            }
            for m in macvtaps_of(id) {
                let _ = self.net.delete_link(&m);
            }
            // CNI DEL of a VM whose rm or create did not finish.
            self.cni_detach(id);
        }
        if let Ok(entries) = std::fs::read_dir(self.store.root().join("locks")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(id) = name
                    .strip_prefix(&format!("{}-", crate::vm::SUPERVISOR_LOCK))
                    .and_then(|n| n.strip_suffix(".lock"))
                {
                    if !known.contains(id) {
                        self.store
                            .remove_object_lock(crate::vm::SUPERVISOR_LOCK, id);
                    }
                }
            }
        }
        Ok(before as u64)
    }
}
