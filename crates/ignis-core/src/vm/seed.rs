//! The cloud-init NoCloud seed of a VM (`--user-data`, `--meta-data`):
//! a small vfat disk labelled `cidata` holding `user-data` (as given),
//! `meta-data` (`instance-id` = the VM ID, `local-hostname` = the VM name,
//! `public-keys` from `--ssh`, the user's meta-data merged over them) and
//! `network-config` (version 2: each NIC by MAC, the addresses, gateway and
//! DNS ignis leased; none without NICs). Written at every boot into
//! `vms/<id>/seed.img` and attached as the last virtio-blk disk, after the
//! volumes (so the guest init's positional volume lookup on Firecracker is
//! unchanged); only for a VM that asked for it.
//!
//! The vfat image is written in memory by the `fatfs` crate (no mkfs, no
//! loop mount, no root needed).

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use ignis_api::VmRecord;
use serde_yaml::{Mapping, Value};

/// The seed's file name in the VM's directory.
pub const SEED_FILE: &str = "seed.img";
/// Its virtio-blk serial (where the VMM sets one): not `ignis-volN`, so
/// the guest init never takes it for a volume.
pub(crate) const SEED_SERIAL: &str = "ignis-seed";
/// The filesystem label cloud-init's NoCloud datasource looks for.
pub const SEED_LABEL: &str = "cidata";

/// `--meta-data` as a mapping: empty text is an empty mapping; anything
/// else must be a YAML mapping (what cloud-init reads meta-data as).
pub fn parse_meta_data(text: &str) -> Result<Mapping, String> {
    if text.trim().is_empty() {
        return Ok(Mapping::new());
    }
    match serde_yaml::from_str::<Value>(text) {
        Ok(Value::Mapping(m)) => Ok(m),
        Ok(Value::Null) => Ok(Mapping::new()),
        Ok(_) => Err("not a YAML mapping (want KEY: VALUE lines)".into()),
        Err(e) => Err(format!("not valid YAML: {e}")),
    }
}

/// The seed's `meta-data`: ignis's keys, then the user's over them (a key
/// the user sets wins, `public-keys` are added to ours).
pub fn meta_data(rec: &VmRecord) -> String {
    let mut m = Mapping::new();
    m.insert("instance-id".into(), rec.id.clone().into());
    m.insert("local-hostname".into(), rec.name.clone().into());
    let mut keys: Vec<Value> = rec
        .spec
        .ssh
        .iter()
        .map(|s| Value::String(s.authorized_key.trim().to_string()))
        .collect();
    // Checked at create; a record edited since falls back to ours.
    let user = rec
        .spec
        .meta_data
        .as_deref()
        .and_then(|t| parse_meta_data(t).ok())
        .unwrap_or_default();
    for (k, v) in user {
        if k.as_str() == Some("public-keys") {
            match v {
                Value::Sequence(s) => keys.extend(s),
                Value::Mapping(map) => keys.extend(map.into_iter().map(|(_, v)| v)),
                other => keys.push(other),
            }
            continue;
        }
        m.insert(k, v);
    }
    if !keys.is_empty() {
        m.insert("public-keys".into(), Value::Sequence(keys));
    }
    serde_yaml::to_string(&Value::Mapping(m)).unwrap_or_default()
}

/// The seed's `network-config` (version 2), one `ethN` per NIC in order,
/// matched by MAC; the first NIC with a gateway gets the default route and
/// the VM's DNS; each later NIC with a gateway a default route in its own
/// routing table (`routes` with `table:`) and a `routing-policy` rule from
/// its address, the tables the guest init uses. `None` without NICs
/// (`--network none`).
pub fn network_config(rec: &VmRecord, dns: &ignis_net::dns::Plan) -> Option<String> {
    let nics = rec.spec.network.nics();
    if nics.is_empty() {
        return None;
    }
    let mut eths = Mapping::new();
    let mut routed = false;
    for (i, n) in nics.iter().enumerate() {
        let name = format!("eth{i}");
        let mut e = Mapping::new();
        if let Some(mac) = &n.mac {
            let mut m = Mapping::new();
            m.insert("macaddress".into(), mac.to_ascii_lowercase().into());
            e.insert("match".into(), Value::Mapping(m));
            e.insert("set-name".into(), name.clone().into());
        }
        match (&n.ip, n.prefix) {
            (Some(ip), Some(prefix)) => {
                e.insert("dhcp4".into(), false.into());
                e.insert(
                    "addresses".into(),
                    Value::Sequence(vec![format!("{ip}/{prefix}").into()]),
                );
                let mut routes = Vec::new();
                if let (Some(gw), false) = (&n.gateway, routed) {
                    routed = true;
                    routes.push(route("0.0.0.0/0", gw, None));
                    let mut ns = Mapping::new();
                    if !dns.nameservers.is_empty() {
                        ns.insert(
                            "addresses".into(),
                            Value::Sequence(
                                dns.nameservers
                                    .iter()
                                    .map(|a| a.to_string().into())
                                    .collect(),
                            ),
                        );
                    }
                    if !dns.search.is_empty() {
                        ns.insert(
                            "search".into(),
                            Value::Sequence(dns.search.iter().map(|s| s.clone().into()).collect()),
                        );
                    }
                    if !ns.is_empty() {
                        e.insert("nameservers".into(), Value::Mapping(ns));
                    }
                }
                // A NIC after the first is source-routed, as the guest
                // init does it: the default route via its gateway in its
                // own table, and a rule from its address. netplan applies
                // both; cloud-init's other renderers drop a v2 route's
                // `table` (keeping to/via/metric) and ignore
                // `routing-policy`: there the table's default route
                // becomes a main-table one, which [`TABLE_METRIC`] keeps
                // behind the first NIC's. No on-link subnet route in the
                // table (the guest init's has one): a route without `via`
                // crashes the eni renderer of cloud-init 22.4 (Debian 12),
                // which then renders no network at all.
                if let (Some(gw), true) = (&n.gateway, i > 0) {
                    let table = ignis_guest_config::nic_table(i);
                    let mut r = route("0.0.0.0/0", gw, Some(table));
                    if let Value::Mapping(m) = &mut r {
                        m.insert("metric".into(), TABLE_METRIC.into());
                    }
                    routes.push(r);
                    let mut p = Mapping::new();
                    p.insert("from".into(), ip.clone().into());
                    p.insert("table".into(), table.into());
                    e.insert(
                        "routing-policy".into(),
                        Value::Sequence(vec![Value::Mapping(p)]),
                    );
                }
                if !routes.is_empty() {
                    e.insert("routes".into(), Value::Sequence(routes));
                }
            }
            // No address from ignis (a CNI result without one): the
            // guest asks DHCP, as cloud-init's fallback would.
            _ => {
                e.insert("dhcp4".into(), true.into());
            }
        }
        eths.insert(name.into(), Value::Mapping(e));
    }
    let mut top = Mapping::new();
    top.insert("version".into(), 2.into());
    top.insert("ethernets".into(), Value::Mapping(eths));
    Some(serde_yaml::to_string(&Value::Mapping(top)).unwrap_or_default())
}

/// The metric of a later NIC's default route in its own table: where a
/// renderer drops `table:` (all but netplan), a main-table default route
/// that loses to the first NIC's (metric 0).
const TABLE_METRIC: u32 = 10000;

/// A network-config route `to` via `via`, in `table` (else main).
fn route(to: &str, via: &str, table: Option<u32>) -> Value {
    let mut r = Mapping::new();
    r.insert("to".into(), to.into());
    r.insert("via".into(), via.into());
    if let Some(t) = table {
        r.insert("table".into(), t.into());
    }
    Value::Mapping(r)
}

/// The files of a VM's seed, in order: `meta-data`, `user-data` (empty
/// when only meta-data was given: NoCloud needs both) and
/// `network-config` when the VM has NICs.
pub fn seed_files(rec: &VmRecord, dns: &ignis_net::dns::Plan) -> Vec<(&'static str, Vec<u8>)> {
    let mut files = vec![
        ("meta-data", meta_data(rec).into_bytes()),
        (
            "user-data",
            rec.spec.user_data.clone().unwrap_or_default().into_bytes(),
        ),
    ];
    if let Some(n) = network_config(rec, dns) {
        files.push(("network-config", n.into_bytes()));
    }
    files
}

/// A vfat image labelled `cidata` holding `files` in its root directory.
/// Sized to its content plus 1 MiB, at least 2 MiB (FAT12/16, 512-byte
/// sectors); `volume_id` is the filesystem's serial number.
pub fn vfat_image(files: &[(&str, Vec<u8>)], volume_id: u32) -> std::io::Result<Vec<u8>> {
    let content: usize = files.iter().map(|(_, d)| d.len()).sum();
    let size = (content + (1 << 20)).next_multiple_of(1 << 20).max(2 << 20);
    let mut disk = Cursor::new(vec![0u8; size]);
    let mut label = *b"           ";
    label[..SEED_LABEL.len()].copy_from_slice(SEED_LABEL.as_bytes());
    fatfs::format_volume(
        &mut disk,
        fatfs::FormatVolumeOptions::new()
            .volume_label(label)
            .volume_id(volume_id),
    )?;
    {
        let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new())?;
        {
            let root = fs.root_dir();
            for (name, data) in files {
                let mut f = root.create_file(name)?;
                f.truncate()?;
                f.write_all(data)?;
                f.flush()?;
            }
        }
        fs.unmount()?;
    }
    Ok(disk.into_inner())
}

/// Writes the VM's seed into `dir` (replacing an older one: a fork's
/// record has a new ID, name and NICs) and returns its path.
pub(crate) fn write_seed(
    dir: &Path,
    rec: &VmRecord,
    dns: &ignis_net::dns::Plan,
) -> std::io::Result<PathBuf> {
    let id = u32::from_str_radix(rec.id.get(..8).unwrap_or("0"), 16).unwrap_or(0);
    let image = vfat_image(&seed_files(rec, dns), id)?;
    let path = dir.join(SEED_FILE);
    ignis_state::write_atomic(&path, &image)?;
    // The VMM may run as its own uid (QEMU -runas reopens disks by path
    // after a restore; the jail links it): readable by all, written by
    // nobody but ignis.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn record() -> VmRecord {
        serde_json::from_value(serde_json::json!({
            "id": "0123456789abcdef",
            "name": "web",
            "imageId": "sha256:x",
            "image": "debian",
            "kernelId": "k",
            "created": "2026-12-01T00:00:00Z",
            "spec": {
                "cpus": 1, "memoryMib": 256, "diskSize": 1073741824,
                "backend": "qemu", "accel": "tcg", "mode": "system",
                "network": {
                    "mode": "bridge", "ip": "10.61.0.5", "prefix": 16,
                    "gateway": "10.61.0.1", "mac": "02:AB:00:00:00:05",
                    "interfaces": [{"mode": "cni", "cni": "backend", "ip": "10.22.0.7",
                                    "prefix": 24, "mac": "02:cd:00:00:00:07"}]
                },
                "ssh": {"authorizedKey": "ssh-ed25519 AAAAC3Nz ignis\n", "generated": true},
                "userData": "#cloud-config\nhostname: from-user-data\n",
                "metaData": "zone: east\npublic-keys: [\"ssh-rsa AAAAB3 user\"]\n"
            },
            "status": {"state": "created"}
        }))
        .unwrap()
    }

    fn dns() -> ignis_net::dns::Plan {
        ignis_net::dns::Plan {
            nameservers: vec!["10.61.0.1".parse().unwrap()],
            search: vec!["corp.example".into()],
            ..Default::default()
        }
    }

    fn yaml(s: &str) -> Value {
        serde_yaml::from_str(s).unwrap()
    }

    /// Reads the image back with the crate: its label and every file.
    fn read_back(image: Vec<u8>) -> (String, Vec<(String, Vec<u8>)>) {
        let fs = fatfs::FileSystem::new(Cursor::new(image), fatfs::FsOptions::new()).unwrap();
        let label = fs.volume_label();
        let mut files = Vec::new();
        for e in fs.root_dir().iter() {
            let e = e.unwrap();
            let mut data = Vec::new();
            e.to_file().read_to_end(&mut data).unwrap();
            files.push((e.file_name(), data));
        }
        (label, files)
    }

    #[test]
    fn the_seed_is_a_cidata_vfat_with_the_three_files() {
        let dir = tempfile::tempdir().unwrap();
        let rec = record();
        let path = write_seed(dir.path(), &rec, &dns()).unwrap();
        assert_eq!(path, dir.path().join("seed.img"));
        let (label, files) = read_back(std::fs::read(&path).unwrap());
        assert_eq!(label, "cidata");
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["meta-data", "user-data", "network-config"]);
        assert_eq!(files[1].1, b"#cloud-config\nhostname: from-user-data\n");
        let meta = yaml(std::str::from_utf8(&files[0].1).unwrap());
        assert_eq!(meta["instance-id"], "0123456789abcdef");
        assert_eq!(meta["local-hostname"], "web");
        assert_eq!(meta["zone"], "east");
        // --ssh's key and the user's, in that order.
        assert_eq!(
            meta["public-keys"],
            yaml("[ssh-ed25519 AAAAC3Nz ignis, ssh-rsa AAAAB3 user]")
        );
        assert_eq!(
            yaml(std::str::from_utf8(&files[2].1).unwrap()),
            yaml(&network_config(&rec, &dns()).unwrap())
        );
    }

    #[test]
    fn a_large_user_data_fits_and_reads_back_whole() {
        let mut rec = record();
        let big: String = (0..crate::vm::options::MAX_SEED_FILE / 64)
            .map(|i| format!("# line {i:>55}\n"))
            .collect();
        assert!(big.len() > 1_000_000);
        rec.spec.user_data = Some(big.clone());
        let (_, files) = read_back(vfat_image(&seed_files(&rec, &dns()), 7).unwrap());
        assert_eq!(files[1].1, big.as_bytes());
    }

    #[test]
    fn a_user_key_wins_over_ignis_ones() {
        let mut rec = record();
        rec.spec.meta_data = Some("local-hostname: mine\ninstance-id: fixed\n".into());
        rec.spec.ssh = None;
        let meta = yaml(&meta_data(&rec));
        assert_eq!(meta["local-hostname"], "mine");
        assert_eq!(meta["instance-id"], "fixed");
        assert!(meta.get("public-keys").is_none(), "{meta:?}");
        // Only user-data: meta-data is ignis's, still with both keys.
        rec.spec.meta_data = None;
        let meta = yaml(&meta_data(&rec));
        assert_eq!(meta["instance-id"], "0123456789abcdef");
        assert_eq!(meta["local-hostname"], "web");
    }

    #[test]
    fn network_config_has_each_nic_by_mac_with_its_lease() {
        let rec = record();
        let n = yaml(&network_config(&rec, &dns()).unwrap());
        assert_eq!(n["version"], 2);
        let e0 = &n["ethernets"]["eth0"];
        assert_eq!(e0["match"]["macaddress"], "02:ab:00:00:00:05");
        assert_eq!(e0["set-name"], "eth0");
        assert_eq!(e0["dhcp4"], false);
        assert_eq!(e0["addresses"], yaml("[10.61.0.5/16]"));
        assert_eq!(e0["routes"], yaml("[{to: 0.0.0.0/0, via: 10.61.0.1}]"));
        assert_eq!(e0["nameservers"]["addresses"], yaml("[10.61.0.1]"));
        assert_eq!(e0["nameservers"]["search"], yaml("[corp.example]"));
        assert!(e0.get("routing-policy").is_none(), "{e0:?}");
        // The CNI NIC (no gateway): its own address, no second default
        // route, no table.
        let e1 = &n["ethernets"]["eth1"];
        assert_eq!(e1["match"]["macaddress"], "02:cd:00:00:00:07");
        assert_eq!(e1["addresses"], yaml("[10.22.0.7/24]"));
        assert!(e1.get("routes").is_none() && e1.get("nameservers").is_none());
        assert!(e1.get("routing-policy").is_none());
        assert_eq!(n["ethernets"].as_mapping().unwrap().len(), 2);
    }

    #[test]
    fn a_later_nic_with_a_gateway_gets_its_own_table_and_rule() {
        let mut rec = record();
        let mut nics = rec.spec.network.nics();
        nics[1].gateway = Some("10.22.0.1".into());
        rec.spec.network.set_nics(nics);
        let n = yaml(&network_config(&rec, &dns()).unwrap());
        // The first NIC keeps the main table's default route alone.
        let e0 = &n["ethernets"]["eth0"];
        assert_eq!(e0["routes"], yaml("[{to: 0.0.0.0/0, via: 10.61.0.1}]"));
        assert!(e0.get("routing-policy").is_none());
        let e1 = &n["ethernets"]["eth1"];
        assert_eq!(
            e1["routes"],
            yaml("[{to: 0.0.0.0/0, via: 10.22.0.1, table: 101, metric: 10000}]")
        );
        assert_eq!(
            e1["routing-policy"],
            yaml("[{from: 10.22.0.7, table: 101}]")
        );
        assert!(e1.get("nameservers").is_none());
        // Every route has a gateway: cloud-init 22.4's eni renderer fails
        // on one without (and then renders no network at all).
        for e in n["ethernets"].as_mapping().unwrap().values() {
            for r in e["routes"].as_sequence().into_iter().flatten() {
                assert!(r.get("via").is_some(), "{r:?}");
            }
        }
        // The tables the guest init uses.
        assert_eq!(ignis_guest_config::nic_table(1), 101);
    }

    #[test]
    fn when_only_a_later_nic_has_a_gateway_it_has_main_default_and_its_table() {
        let mut rec = record();
        let mut nics = rec.spec.network.nics();
        nics[0].gateway = None;
        nics[1].gateway = Some("10.22.0.1".into());
        rec.spec.network.set_nics(nics);
        let n = yaml(&network_config(&rec, &dns()).unwrap());
        assert!(n["ethernets"]["eth0"].get("routes").is_none());
        let e1 = &n["ethernets"]["eth1"];
        assert_eq!(
            e1["routes"],
            yaml("[{to: 0.0.0.0/0, via: 10.22.0.1}, {to: 0.0.0.0/0, via: 10.22.0.1, table: 101, metric: 10000}]")
        );
        assert_eq!(e1["nameservers"]["addresses"], yaml("[10.61.0.1]"));
        assert_eq!(
            e1["routing-policy"],
            yaml("[{from: 10.22.0.7, table: 101}]")
        );
    }

    #[test]
    fn network_none_has_no_network_config() {
        let mut rec = record();
        rec.spec.network.set_nics(Vec::new());
        assert_eq!(network_config(&rec, &dns()), None);
        let names: Vec<&str> = seed_files(&rec, &dns()).iter().map(|f| f.0).collect();
        assert_eq!(names, ["meta-data", "user-data"]);
    }

    #[test]
    fn a_nic_without_a_lease_asks_dhcp() {
        let mut rec = record();
        let mut nics = rec.spec.network.nics();
        nics[1].ip = None;
        nics[1].prefix = None;
        rec.spec.network.set_nics(nics);
        let n = yaml(&network_config(&rec, &dns()).unwrap());
        assert_eq!(n["ethernets"]["eth1"]["dhcp4"], true);
        assert!(n["ethernets"]["eth1"].get("addresses").is_none());
    }

    #[test]
    fn meta_data_must_be_a_mapping() {
        assert!(parse_meta_data("").unwrap().is_empty());
        assert!(parse_meta_data("# nothing\n").unwrap().is_empty());
        assert_eq!(parse_meta_data("a: 1\n").unwrap().len(), 1);
        assert!(parse_meta_data("- a\n- b\n")
            .unwrap_err()
            .contains("mapping"));
        assert!(parse_meta_data("a: [\n").unwrap_err().contains("YAML"));
    }
}
