use std::collections::BTreeMap;
use std::process::Command;

use ignis_api::{CopyFileSpec, RunMode, VmRecord, VmSpec, VmState, VmStatus};
use ignis_vmm::{Accel, BackendKind};

use super::{backend_kind, new_id, new_name, valid_name, KIND};
use crate::timing::Timeline;
use crate::{Error, ErrorKind, Ignis};

/// `ignis create` / `run` options; `None` takes the default.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub image: String,
    pub name: Option<String>,
    pub cpus: Option<u32>,
    pub memory_mib: Option<u32>,
    pub disk_size: Option<u64>,
    pub kernel: Option<String>,
    pub kernel_args: Option<String>,
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// `host:vm` pairs.
    pub copy_files: Vec<String>,
    /// Replaces the image's Cmd (Docker semantics; Entrypoint is kept).
    pub command: Vec<String>,
    /// `auto`, `firecracker`, `qemu`.
    pub backend: String,
    pub auto_remove: bool,
    /// `bridge` (default) or `none`.
    pub network: String,
    /// A fixed address on the bridge (`--ip`).
    pub ip: Option<String>,
    /// A fixed MAC (`--mac`).
    pub mac: Option<String>,
    /// Published ports, Docker's `-p` syntax.
    pub ports: Vec<String>,
    /// `--ssh[=PUBKEY]`: `Some("")` generates a key pair; otherwise a
    /// public key file or an `ssh-...` key line.
    pub ssh: Option<String>,
    /// A fork: resume this snapshot (its resources, command, disk and
    /// memory) instead of booting; the options above that it fixes are
    /// ignored.
    pub from_snapshot: Option<String>,
}

pub const DEFAULT_CPUS: u32 = 1;
pub const DEFAULT_MEMORY_MIB: u32 = 512;
pub const DEFAULT_DISK_SIZE: u64 = 4 << 30;

impl Ignis {
    /// Chooses the backend for `requested` (`auto` follows the host).
    /// `linux_guest` is false for a kernel that is not Linux (the test
    /// guest): a KVM that cannot run Linux still runs it.
    pub(crate) fn choose_backend(
        &self,
        requested: &str,
        linux_guest: bool,
    ) -> Result<(BackendKind, Accel), Error> {
        let host = ignis_vmm::detect();
        let auto = host.choose();
        match requested {
            "" | "auto" => auto
                .kind
                .map(|k| (k, auto.accel))
                .ok_or_else(|| Error::new(ErrorKind::Unavailable, auto.reason)),
            "firecracker" => {
                let Some((_, v)) = &host.firecracker else {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        "firecracker not found: put firecracker >= 1.10 on PATH or set IGNIS_FIRECRACKER",
                    ));
                };
                if !ignis_vmm::detect::firecracker_supported(v) {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        format!("firecracker {v} is too old; ignis needs >= 1.10"),
                    ));
                }
                match &host.kvm {
                    ignis_vmm::detect::Kvm::Usable(_) => Ok((BackendKind::Firecracker, Accel::Kvm)),
                    ignis_vmm::detect::Kvm::CannotRunLinux(_) if !linux_guest => {
                        Ok((BackendKind::Firecracker, Accel::Kvm))
                    }
                    other => Err(Error::new(
                        ErrorKind::Unavailable,
                        format!("Firecracker needs KVM that can run Linux guests, and here it cannot ({other:?}); use --backend qemu"),
                    )),
                }
            }
            "qemu" => {
                if host.qemu.is_none() {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        "qemu-system-x86_64 not found: apt-get install qemu-system-x86",
                    ));
                }
                let accel = if matches!(host.kvm, ignis_vmm::detect::Kvm::Usable(_)) {
                    Accel::Kvm
                } else {
                    Accel::Tcg
                };
                Ok((BackendKind::Qemu, accel))
            }
            other => backend_kind(other).map(|k| (k, Accel::Tcg)),
        }
    }

    /// `ignis create`: records a VM and makes its writable disk. Nothing is
    /// left behind when any step fails.
    pub fn vm_create(&self, opts: &CreateOptions) -> Result<VmRecord, Error> {
        self.vm_create_timed(opts, &Timeline::new())
    }

    /// [`Ignis::vm_create`] recording its phases (`create`, `disk`) on
    /// `timeline`.
    pub fn vm_create_timed(
        &self,
        opts: &CreateOptions,
        timeline: &Timeline,
    ) -> Result<VmRecord, Error> {
        let _phase = timeline.phase("create");
        let resolve = timeline.phase("resolve");
        let invalid = |m: String| Error::new(ErrorKind::Invalid, m);
        let snap = opts
            .from_snapshot
            .as_deref()
            .map(|q| self.snapshot_inspect(q))
            .transpose()?;
        let (kind, accel) = match &snap {
            Some(s) => (
                super::backend_kind(&s.backend)?,
                if s.spec.accel == "kvm" {
                    Accel::Kvm
                } else {
                    Accel::Tcg
                },
            ),
            None => {
                // A kernel without a Linux version banner is not Linux.
                let linux_guest = opts
                    .kernel
                    .as_deref()
                    .and_then(|k| self.kernel_inspect(k).ok())
                    .is_none_or(|k| !k.version.is_empty());
                self.choose_backend(&opts.backend, linux_guest)?
            }
        };
        let cpus = snap
            .as_ref()
            .map(|s| s.spec.cpus)
            .or(opts.cpus)
            .unwrap_or(DEFAULT_CPUS);
        let max_cpus = if kind == BackendKind::Firecracker {
            32
        } else {
            64
        };
        if cpus == 0
            || cpus > max_cpus
            || (kind == BackendKind::Firecracker && cpus > 1 && cpus % 2 == 1)
        {
            return Err(invalid(format!(
                "--cpus {cpus} is out of range: {} allows 1{}..{max_cpus}",
                kind.as_str(),
                if kind == BackendKind::Firecracker {
                    " or an even number 2"
                } else {
                    ""
                }
            )));
        }
        let memory_mib = snap
            .as_ref()
            .map(|s| s.spec.memory_mib)
            .or(opts.memory_mib)
            .unwrap_or(DEFAULT_MEMORY_MIB);
        if !(64..=(1 << 20)).contains(&memory_mib) {
            return Err(invalid(format!(
                "--memory {memory_mib}MiB is out of range (64MiB to 1TiB)"
            )));
        }
        let disk_size = snap
            .as_ref()
            .map(|s| s.spec.disk_size)
            .or(opts.disk_size)
            .unwrap_or(DEFAULT_DISK_SIZE);
        if disk_size < (32 << 20) {
            return Err(invalid(format!(
                "--size {disk_size} bytes is too small for the writable disk (at least 32MB)"
            )));
        }
        for kv in &opts.env {
            if !kv.contains('=') || kv.starts_with('=') {
                return Err(invalid(format!("-e {kv}: want KEY=VALUE")));
            }
        }
        let mut copy_files = Vec::new();
        for c in &opts.copy_files {
            let Some((host, vm)) = c.split_once(':') else {
                return Err(invalid(format!("--copy-files {c}: want HOST_PATH:VM_PATH")));
            };
            if !vm.starts_with('/') {
                return Err(invalid(format!(
                    "--copy-files {c}: the VM path must be absolute"
                )));
            }
            let meta = std::fs::metadata(host).map_err(|e| {
                Error::with_source(
                    ErrorKind::Invalid,
                    format!("--copy-files: cannot read {host}"),
                    e,
                )
            })?;
            if !meta.is_file() {
                return Err(invalid(format!(
                    "--copy-files: {host} is not a regular file"
                )));
            }
            copy_files.push(CopyFileSpec {
                host: std::fs::canonicalize(host)
                    .unwrap_or(host.into())
                    .display()
                    .to_string(),
                vm: vm.to_string(),
            });
        }

        let ssh = match opts.ssh.as_deref() {
            None => None,
            Some(_) if snap.is_some() => {
                return Err(invalid(
                    "--ssh cannot change a fork: it has its snapshot's keys".into(),
                ))
            }
            Some(given) => Some(super::ssh::authorized_key(given)?),
        };

        let mut ports = Vec::new();
        for p in &opts.ports {
            ports.push(ignis_net::parse_port(p).map_err(|e| invalid(e.to_string()))?);
        }
        let bridge = match opts.network.as_str() {
            "" | "bridge" => true,
            "none" => false,
            other => return Err(invalid(format!("--network {other}: want bridge or none"))),
        };
        if !bridge && (!ports.is_empty() || opts.ip.is_some()) {
            return Err(invalid("-p and --ip need --network bridge".to_string()));
        }
        let requested_ip: Option<std::net::Ipv4Addr> = match &opts.ip {
            Some(ip) => Some(
                ip.parse()
                    .map_err(|_| invalid(format!("--ip {ip} is not an IPv4 address")))?,
            ),
            None => None,
        };
        if let Some(m) = &opts.mac {
            let ok = m.split(':').count() == 6
                && m.split(':')
                    .all(|b| b.len() == 2 && u8::from_str_radix(b, 16).is_ok());
            if !ok {
                return Err(invalid(format!(
                    "--mac {m}: want six hex bytes like 02:00:00:aa:bb:cc"
                )));
            }
        }
        if bridge {
            network_preflight(&ports)?;
        }

        let image = match self.image_inspect(&opts.image) {
            Ok(i) => i,
            Err(e) if snap.is_some() => return Err(e),
            Err(e)
                if e.kind == ErrorKind::NotFound
                    && crate::image::normalize(&opts.image).is_some() =>
            {
                self.image_pull(&opts.image)?
            }
            Err(e) => return Err(e),
        };
        let kernel_query = match &snap {
            Some(s) => s.kernel_id.as_str(),
            None => opts
                .kernel
                .as_deref()
                .unwrap_or(crate::kernel::DEFAULT_NAME),
        };
        let kernel = self.kernel_inspect(kernel_query).map_err(|e| {
            if e.kind == ErrorKind::NotFound && opts.kernel.is_none() {
                Error::new(
                    ErrorKind::NotFound,
                    "no default kernel: import one with `ignis kernel import apt:linux-image-amd64 --default`",
                )
            } else {
                e
            }
        })?;

        // What runs: an explicit command, else the image's init, else its
        // Entrypoint+Cmd. Neither is an error now, not a hang at boot.
        let cfg = &image.config;
        let (mode, command) = if let Some(s) = &snap {
            (s.spec.mode, s.spec.command.clone())
        } else if !opts.command.is_empty() {
            let mut c = cfg.entrypoint.clone().unwrap_or_default();
            c.extend(opts.command.iter().cloned());
            (RunMode::App, c)
        } else if image.has_init {
            (RunMode::System, vec![])
        } else {
            let mut c = cfg.entrypoint.clone().unwrap_or_default();
            c.extend(cfg.cmd.clone().unwrap_or_default());
            if c.is_empty() {
                return Err(invalid(format!(
                    "image {} has neither /sbin/init nor an Entrypoint/Cmd; give a command: ignis run {} COMMAND",
                    opts.image, opts.image
                )));
            }
            (RunMode::App, c)
        };
        let mut env = match &snap {
            Some(s) => s.spec.env.clone(),
            None => cfg.env.clone(),
        };
        for kv in &opts.env {
            let key = kv.split('=').next().unwrap_or("");
            env.retain(|e| e.split('=').next() != Some(key));
            env.push(kv.clone());
        }

        let id = new_id();
        if ssh.is_some() {
            copy_files.push(CopyFileSpec {
                host: self
                    .vm_dir(&id)
                    .join(super::ssh::AUTHORIZED_KEYS)
                    .display()
                    .to_string(),
                vm: "/root/.ssh/authorized_keys".into(),
            });
        }
        let name = match &opts.name {
            Some(n) if !valid_name(n) => {
                return Err(invalid(format!("invalid name '{n}': use letters, digits, '_', '.', '-', starting with a letter or digit")))
            }
            Some(n) => n.clone(),
            None => new_name(&id),
        };
        let record = VmRecord {
            id: id.clone(),
            name: name.clone(),
            image_id: image.id.clone(),
            image: snap
                .as_ref()
                .map(|s| s.image.clone())
                .unwrap_or_else(|| opts.image.clone()),
            kernel_id: kernel.id.clone(),
            created: crate::now(),
            spec: VmSpec {
                cpus,
                memory_mib,
                disk_size,
                backend: kind.as_str().to_string(),
                accel: match accel {
                    Accel::Kvm => "kvm".into(),
                    Accel::Tcg => "tcg".into(),
                },
                mode,
                command,
                env,
                workdir: match &snap {
                    Some(s) => s.spec.workdir.clone(),
                    None => cfg.working_dir.clone(),
                },
                user: match &snap {
                    Some(s) => s.spec.user.clone(),
                    None => cfg.user.clone(),
                },
                kernel_args: opts.kernel_args.clone(),
                labels: opts.labels.clone(),
                copy_files,
                auto_remove: opts.auto_remove,
                network: ignis_api::NetworkSpec {
                    mode: if bridge {
                        "bridge".into()
                    } else {
                        "none".into()
                    },
                    ports: ports
                        .iter()
                        .map(|p| ignis_api::PortSpec {
                            host_ip: p.host_ip.map(|i| i.to_string()),
                            host_port: p.host_port,
                            vm_port: p.vm_port,
                            proto: p.proto.as_str().to_string(),
                        })
                        .collect(),
                    ..Default::default()
                },
                ssh: match &snap {
                    Some(s) => s.spec.ssh.clone(),
                    None => ssh.as_ref().map(|(spec, _)| spec.clone()),
                },
                snapshot: snap.as_ref().map(|s| ignis_api::SnapshotOrigin {
                    id: s.id.clone(),
                    state: s.state.digest.clone(),
                    memory: s.memory.digest.clone(),
                    agent: s.agent,
                }),
            },
            status: VmStatus {
                state: Some(VmState::Created),
                restore_pending: snap.is_some(),
                ..Default::default()
            },
        };

        resolve.end();
        check_free_space(self.root(), disk_size)?;
        let _guard = self
            .store
            .operation_guard()
            .map_err(|e| Error::internal("take the operation lock", e))?;
        let dir = self.vm_dir(&id);
        std::fs::create_dir_all(&dir).map_err(|e| Error::internal("create the VM directory", e))?;
        let cleanup = DirGuard(Some(dir.clone()));
        let disk_phase = timeline.phase(if snap.is_some() { "clone-disk" } else { "disk" });
        match &snap {
            // A fork's disk is the snapshot's, copied (holes kept).
            Some(s) => {
                let blob = self
                    .store
                    .blobs()
                    .path(&s.disk.digest)
                    .map_err(|e| Error::internal("locate the snapshot disk", e))?;
                ignis_state::fsutil::clone_or_copy(&blob, &dir.join("data.ext4"))
                    .map_err(|e| disk_error("copy the snapshot's disk", e))?;
                // The source's generated SSH key, for `ignis ssh` into the fork.
                let key = self.vm_dir(&s.vm_id).join(super::ssh::PRIVATE_KEY);
                if key.is_file() {
                    let _ = std::fs::copy(&key, dir.join(super::ssh::PRIVATE_KEY));
                }
            }
            None => self.make_data_disk(&dir.join("data.ext4"), disk_size)?,
        }
        disk_phase.end();
        if let Some((spec, private)) = &ssh {
            super::ssh::write_keys(&dir, spec, private.as_deref())?;
        }
        crate::fault::point("vm:disk-made");
        let generated = opts.name.is_none();
        let mut record = record;
        record.status.timings = timeline.phases();
        let phase_record = timeline.phase("record");
        let record = self.store.db().tx(|tx| {
            let mut record = record;
            if tx.lookup_name(KIND, &record.name)?.is_some() {
                if !generated {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        format!("the name '{}' is already used by another VM; remove it or pick another --name", record.name),
                    ));
                }
                // A generated name collided: make it unique with the ID.
                record.name = format!("{}-{}", record.name, &id[..6]);
            }
            tx.insert_object(KIND, &id, record.created, "{}")?;
            if bridge {
                let subnet = self.subnet;
                if let Some(other) = tx.other_networks(&subnet.to_string())?.first() {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        format!("VMs on the bridge use subnet {other}; remove them before switching to {subnet}"),
                    ));
                }
                let taken = tx
                    .leased(&subnet.to_string())?
                    .iter()
                    .filter_map(|s| s.parse().ok())
                    .collect();
                let ip = subnet.allocate(&taken, requested_ip).map_err(|e| {
                    let kind = match e {
                        ignis_net::IpamError::Exhausted(_) => ErrorKind::Unavailable,
                        ignis_net::IpamError::Taken(_) => ErrorKind::Conflict,
                        _ => ErrorKind::Invalid,
                    };
                    Error::new(kind, e.to_string())
                })?;
                let mac = opts.mac.clone().unwrap_or_else(|| ignis_net::mac_for(&id));
                tx.add_lease(&subnet.to_string(), &ip.to_string(), &id, &mac)?;
                for p in &ports {
                    let host_ip = p.host_ip.map(|i| i.to_string()).unwrap_or_else(|| "0.0.0.0".into());
                    if let Some(owner) = tx.port_owner(&host_ip, p.host_port, p.proto.as_str())? {
                        return Err(Error::new(
                            ErrorKind::Conflict,
                            format!("port {}/{} is already published by VM {owner}", p.host_port, p.proto.as_str()),
                        ));
                    }
                    tx.add_port(&host_ip, p.host_port, p.proto.as_str(), &id, p.vm_port)?;
                }
                let n = &mut record.spec.network;
                n.ip = Some(ip.to_string());
                n.prefix = Some(subnet.prefix);
                n.gateway = Some(subnet.gateway().to_string());
                n.mac = Some(mac);
                n.bridge = Some(ignis_net::BRIDGE.to_string());
            }
            let json = serde_json::to_string(&record).expect("json");
            tx.update_record(KIND, &id, &json)?;
            tx.set_name(KIND, &record.name, &id)?;
            tx.add_use(KIND, &id, crate::image::KIND, &image.id)?;
            tx.add_use(KIND, &id, crate::kernel::KIND, &kernel.id)?;
            if let Some(o) = &record.spec.snapshot {
                // The fork maps the snapshot's memory: keep those blobs while it exists.
                tx.add_blob_ref(&o.state, KIND, &id)?;
                tx.add_blob_ref(&o.memory, KIND, &id)?;
            }
            tx.add_file(&dir.display().to_string(), KIND, &id)?;
            Ok::<_, Error>(record)
        })?;
        phase_record.end();
        cleanup.disarm();
        Ok(record)
    }
}

/// Bridge networking needs root (netlink, nftables) and free host ports.
fn network_preflight(ports: &[ignis_net::PortMapping]) -> Result<(), Error> {
    if !rustix::process::geteuid().is_root() {
        return Err(Error::new(
            ErrorKind::Unavailable,
            "bridge networking needs root (CAP_NET_ADMIN for the bridge, TAPs and nftables); run as root or use --network none",
        ));
    }
    if ignis_vmm::detect::find_in_path("nft").is_none() {
        return Err(Error::new(
            ErrorKind::Unavailable,
            "nft not found: apt-get install nftables (or use --network none)",
        ));
    }
    for p in ports {
        let ip = p.host_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
        let addr = std::net::SocketAddr::from((ip, p.host_port));
        let busy = match p.proto {
            ignis_net::Proto::Tcp => std::net::TcpListener::bind(addr).err(),
            ignis_net::Proto::Udp => std::net::UdpSocket::bind(addr).err(),
        };
        if let Some(e) = busy {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "port {}/{} is already in use on the host; pick another -p",
                        p.host_port,
                        p.proto.as_str()
                    ),
                ));
            }
            if e.kind() == std::io::ErrorKind::AddrNotAvailable {
                return Err(Error::new(
                    ErrorKind::Invalid,
                    format!("-p: {ip} is not an address of this host"),
                ));
            }
        }
    }
    Ok(())
}

/// The writable disk is sparse, but a VM that cannot write its first
/// megabytes fails in confusing ways: refuse below a floor of free space.
fn check_free_space(root: &std::path::Path, disk_size: u64) -> Result<(), Error> {
    const FLOOR: u64 = 256 << 20;
    let Ok(st) = rustix::fs::statvfs(root) else {
        return Ok(());
    };
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    if free < FLOOR.min(disk_size) {
        return Err(Error::new(
            ErrorKind::Unavailable,
            format!(
                "not enough disk space in {}: {} MiB free, a VM needs at least {} MiB; free some space or run `ignis system prune`",
                root.display(),
                free >> 20,
                FLOOR.min(disk_size) >> 20
            ),
        ));
    }
    Ok(())
}

/// Removes a directory on drop unless disarmed.
struct DirGuard(Option<std::path::PathBuf>);

impl DirGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn disk_error(what: &str, e: std::io::Error) -> Error {
    // ENOSPC, EFBIG: the host, not ignis.
    let kind = match e.raw_os_error() {
        Some(28 | 27) => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    };
    Error::with_source(kind, format!("cannot {what} (disk full?)"), e)
}

impl Ignis {
    /// The VM's writable disk: a copy of the cached empty ext4 of that size
    /// (`cache/data-<size>.ext4`, made once by mkfs.ext4), reflinked where
    /// the filesystem can, else its few data extents copied in the kernel:
    /// about a millisecond instead of a mkfs per VM. Every VM's disk has
    /// the same filesystem UUID; the guest finds it by label.
    fn make_data_disk(&self, path: &std::path::Path, size: u64) -> Result<(), Error> {
        let template = self.store.cache_dir().join(format!("data-{size}.ext4"));
        if !template.is_file() {
            let _lock = self
                .store
                .object_lock("data-template", &size.to_string())
                .map_err(|e| Error::internal("lock the disk template", e))?;
            if !template.is_file() {
                let tmp = template.with_extension(format!("tmp-{}", std::process::id()));
                let made = mkfs_data_disk(&tmp, size).and_then(|()| {
                    std::fs::File::open(&tmp)
                        .and_then(|f| f.sync_all())
                        .and_then(|()| std::fs::rename(&tmp, &template))
                        .and_then(|()| ignis_state::fsync_dir(&self.store.cache_dir()))
                        .map_err(|e| Error::internal("store the disk template", e))
                });
                if let Err(e) = made {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
            }
        }
        ignis_state::fsutil::clone_or_copy(&template, path)
            .map(drop)
            .map_err(|e| disk_error(&format!("make a {size}-byte writable disk"), e))
    }
}

/// A sparse ext4 file labelled `ignis-data` (the guest init finds it by
/// label), with a journal so a crash of the guest never corrupts it.
fn mkfs_data_disk(path: &std::path::Path, size: u64) -> Result<(), Error> {
    let f =
        std::fs::File::create(path).map_err(|e| Error::internal("create the writable disk", e))?;
    f.set_len(size).map_err(|e| {
        Error::with_source(
            ErrorKind::Unavailable,
            format!("cannot allocate a {size}-byte writable disk (disk full?)"),
            e,
        )
    })?;
    drop(f);
    let out = Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-L",
            "ignis-data",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1",
        ])
        .arg(path)
        .output()
        .map_err(|e| {
            Error::with_source(
                ErrorKind::Unavailable,
                "mkfs.ext4 not found; apt-get install e2fsprogs",
                e,
            )
        })?;
    if !out.status.success() {
        return Err(Error::new(
            ErrorKind::Internal,
            format!(
                "mkfs.ext4 failed for the writable disk: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(())
}
