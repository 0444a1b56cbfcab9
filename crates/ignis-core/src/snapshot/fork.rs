//! `ignis fork VM|SNAPSHOT -n N` and `ignis run --snapshot`: clones that
//! resume a snapshot, each with its own writable disk (a sparse copy), TAP,
//! agent socket and identity (hostname, address, MAC, RNG, clock set by the
//! agent after resume). Clones start concurrently.

use ignis_api::{SnapshotRecord, VmRecord};

use crate::timing::Timeline;
use crate::vm::CreateOptions;
use crate::{Error, ErrorKind, Ignis};

#[derive(Debug, Clone, Default)]
pub struct ForkOptions {
    /// How many clones (at least 1).
    pub count: u32,
    /// Clone names are `<prefix>-<n>` (default: the snapshot's name); with
    /// `count` 1 and `name`, exactly `name`.
    pub name_prefix: Option<String>,
    pub name: Option<String>,
    /// `--rm` for the clones.
    pub auto_remove: bool,
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Refuses NICs a clone cannot have: a fixed address on a macvtap (every
/// clone would claim it on the host's segment), a macvtap after eth0 (a
/// clone's new MAC is set in the guest for eth0 only, by the identity
/// hook, and a macvtap delivers only to its own MAC).
fn clonable_network(n: &ignis_api::NetworkSpec) -> Result<(), Error> {
    for (i, nic) in n.nics().iter().enumerate() {
        if nic.mode != ignis_api::NetworkMode::Macvtap {
            continue;
        }
        let why = if nic.ip.is_some() {
            "a fixed address on a macvtap: its clones would all claim it on the host's segment"
        } else if i > 0 {
            "a macvtap NIC after eth0: a clone could not take a MAC of its own there"
        } else {
            continue;
        };
        return Err(Error::new(
            ErrorKind::Invalid,
            format!("cannot fork a VM with {why}"),
        ));
    }
    Ok(())
}

impl Ignis {
    /// Forks `source` (a snapshot, or a running VM which is snapshotted
    /// first) into running clones.
    pub fn vm_fork(
        &self,
        source: &str,
        opts: &ForkOptions,
    ) -> Result<(SnapshotRecord, Vec<VmRecord>), Error> {
        self.vm_fork_timed(source, opts, crate::timing::now_ns())
    }

    /// [`Ignis::vm_fork`] with each clone's phases (`clone-disk`, `load`,
    /// `guest-ready`, `identity`, ...) on a timeline that starts at
    /// `origin_ns` (the command's start).
    pub fn vm_fork_timed(
        &self,
        source: &str,
        opts: &ForkOptions,
        origin_ns: u64,
    ) -> Result<(SnapshotRecord, Vec<VmRecord>), Error> {
        if opts.count == 0 || opts.count > 1000 {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!("-n {}: want 1 to 1000 clones", opts.count),
            ));
        }
        if opts.name.is_some() && opts.count != 1 {
            return Err(Error::new(
                ErrorKind::Invalid,
                "--name names one clone; use --name-prefix with -n",
            ));
        }
        // Clones are VMs: their names follow the VM name rule (`PREFIX-N`
        // too, so the prefix starts with a letter or digit).
        for (what, n) in [("name", &opts.name), ("name prefix", &opts.name_prefix)] {
            if let Some(n) = n {
                if !crate::vm::valid_name(&format!("{n}-1")) || !crate::vm::valid_name(n) {
                    return Err(Error::new(
                        ErrorKind::Invalid,
                        format!("invalid {what} '{n}': use letters, digits, '_', '.', '-', starting with a letter or digit"),
                    ));
                }
            }
        }
        let snap = match self.snapshot_inspect(source) {
            Ok(s) => s,
            Err(e) if e.kind == ErrorKind::NotFound => match self.find_vm(source) {
                Ok(vm) => {
                    clonable_network(&vm.spec.network)?;
                    self.vm_snapshot(source, None)?
                }
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!("no snapshot or VM named '{source}'"),
                    ))
                }
            },
            Err(e) => return Err(e),
        };
        clonable_network(&snap.spec.network)?;
        self.restore_preflight(&snap)?;
        let prefix = opts
            .name_prefix
            .clone()
            .unwrap_or_else(|| snap.name.clone());
        // PREFIX-1, PREFIX-2, ...: numbers already taken (an earlier fork
        // of the same snapshot) are skipped, so forking again adds clones.
        let taken: std::collections::BTreeSet<String> = self
            .store
            .db()
            .read(|tx| tx.list_objects(crate::vm::KIND))?
            .into_iter()
            .flat_map(|r| r.names)
            .collect();
        let names: Vec<String> = match &opts.name {
            Some(n) => vec![n.clone()],
            None => (1..)
                .map(|i| format!("{prefix}-{i}"))
                .filter(|n| !taken.contains(n))
                .take(opts.count as usize)
                .collect(),
        };
        let mut created = Vec::new();
        let mut timelines = Vec::new();
        for name in &names {
            let timeline = Timeline::starting_at(origin_ns);
            let rec = self.vm_create_timed(
                &CreateOptions {
                    image: snap.image_id.clone(),
                    name: Some(name.clone()),
                    backend: ignis_api::BackendRequest::Kind(snap.backend),
                    auto_remove: opts.auto_remove,
                    network: snap.spec.network.mode,
                    // The same NICs (the saved device state has them),
                    // with new addresses and MACs; the identity hook
                    // re-addresses the first.
                    cni: snap.spec.network.cni.clone(),
                    macvtap: snap
                        .spec
                        .network
                        .nics()
                        .first()
                        .and_then(crate::vm::Macvtap::for_clone),
                    extra_nics: snap
                        .spec
                        .network
                        .interfaces
                        .iter()
                        .map(|n| crate::vm::NicRequest {
                            mode: n.mode,
                            cni: n.cni.clone(),
                            macvtap: crate::vm::Macvtap::for_clone(n),
                        })
                        .collect(),
                    from_snapshot: Some(snap.id.clone()),
                    ..Default::default()
                },
                &timeline,
            );
            timelines.push(timeline);
            match rec {
                Ok(r) => created.push(r),
                Err(e) => {
                    for r in &created {
                        let _ = self.vm_remove(&r.id, true);
                    }
                    return Err(e);
                }
            }
        }
        crate::fault::point("fork:clones-created");
        // Resume every clone at once, then give each its own identity.
        let results: Vec<Result<VmRecord, Error>> = std::thread::scope(|scope| {
            let handles: Vec<_> = created
                .iter()
                .zip(&timelines)
                .map(|(r, t)| scope.spawn(move || self.start_clone(r, t)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::new(ErrorKind::Internal, "clone start panicked"))
                    })
                })
                .collect()
        });
        let mut ok = Vec::new();
        let mut failures = Vec::new();
        for (r, res) in created.iter().zip(results) {
            match res {
                Ok(v) => ok.push(v),
                Err(e) => {
                    failures.push(format!("{}: {e}", r.name));
                    let _ = self.vm_remove(&r.id, true);
                }
            }
        }
        if !failures.is_empty() {
            for v in &ok {
                let _ = self.vm_remove(&v.id, true);
            }
            return Err(Error::new(
                ErrorKind::Internal,
                format!("forking {} failed: {}", snap.name, failures.join("; ")),
            ));
        }
        Ok((snap, ok))
    }

    /// A snapshot resumes only on the VMM version that wrote it, with its
    /// kernel and image present and its blobs intact.
    pub(crate) fn restore_preflight(&self, snap: &SnapshotRecord) -> Result<(), Error> {
        let host = crate::vm::driver(snap.backend)?.version().ok_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                format!(
                    "snapshot {} needs {}, which is not installed here",
                    snap.name, snap.backend
                ),
            )
        })?;
        if host != snap.vmm_version {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!(
                    "snapshot {} was taken with '{}' but this host has '{}': a VMM restores only its own version's snapshots",
                    snap.name, snap.vmm_version, host
                ),
            ));
        }
        self.kernel_inspect(&snap.kernel_id).map_err(|_| {
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "snapshot {} needs kernel {}, which is gone",
                    snap.name,
                    ignis_api::short_id(&snap.kernel_id)
                ),
            )
        })?;
        self.snapshot_check(snap)
    }

    fn start_clone(&self, rec: &VmRecord, timeline: &Timeline) -> Result<VmRecord, Error> {
        let started = self.vm_start_timed(&rec.id, true, timeline)?;
        if started.status.health.is_none() {
            // No agent in this guest (the Firecracker test guest, the
            // fake): nothing to set.
            return Ok(started);
        }
        let identity = crate::timing::now_ns();
        let n = &started.spec.network;
        let clock_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        self.vm_configure(
            &rec.id,
            ignis_agent_proto::NetConfig {
                hostname: Some(rec.name.clone()),
                ip: match (&n.ip, n.prefix) {
                    (Some(ip), Some(p)) => Some(format!("{ip}/{p}")),
                    _ => None,
                },
                gateway: n.gateway.clone(),
                mac: n.mac.clone(),
                ip6: match (&n.ip6, n.prefix6) {
                    (Some(ip), Some(p)) => Some(format!("{ip}/{p}")),
                    _ => None,
                },
                gateway6: n.gateway6.clone(),
                entropy: Some(random_hex(64)),
                clock_ns: u64::try_from(clock_ns).ok(),
            },
        )?;
        timeline.record_since("identity", identity);
        let phases = timeline.phases();
        self.update_status(&rec.id, |s| crate::timing::merge(&mut s.timings, &phases))?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("VM {} was removed", rec.name)))
    }
}
