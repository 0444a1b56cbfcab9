use std::process::Command;

use ignis_api::{Accel, BackendKind, CopyFileSpec, RunMode, VmRecord, VmSpec, VmState, VmStatus};

pub use super::options::CreateOptions;
use super::options::{Field, SshKey};
use super::{new_id, new_name, KIND};
use crate::timing::Timeline;
use crate::{Error, ErrorKind, Ignis};
use ignis_api::NetworkMode;

pub const DEFAULT_CPUS: u32 = 1;
pub const DEFAULT_MEMORY_MIB: u32 = 512;
pub const DEFAULT_DISK_SIZE: u64 = 4 << 30;

/// What the VM runs: an explicit command (after the image's Entrypoint),
/// else the image's init, else its Entrypoint+Cmd; neither is an error
/// now, not a hang at boot.
pub(crate) fn workload(
    entrypoint: Option<&[String]>,
    cmd: Option<&[String]>,
    has_init: bool,
    command: &[String],
) -> Option<(RunMode, Vec<String>)> {
    let entry = entrypoint.unwrap_or_default().to_vec();
    if !command.is_empty() {
        return Some((RunMode::App, [entry, command.to_vec()].concat()));
    }
    if has_init {
        return Some((RunMode::System, vec![]));
    }
    let c = [entry, cmd.unwrap_or_default().to_vec()].concat();
    (!c.is_empty()).then_some((RunMode::App, c))
}

/// The image's environment with `overrides` (`KEY=VALUE`) replacing
/// variables of the same name.
pub(crate) fn merge_env(mut env: Vec<String>, overrides: &[String]) -> Vec<String> {
    for kv in overrides {
        let key = kv.split('=').next().unwrap_or("");
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    env
}

impl Ignis {
    /// The backend and acceleration for a new VM; `linux` is false for a
    /// kernel that is not Linux (the test guest): a KVM that cannot run
    /// Linux still runs it.
    pub(crate) fn choose_backend(
        &self,
        requested: ignis_api::BackendRequest,
        linux: bool,
    ) -> Result<(BackendKind, Accel), Error> {
        ignis_vmm::choose(requested, &ignis_vmm::detect(), linux)
            .map_err(|e| Error::new(ErrorKind::Unavailable, e.message).about(Field::Backend))
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
        let invalid = |f: Field, m: String| Error::new(ErrorKind::Invalid, m).about(f);
        let snap = opts
            .from_snapshot
            .as_deref()
            .map(|q| self.snapshot_inspect(q))
            .transpose()?;
        // A kernel named by its source but not here is imported (an Ignite
        // kernel image, `apt:...`, a file), as an image is pulled; a bare
        // name that matches nothing is not found.
        let kernel_query = match &snap {
            Some(s) => s.kernel_id.clone(),
            None => match &opts.kernel {
                Some(k) => {
                    let source = k.starts_with("apt:") || k.contains('/');
                    if source
                        && matches!(self.kernel_inspect(k), Err(e) if e.kind == ErrorKind::NotFound)
                    {
                        self.kernel_import(k, None, false)
                            .map_err(|e| e.about(Field::Kernel))?;
                    }
                    k.clone()
                }
                None => crate::kernel::DEFAULT_NAME.to_string(),
            },
        };
        let kernel = self.kernel_inspect(&kernel_query).map_err(|e| {
            if e.kind == ErrorKind::NotFound && opts.kernel.is_none() {
                Error::new(
                    ErrorKind::NotFound,
                    "no default kernel: import one with `ignis kernel import apt:linux-image-amd64 --default`",
                )
            } else {
                e.about(Field::Kernel)
            }
        })?;
        let (kind, accel) = match &snap {
            Some(s) => (s.backend, s.spec.accel),
            // A kernel without a Linux version banner is not Linux.
            None => self.choose_backend(opts.backend, !kernel.version.is_empty())?,
        };
        let driver = super::driver(kind)?;
        let cpus = snap
            .as_ref()
            .map(|s| s.spec.cpus)
            .or(opts.cpus)
            .unwrap_or(DEFAULT_CPUS);
        driver
            .capabilities(accel)
            .check_vcpus(kind, cpus)
            .map_err(|e| invalid(Field::Cpus, e.to_string()))?;
        let memory_mib = snap
            .as_ref()
            .map(|s| s.spec.memory_mib)
            .or(opts.memory_mib)
            .unwrap_or(DEFAULT_MEMORY_MIB);
        let disk_size = snap
            .as_ref()
            .map(|s| s.spec.disk_size)
            .or(opts.disk_size)
            .unwrap_or(DEFAULT_DISK_SIZE);
        let mut copy_files = Vec::new();
        for c in &opts.copy_files {
            let host = &c.host;
            let meta = std::fs::metadata(host).map_err(|e| {
                Error::with_source(
                    ErrorKind::Invalid,
                    format!("cannot read {}", host.display()),
                    e,
                )
                .about(Field::CopyFiles)
            })?;
            if !meta.is_file() && !meta.is_dir() {
                return Err(invalid(
                    Field::CopyFiles,
                    format!("{} is neither a file nor a directory", host.display()),
                ));
            }
            copy_files.push(CopyFileSpec {
                host: std::fs::canonicalize(host)
                    .unwrap_or(host.clone())
                    .display()
                    .to_string(),
                vm: c.vm.clone(),
            });
        }

        let ssh = match &opts.ssh {
            None => None,
            Some(_) if snap.is_some() => {
                return Err(invalid(
                    Field::Ssh,
                    "a fork has its snapshot's keys; it cannot get others".into(),
                ))
            }
            Some(SshKey::Generate) => Some(super::ssh::authorized_key("")?),
            Some(SshKey::Given(k)) => {
                Some(super::ssh::authorized_key(k).map_err(|e| e.about(Field::Ssh))?)
            }
        };
        if snap.is_some() && !opts.volumes.is_empty() {
            return Err(invalid(
                Field::Volumes,
                "a fork resumes its snapshot's devices: it cannot get volumes".into(),
            ));
        }
        let volume_plan = self.volumes_plan(&opts.volumes)?;
        let bridge = opts.network == NetworkMode::Bridge
            || opts
                .extra_nics
                .iter()
                .any(|n| n.mode == NetworkMode::Bridge);
        let cni = opts.network == NetworkMode::Cni
            || opts.extra_nics.iter().any(|n| n.mode == NetworkMode::Cni);
        if bridge {
            network_preflight(&opts.ports, self.subnet6.is_some())?;
        }
        // Without a bridge NIC, ports go to the first CNI NIC's portmap.
        let cni_ports = super::cni::ports_nic(
            std::iter::once(opts.network).chain(opts.extra_nics.iter().map(|n| n.mode)),
        )
        .filter(|_| !opts.ports.is_empty());
        if let Some(i) = cni_ports {
            let network = match i {
                0 => opts.cni.as_deref(),
                i => opts.extra_nics[i - 1].cni.as_deref(),
            };
            self.cni_ports_preflight(network, &opts.ports, &opts.cni_dirs)?;
            ports_free(&opts.ports)?;
            // Before ADD, whose rules would take the port (checked again
            // in the record's transaction).
            self.store.db().tx(|tx| ports_unclaimed(tx, &opts.ports))?;
        }
        let macvtaps: Vec<&super::options::Macvtap> = opts
            .macvtap
            .iter()
            .chain(opts.extra_nics.iter().filter_map(|n| n.macvtap.as_ref()))
            .collect();
        if !macvtaps.is_empty() {
            if !driver.capabilities(accel).tap_fd {
                return Err(invalid(
                    Field::Network,
                    format!("the {kind} backend opens TAPs by name and cannot use a macvtap; use --backend qemu, or a CNI network with the macvlan plugin"),
                ));
            }
            if !rustix::process::geteuid().is_root() {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    "a macvtap NIC needs root (CAP_NET_ADMIN); run as root or use the network none",
                )
                .about(Field::Network));
            }
            for m in &macvtaps {
                match self.net.link_exists(&m.link) {
                    Ok(true) => {}
                    Ok(false) => {
                        return Err(invalid(
                            Field::Network,
                            format!(
                                "macvtap:{}: the host has no interface {} (see ip link)",
                                m.link, m.link
                            ),
                        ))
                    }
                    Err(e) => {
                        return Err(Error::wrap(ErrorKind::Unavailable, e).about(Field::Network))
                    }
                }
            }
        }
        if bridge && cni && !driver.capabilities(accel).host_tap_from_netns {
            return Err(invalid(
                Field::Network,
                format!("the {kind} backend runs a VM in one network namespace: a VM on a CNI network cannot also be on the bridge (use another backend, or cni networks only)"),
            ));
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
            Err(e) => return Err(e.about(Field::Image)),
        };

        let cfg = &image.config;
        let (mode, command) = match &snap {
            Some(s) => (s.spec.mode, s.spec.command.clone()),
            None => workload(
                cfg.entrypoint.as_deref(),
                cfg.cmd.as_deref(),
                image.has_init,
                &opts.command,
            )
            .ok_or_else(|| {
                invalid(
                    Field::Image,
                    format!(
                        "image {} has neither /sbin/init nor an Entrypoint/Cmd; give a command: ignis run {} COMMAND",
                        opts.image, opts.image
                    ),
                )
            })?,
        };
        let env = merge_env(
            match &snap {
                Some(s) => s.spec.env.clone(),
                None => cfg.env.clone(),
            },
            &opts.env,
        );

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
                backend: kind,
                accel,
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
                restart: opts.restart,
                stop_timeout: opts.stop_timeout,
                // A fork keeps its snapshot's cloud-init data (and so its
                // seed disk, which the saved device state has), with a
                // seed of its own: new instance-id, name and NICs.
                user_data: match &snap {
                    Some(s) => s.spec.user_data.clone(),
                    None => opts.user_data.clone(),
                },
                meta_data: match &snap {
                    Some(s) => s.spec.meta_data.clone(),
                    None => opts.meta_data.clone(),
                },
                network: ignis_api::NetworkSpec {
                    mode: opts.network,
                    cni: opts.cni.clone(),
                    interfaces: opts
                        .extra_nics
                        .iter()
                        .enumerate()
                        .map(|(i, n)| {
                            nic_spec(&id, i + 1, n.mode, n.cni.clone(), n.macvtap.as_ref())
                        })
                        .collect(),
                    ports: opts
                        .ports
                        .iter()
                        .map(|p| ignis_api::PortSpec {
                            host_ip: p.host_ip.map(|i| i.to_string()),
                            host_port: p.host_port,
                            vm_port: p.vm_port,
                            proto: p.proto.as_str().to_string(),
                        })
                        .collect(),
                    dns: opts.dns.clone(),
                    dns_search: opts.dns_search.clone(),
                    add_hosts: opts.add_hosts.clone(),
                    ..Default::default()
                },
                ssh: match &snap {
                    Some(s) => s.spec.ssh.clone(),
                    None => ssh.as_ref().map(|(spec, _)| spec.clone()),
                },
                // Made further down, once everything else is checked.
                volumes: vec![],
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
        let ports = &opts.ports;
        let requested_ip = opts.ip;
        let requested_ip6 = opts.ip6;
        if requested_ip6.is_some() && self.subnet6.is_none() {
            return Err(Error::new(
                ErrorKind::Invalid,
                "IPv6 is off on the bridge network: turn it on with --subnet6 auto (or a prefix), IGNIS_SUBNET6",
            )
            .about(Field::Ip6));
        }
        // (Ports on a CNI network are portmap's: checked above.)
        if let Some(p) = ports.iter().filter(|_| bridge).find(|p| {
            p.proto == ignis_net::Proto::Udp
                && p.host_ip.is_some_and(|i| i.is_ipv6() && i.is_loopback())
        }) {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!("{p}: UDP on [::1] cannot be published (the kernel does not NAT IPv6 loopback traffic; ignis relays TCP only); publish on [::] or a host address"),
            )
            .about(Field::Ports));
        }
        if bridge && self.subnet6.is_none() {
            if let Some(p) = ports
                .iter()
                .find(|p| p.host_ip.is_some_and(|i| i.is_ipv6()))
            {
                return Err(Error::new(
                    ErrorKind::Invalid,
                    format!("{p}: IPv6 is off on the bridge network: turn it on with --subnet6 auto (or a prefix), IGNIS_SUBNET6"),
                )
                .about(Field::Ports));
            }
        }

        resolve.end();
        check_free_space(self.root(), disk_size)?;
        let _guard = self.operation_guard()?;
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
        if opts.network == NetworkMode::Macvtap {
            let mut nics = record.spec.network.nics();
            nics[0] = nic_spec(&id, 0, NetworkMode::Macvtap, None, opts.macvtap.as_ref());
            record.spec.network.set_nics(nics);
        }
        let (mounts, made) = self.volumes_make(volume_plan, &id, opts.volume_size)?;
        let volume_guard = VolumeGuard(self, made);
        record.spec.volumes = mounts;
        // CNI ADD: the address is the network's IPAM's, from now on.
        let mut nics = record.spec.network.nics();
        self.cni_attach(&id, &mut nics, &opts.ports, &opts.cni_dirs)?;
        record.spec.network.set_nics(nics);
        let cni_guard = CniGuard(self, Some(id.clone()));
        crate::fault::point("vm:cni-attached");
        record.status.timings = timeline.phases();
        let phase_record = timeline.phase("record");
        let record = self.store.db().tx(|tx| {
            let mut record = record;
            if tx.lookup_name(KIND, &record.name)?.is_some() {
                if !generated {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        format!("'{}' is already used by another VM; remove it or pick another name", record.name),
                    ).about(Field::Name));
                }
                // A generated name collided: make it unique with the ID.
                record.name = format!("{}-{}", record.name, &id[..6]);
            }
            tx.insert_object(KIND, &id, record.created, "{}")?;
            if bridge {
                let subnet = self.subnet;
                // IPv4 and IPv6 leases live side by side (the IPv6 prefix
                // has colons): each family is checked against its own.
                let others = tx.other_networks(&subnet.to_string())?;
                if let Some(other) = others.iter().find(|n| !n.contains(':')) {
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
                    Error::new(kind, e.to_string()).about(Field::Ip)
                })?;
                let mac = opts.mac.clone().unwrap_or_else(|| ignis_net::mac_for(&id));
                tx.add_lease(&subnet.to_string(), &ip.to_string(), &id, &mac)?;
                let ip6 = match self.subnet6 {
                    Some(s6) => {
                        if let Some(other) = others.iter().find(|n| n.contains(':') && **n != s6.to_string()) {
                            return Err(Error::new(
                                ErrorKind::Conflict,
                                format!("VMs on the bridge use IPv6 prefix {other}; remove them before switching to {s6}"),
                            ));
                        }
                        let taken = tx
                            .leased(&s6.to_string())?
                            .iter()
                            .filter_map(|s| s.parse().ok())
                            .collect();
                        let ip6 = s6.allocate(&taken, requested_ip6).map_err(|e| {
                            let kind = match e {
                                ignis_net::Ipam6Error::Exhausted(_) => ErrorKind::Unavailable,
                                ignis_net::Ipam6Error::Taken(_) => ErrorKind::Conflict,
                                _ => ErrorKind::Invalid,
                            };
                            Error::new(kind, e.to_string()).about(Field::Ip6)
                        })?;
                        tx.add_lease(&s6.to_string(), &ip6.to_string(), &id, &mac)?;
                        Some((ip6, s6))
                    }
                    None => None,
                };
                publish_ports(tx, ports, &id)?;
                let mut nics = record.spec.network.nics();
                if let Some(n) = nics.iter_mut().find(|n| n.mode == NetworkMode::Bridge) {
                    n.ip = Some(ip.to_string());
                    n.prefix = Some(subnet.prefix);
                    n.gateway = Some(subnet.gateway().to_string());
                    n.mac = Some(mac);
                    if let Some((ip6, s6)) = ip6 {
                        n.ip6 = Some(ip6.to_string());
                        n.prefix6 = Some(s6.prefix);
                        n.gateway6 = Some(s6.gateway().to_string());
                    }
                }
                let n = &mut record.spec.network;
                n.set_nics(nics);
                n.bridge = Some(ignis_net::BRIDGE.to_string());
            }
            if cni_ports.is_some() {
                // Rows for conflicts only: without a lease, no bridge rule.
                publish_ports(tx, ports, &id)?;
            }
            let json = serde_json::to_string(&record).expect("json");
            tx.update_record(KIND, &id, &json)?;
            tx.set_name(KIND, &record.name, &id)?;
            tx.add_use(KIND, &id, crate::image::KIND, &image.id)?;
            tx.add_use(KIND, &id, crate::kernel::KIND, &kernel.id)?;
            for v in &record.spec.volumes {
                if let Some(vid) = &v.volume_id {
                    tx.add_use(KIND, &id, crate::volume::KIND, vid)?;
                }
            }
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
        cni_guard.disarm();
        volume_guard.disarm();
        Ok(record)
    }
}

/// The VM's published ports in the DB, refused when another VM has one.
fn publish_ports(
    tx: &ignis_state::Tx<'_>,
    ports: &[ignis_net::PortMapping],
    id: &str,
) -> Result<(), Error> {
    ports_unclaimed(tx, ports)?;
    for p in ports {
        let host_ip = host_ip(p);
        tx.add_port(&host_ip, p.host_port, p.proto.as_str(), id, p.vm_port)?;
    }
    Ok(())
}

fn host_ip(p: &ignis_net::PortMapping) -> String {
    p.host_ip
        .map(|i| i.to_string())
        .unwrap_or_else(|| "0.0.0.0".into())
}

/// No other VM has published one of the ports.
fn ports_unclaimed(
    tx: &ignis_state::Tx<'_>,
    ports: &[ignis_net::PortMapping],
) -> Result<(), Error> {
    for p in ports {
        if let Some(owner) = tx.port_owner(&host_ip(p), p.host_port, p.proto.as_str())? {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "port {}/{} is already published by VM {owner}",
                    p.host_port,
                    p.proto.as_str()
                ),
            )
            .about(Field::Ports));
        }
    }
    Ok(())
}

/// A NIC after the first as recorded at create; a macvtap's address,
/// gateway and MAC (given, or one of its own) are final here.
fn nic_spec(
    id: &str,
    index: usize,
    mode: NetworkMode,
    cni: Option<String>,
    macvtap: Option<&super::options::Macvtap>,
) -> ignis_api::NicSpec {
    let mut n = ignis_api::NicSpec {
        cni,
        ..ignis_api::NicSpec::new(mode)
    };
    if let Some(m) = macvtap {
        n.link = Some(m.link.clone());
        n.ip = m.ip.map(|(a, _)| a.to_string());
        n.prefix = m.ip.map(|(_, p)| p);
        n.gateway = m.gateway.map(|g| g.to_string());
        n.mac = Some(
            m.mac
                .clone()
                .unwrap_or_else(|| ignis_net::macvtap::mac_for(id, index)),
        );
    }
    n
}

/// Bridge networking needs root (netlink, nftables), free host ports and,
/// with `ipv6`, a host with IPv6 on.
fn network_preflight(ports: &[ignis_net::PortMapping], ipv6: bool) -> Result<(), Error> {
    if !rustix::process::geteuid().is_root() {
        return Err(Error::new(
            ErrorKind::Unavailable,
            "bridge networking needs root (CAP_NET_ADMIN for the bridge, TAPs and nftables); run as root or use the network none",
        ).about(Field::Network));
    }
    if ignis_vmm::detect::find_in_path("nft").is_none() {
        return Err(Error::new(
            ErrorKind::Unavailable,
            "nft not found: apt-get install nftables (or use the network none)",
        )
        .about(Field::Network));
    }
    if ipv6 {
        ignis_net::ipv6_available().map_err(|e| {
            Error::new(
                ErrorKind::Unavailable,
                format!("IPv6 on the bridge (--subnet6) is not possible on this host: {e}; run without --subnet6 (IPv4 only)"),
            )
        })?;
    }
    ports_free(ports)
}

/// The host ports are free (in the namespace ignis runs in, where the
/// bridge's nftables rules and portmap's iptables rules both are).
fn ports_free(ports: &[ignis_net::PortMapping]) -> Result<(), Error> {
    for p in ports {
        let ip = p
            .host_ip
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
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
                        "port {}/{} is already in use on the host; pick another",
                        p.host_port,
                        p.proto.as_str()
                    ),
                )
                .about(Field::Ports));
            }
            if e.kind() == std::io::ErrorKind::AddrNotAvailable {
                return Err(Error::new(
                    ErrorKind::Invalid,
                    format!("{ip} is not an address of this host"),
                )
                .about(Field::Ports));
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
/// Undoes a new VM's CNI attachments unless its record was committed.
struct CniGuard<'a>(&'a Ignis, Option<String>);

impl CniGuard<'_> {
    fn disarm(mut self) {
        self.1 = None;
    }
}

impl Drop for CniGuard<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.1.take() {
            self.0.cni_detach(&id);
        }
    }
}

/// Removes the volumes made for a new VM unless its record was committed.
struct VolumeGuard<'a>(&'a Ignis, Vec<ignis_api::VolumeRecord>);

impl VolumeGuard<'_> {
    fn disarm(mut self) {
        self.1.clear();
    }
}

impl Drop for VolumeGuard<'_> {
    fn drop(&mut self) {
        self.0.volumes_undo(&self.1);
    }
}

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
                let made = mkfs_ext4(&tmp, size, "ignis-data").and_then(|()| {
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

/// A sparse ext4 file labelled `label` (the guest init finds the writable
/// disk by its label `ignis-data`), with a journal so a crash of the guest
/// never corrupts it.
pub(crate) fn mkfs_ext4(path: &std::path::Path, size: u64, label: &str) -> Result<(), Error> {
    let f = std::fs::File::create(path).map_err(|e| Error::internal("create a disk file", e))?;
    f.set_len(size).map_err(|e| {
        Error::with_source(
            ErrorKind::Unavailable,
            format!("cannot allocate a {size}-byte disk (disk full?)"),
            e,
        )
    })?;
    drop(f);
    let out = Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-L",
            label,
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
                "mkfs.ext4 failed for {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_is_the_command_or_the_init_or_the_image_default() {
        let ep = ["/entry".to_string()];
        let cmd = ["serve".to_string()];
        let given = ["sh".to_string()];
        assert_eq!(
            workload(Some(&ep), Some(&cmd), true, &given),
            Some((RunMode::App, vec!["/entry".into(), "sh".into()])),
            "a command replaces Cmd, keeps the Entrypoint, beats the init"
        );
        assert_eq!(
            workload(Some(&ep), Some(&cmd), true, &[]),
            Some((RunMode::System, vec![]))
        );
        assert_eq!(
            workload(Some(&ep), Some(&cmd), false, &[]),
            Some((RunMode::App, vec!["/entry".into(), "serve".into()]))
        );
        assert_eq!(workload(None, None, false, &[]), None, "nothing to run");
    }

    #[test]
    fn given_variables_replace_the_images() {
        let env = merge_env(
            vec!["PATH=/bin".into(), "A=1".into()],
            &["A=2".into(), "B=3".into()],
        );
        assert_eq!(env, ["PATH=/bin", "A=2", "B=3"]);
    }
}
