//! Live CNI networking and several NICs, inside a network namespace this
//! test creates (never the host's interfaces, firewall or /etc/cni): the
//! standard plugins (Debian's containernetworking-plugins) with a conflist
//! and an IPAM directory of the test's own. A VM on a CNI bridge network
//! gets its address from host-local IPAM and answers there; a VM with a
//! bridge NIC and a CNI NIC answers on both; create/start/rm cycles leave
//! no namespace, veth, TAP, IPAM lease or attachment record.
//!
//! ignis runs in the test namespace through `nsenter --net` (not `ip netns
//! exec`, whose private mount namespace would hide the VM namespaces' bind
//! mounts from the next command).

mod common;

use common::{tier, wait, Env};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const SUBNET: &str = "10.88.7";

/// Removes, even when the test fails: the VMs, then the namespace.
struct Cleanup {
    ns: String,
    root: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let ids = Command::new(env!("CARGO_BIN_EXE_ignis"))
            .env("IGNIS_ROOT", &self.root)
            .args(["ps", "-a", "-Q"])
            .output();
        if let Ok(out) = ids {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = in_ns(&self.ns, &self.root).args(["rm", "-f", id]).output();
            }
        }
        let _ = in_ns(&self.ns, &self.root)
            .args(["system", "prune"])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn in_ns(ns: &str, root: &Path) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}"))
        .arg(env!("CARGO_BIN_EXE_ignis"))
        .env("IGNIS_ROOT", root)
        .env("IGNIS_NETWORK", "bridge")
        .env("IGNIS_LOG", "warn");
    c
}

fn sh(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run")
}

fn ok(args: &[&str]) -> String {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Net {
    env: Env,
    ns: String,
    conf: PathBuf,
    bin: PathBuf,
    ipam: PathBuf,
    _cleanup: Cleanup,
}

impl Net {
    fn ignis(&self, args: &[&str]) -> Output {
        in_ns(&self.ns, &self.env.root())
            .arg(args[0])
            .args(self.cni_flags(args[0]))
            .args(&args[1..])
            .output()
            .expect("ignis")
    }

    fn cni_flags(&self, verb: &str) -> Vec<String> {
        if matches!(verb, "run" | "create") {
            vec![
                "--cni-conf-dir".into(),
                self.conf.display().to_string(),
                "--cni-bin-dir".into(),
                self.bin.display().to_string(),
            ]
        } else {
            vec![]
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.ignis(args);
        assert!(
            out.status.success(),
            "ignis {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn curl(&self, url: &str) -> String {
        let mut got = String::new();
        wait::within(Duration::from_secs(90), || {
            let out = sh(&[
                "nsenter",
                &format!("--net=/run/netns/{}", self.ns),
                "curl",
                "-s",
                "-m",
                "2",
                url,
            ]);
            got = String::from_utf8_lossy(&out.stdout).into_owned();
            got.contains("hello")
        });
        got
    }

    /// IPAM leases host-local holds: files named after addresses.
    fn leases(&self) -> Vec<String> {
        std::fs::read_dir(self.ipam.join("testnet"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(SUBNET))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What the VM `id` could have left: its namespace, veths and TAPs in
    /// the test namespace, its attachment record.
    fn assert_nothing_left(&self, id: &str) {
        assert!(
            !Path::new(&format!("/run/netns/ignis-{id}")).exists(),
            "namespace of {id} left"
        );
        let links = ok(&["ip", "-n", &self.ns, "-o", "link"]);
        assert!(
            !links.contains("veth") && !links.contains(" ig-"),
            "links left: {links}"
        );
        assert!(
            !self
                .env
                .root()
                .join("cni")
                .join(format!("{id}.json"))
                .exists(),
            "attachment record of {id} left"
        );
    }
}

/// The directory holding the CNI plugins, or why there is none.
fn cni_bin() -> Result<PathBuf, String> {
    ["/opt/cni/bin", "/usr/lib/cni"]
        .iter()
        .map(PathBuf::from)
        .find(|d| d.join("bridge").is_file() && d.join("host-local").is_file())
        .ok_or_else(|| {
            "CNI plugins missing (apt-get install containernetworking-plugins)".to_string()
        })
}

fn missing() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root (network namespaces need CAP_SYS_ADMIN)".into());
    }
    for (bin, why) in [
        ("ip", "ip missing (apt-get install iproute2)"),
        ("tc", "tc missing (apt-get install iproute2)"),
        ("nsenter", "nsenter missing (apt-get install util-linux)"),
        ("nft", "nft missing (apt-get install nftables)"),
        ("curl", "curl missing (apt-get install curl)"),
        (
            "qemu-system-x86_64",
            "qemu-system-x86_64 missing (apt-get install qemu-system-x86)",
        ),
    ] {
        if sh(&["sh", "-c", &format!("command -v {bin}")])
            .stdout
            .is_empty()
        {
            return Some(why.into());
        }
    }
    if let Err(e) = cni_bin() {
        return Some(e);
    }
    common::qemu_missing_piece()
}

/// The test namespace with the conflist `testnet` (bridge plugin, bridge
/// `cnit0` as gateway, host-local IPAM in the test's directory).
fn setup(tag: &str) -> Option<Net> {
    setup_with(tag, &[], None)
}

/// [`setup`] with more plugins after the bridge one (`portmap`) and, with
/// `subnet6`, a second host-local range: dual stack.
fn setup_with(tag: &str, more: &[serde_json::Value], subnet6: Option<&str>) -> Option<Net> {
    if let Some(m) = missing() {
        tier::skip(tier::NET, &m);
        return None;
    }
    let env = Env::for_tier(tier::NET);
    env.debian_kernel();
    let ns = format!("igt-{tag}{}", std::process::id());
    let cleanup = Cleanup {
        ns: ns.clone(),
        root: env.root(),
    };
    ok(&["ip", "netns", "add", &ns]);
    ok(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
    let conf = env.dir.path().join("cni");
    let ipam = env.dir.path().join("ipam");
    std::fs::create_dir_all(&conf).unwrap();
    let mut ranges = vec![serde_json::json!([{"subnet": format!("{SUBNET}.0/24")}])];
    if let Some(s6) = subnet6 {
        ranges.push(serde_json::json!([{ "subnet": s6 }]));
    }
    let mut plugins = vec![serde_json::json!({
        "type": "bridge",
        "bridge": "cnit0",
        "isGateway": true,
        "ipMasq": false,
        "ipam": {
            "type": "host-local",
            "ranges": ranges,
            "dataDir": ipam,
        },
    })];
    plugins.extend(more.iter().cloned());
    std::fs::write(
        conf.join("10-testnet.conflist"),
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "testnet",
            "plugins": plugins,
        })
        .to_string(),
    )
    .unwrap();
    Some(Net {
        env,
        ns,
        conf,
        bin: cni_bin().unwrap(),
        ipam,
        _cleanup: cleanup,
    })
}

fn web_image(env: &Env) -> String {
    env.busybox_image(
        "web:1",
        false,
        &[("www/index.html", "hello from the VM\n", 0o644)],
        &[],
    )
}

const HTTPD: &[&str] = &["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"];

#[test]
fn cni_bridge_network_with_host_local_ipam_and_a_second_nic() {
    let Some(net) = setup("c") else { return };
    let img = web_image(&net.env);

    // One NIC on the CNI network: the address is host-local's.
    let mut args = vec!["run", "--name", "web", "--network", "cni:testnet", &img];
    args.extend(HTTPD);
    let id = net.ok(&args).trim().to_string();
    let v = net.env.vm_json("web");
    let n = &v["spec"]["network"];
    assert_eq!(n["mode"], "cni", "{n}");
    assert_eq!(n["cni"], "testnet");
    let ip = n["ip"].as_str().unwrap().to_string();
    assert!(ip.starts_with(SUBNET), "{ip}");
    assert_eq!(
        net.leases(),
        vec![ip.clone()],
        "host-local holds the VM's address"
    );
    let ps = net.ok(&["ps"]);
    assert!(ps.contains(&ip), "{ps}");
    // Reachable from the namespace the bridge plugin's bridge is in.
    assert_eq!(
        net.curl(&format!("http://{ip}/")),
        "hello from the VM\n",
        "console: {}",
        net.ok(&["logs", "web"])
    );
    // The VM's MAC is the plugins' interface's; the guest has it.
    let mac = n["mac"].as_str().unwrap();
    assert_eq!(
        net.ok(&[
            "exec",
            "web",
            "/bin/busybox",
            "cat",
            "/sys/class/net/eth0/address"
        ]),
        format!("{mac}\n")
    );
    // A stop and a start keep the attachment (CHECK passes) and the address.
    net.ok(&["stop", "-t", "5", "web"]);
    net.ok(&["start", "web"]);
    assert_eq!(net.env.vm_json("web")["spec"]["network"]["ip"], ip.as_str());
    assert_eq!(net.curl(&format!("http://{ip}/")), "hello from the VM\n");
    net.ok(&["rm", "-f", "web"]);
    net.assert_nothing_left(&id);
    assert!(
        net.leases().is_empty(),
        "IPAM lease left: {:?}",
        net.leases()
    );

    // Two NICs: eth0 on the ignis bridge, eth1 on the CNI network.
    let mut args = vec![
        "run",
        "--name",
        "two",
        "--network",
        "bridge",
        "--network",
        "cni:testnet",
        &img,
    ];
    args.extend(HTTPD);
    let id = net.ok(&args).trim().to_string();
    let v = net.env.vm_json("two");
    let n = &v["spec"]["network"];
    assert_eq!(n["mode"], "bridge", "{n}");
    let bridge_ip = n["ip"].as_str().unwrap().to_string();
    assert!(bridge_ip.starts_with("10.61."), "{bridge_ip}");
    assert_eq!(n["interfaces"][0]["mode"], "cni");
    let cni_ip = n["interfaces"][0]["ip"].as_str().unwrap().to_string();
    assert!(cni_ip.starts_with(SUBNET), "{cni_ip}");
    assert_ne!(n["mac"], n["interfaces"][0]["mac"]);
    let ps = net.ok(&["ps"]);
    assert!(ps.contains(&format!("{bridge_ip}, {cni_ip}")), "{ps}");
    for ip in [&bridge_ip, &cni_ip] {
        assert_eq!(
            net.curl(&format!("http://{ip}/")),
            "hello from the VM\n",
            "{ip}; console: {}",
            net.ok(&["logs", "two"])
        );
    }
    net.ok(&["rm", "-f", "two"]);
    net.assert_nothing_left(&id);
    assert!(
        net.leases().is_empty(),
        "IPAM lease left: {:?}",
        net.leases()
    );

    // A network that is not there: refused, nothing made.
    let out = net.ignis(&[
        "create",
        "--network",
        "cni:nosuch",
        &img,
        "/bin/busybox",
        "true",
    ]);
    common::assert_exit(&out, 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nosuch"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(net.ok(&["ps", "-a", "-q"]).trim().is_empty());
}

/// Deletes a namespace of the test's, even when the test fails.
struct NsGuard(String);

impl Drop for NsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Source routing of a VM with two NICs: a client on a subnet of its own
/// (a second namespace, routed through the test namespace, which is both
/// networks' gateway and filters by reverse path as real routers do)
/// reaches the VM's second NIC (CNI) and gets its replies: they leave by
/// the second NIC's gateway, not by the first NIC's default route (the
/// reverse-path filter drops those). The guest has a rule and a table per
/// NIC; the first NIC is still reachable from the client.
#[test]
fn replies_from_the_second_nic_leave_by_its_gateway() {
    let Some(net) = setup("r") else { return };
    let img = web_image(&net.env);
    // The client: 10.99.0.2, its default route to the test namespace.
    let cl = format!("igt-rc{}", std::process::id());
    ok(&["ip", "netns", "add", &cl]);
    let _cl = NsGuard(cl.clone());
    ok(&[
        "ip", "-n", &net.ns, "link", "add", "igc0", "type", "veth", "peer", "name", "igc1",
        "netns", &cl,
    ]);
    ok(&[
        "ip",
        "-n",
        &net.ns,
        "addr",
        "add",
        "10.99.0.1/24",
        "dev",
        "igc0",
    ]);
    ok(&["ip", "-n", &net.ns, "link", "set", "igc0", "up"]);
    ok(&[
        "ip",
        "-n",
        &cl,
        "addr",
        "add",
        "10.99.0.2/24",
        "dev",
        "igc1",
    ]);
    ok(&["ip", "-n", &cl, "link", "set", "igc1", "up"]);
    ok(&["ip", "-n", &cl, "link", "set", "lo", "up"]);
    ok(&[
        "ip",
        "-n",
        &cl,
        "route",
        "add",
        "default",
        "via",
        "10.99.0.1",
    ]);
    for key in ["net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=1"] {
        ok(&["ip", "netns", "exec", &net.ns, "sysctl", "-qw", key]);
    }

    let mut args = vec![
        "run",
        "--name",
        "two",
        "--network",
        "bridge",
        "--network",
        "cni:testnet",
        &img,
    ];
    args.extend(HTTPD);
    net.ok(&args);
    let v = net.env.vm_json("two");
    let n = &v["spec"]["network"];
    let bridge_ip = n["ip"].as_str().unwrap().to_string();
    let cni_ip = n["interfaces"][0]["ip"].as_str().unwrap().to_string();
    let cni_gw = n["interfaces"][0]["gateway"].as_str().unwrap().to_string();
    assert_eq!(cni_gw, format!("{SUBNET}.1"), "{n}");
    let curl_from_client = |ip: &str| {
        let mut got = String::new();
        wait::within(Duration::from_secs(90), || {
            let out = sh(&[
                "nsenter",
                &format!("--net=/run/netns/{cl}"),
                "curl",
                "-s",
                "-m",
                "2",
                &format!("http://{ip}/"),
            ]);
            got = String::from_utf8_lossy(&out.stdout).into_owned();
            got.contains("hello")
        });
        got
    };
    let guest = |args: &[&str]| {
        let mut a = vec!["exec", "two", "/bin/busybox"];
        a.extend(args);
        net.ok(&a)
    };
    assert_eq!(
        curl_from_client(&cni_ip),
        "hello from the VM\n",
        "the second NIC from beyond its subnet; rules:\n{}\ntable 101:\n{}\nconsole: {}",
        guest(&["ip", "rule"]),
        guest(&["ip", "route", "show", "table", "101"]),
        net.ok(&["logs", "two"])
    );
    assert_eq!(curl_from_client(&bridge_ip), "hello from the VM\n");
    // A rule per NIC from its address to its table, before main's.
    let rules = guest(&["ip", "rule"]);
    assert!(
        rules.contains(&format!("100:\tfrom {bridge_ip} lookup 100"))
            && rules.contains(&format!("101:\tfrom {cni_ip} lookup 101")),
        "{rules}"
    );
    let t101 = guest(&["ip", "route", "show", "table", "101"]);
    assert!(
        t101.contains(&format!("default via {cni_gw} dev eth"))
            && t101.contains(&format!("{SUBNET}.0/24 dev eth")),
        "{t101}"
    );
    let t100 = guest(&["ip", "route", "show", "table", "100"]);
    assert!(t100.contains("default via 10.61.0.1 dev eth"), "{t100}");
    // The main table has one default route: the first NIC's.
    let main = guest(&["ip", "route"]);
    assert_eq!(main.matches("default").count(), 1, "{main}");
    assert!(main.contains("default via 10.61.0.1"), "{main}");
    net.ok(&["rm", "-f", "two"]);
}

/// cloud-init with two NICs (the ignis bridge, the CNI network): the
/// Debian 12 image's cloud-init (22.4) reads the seed's network-config and
/// renders it with ifupdown's `eni` (the image has ifupdown, no netplan):
/// a udev rule naming each NIC by its MAC, each NIC static with its
/// address. `eni` drops the second NIC's `table:` and `routing-policy`
/// (its default route becomes `post-up route add default gw ... || true`,
/// a no-op without net-tools); the table and rule are the guest init's,
/// set before the image's init, and still there once the system is up, with
/// one default route in main. (networking.service's `ifup` fails on the
/// addresses the init already set: not asserted, reported.)
#[test]
fn cloud_init_renders_the_network_config_of_two_nics() {
    let Some(net) = setup("n") else { return };
    let Some(rootfs) = common::cloud::rootfs(tier::NET) else {
        return;
    };
    common::cloud::import_image(&net.env, &rootfs);
    let user_data = net.env.dir.path().join("user-data");
    std::fs::write(&user_data, "#cloud-config\n").unwrap();
    net.ok(&[
        "run",
        "--name",
        "cn",
        "--memory",
        "768MB",
        "--network",
        "bridge",
        "--network",
        "cni:testnet",
        "--user-data",
        user_data.to_str().unwrap(),
        "debian-cloud:12",
    ]);
    let v = net.env.vm_json("cn");
    let n = &v["spec"]["network"];
    let (ip0, mac0) = (n["ip"].as_str().unwrap(), n["mac"].as_str().unwrap());
    let nic1 = &n["interfaces"][0];
    let (ip1, mac1) = (nic1["ip"].as_str().unwrap(), nic1["mac"].as_str().unwrap());
    let exec = |args: &[&str]| -> Option<String> {
        let mut a = vec!["exec", "cn"];
        a.extend(args);
        let out = net.ignis(&a);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let cat = |path: &str| exec(&["cat", path]).unwrap_or_default();
    let finished = wait::within(Duration::from_secs(900), || {
        exec(&["cat", "/var/lib/cloud/instance/boot-finished"]).is_some()
    });
    let debug = || {
        format!(
            "console:\n{}\ncloud-init.log:\n{}",
            net.ok(&["logs", "cn"]),
            exec(&["tail", "-n", "80", "/var/log/cloud-init.log"]).unwrap_or_default()
        )
    };
    assert!(finished, "cloud-init did not finish\n{}", debug());
    let eni = cat("/etc/network/interfaces.d/50-cloud-init");
    let udev = cat("/etc/udev/rules.d/70-persistent-net.rules");
    let rules = exec(&["ip", "rule"]).unwrap_or_default();
    let t101 = exec(&["ip", "route", "show", "table", "101"]).unwrap_or_default();
    let main = exec(&["ip", "route"]).unwrap_or_default();
    let addrs = exec(&["ip", "-o", "addr"]).unwrap_or_default();
    let all = format!(
        "eni:\n{eni}\nudev:\n{udev}\nrules:\n{rules}\ntable 101:\n{t101}\nmain:\n{main}\naddrs:\n{addrs}\n{}",
        debug()
    );
    // Rendered from the seed: each NIC by its MAC, with its address.
    for (mac, ip, name) in [(mac0, ip0, "eth0"), (mac1, ip1, "eth1")] {
        assert!(
            udev.contains(&format!("ATTR{{address}}==\"{mac}\"")) && udev.contains(name),
            "{all}"
        );
        let stanza = eni
            .split(&format!("iface {name} inet static"))
            .nth(1)
            .unwrap_or_default();
        assert!(
            stanza.trim_start().starts_with(&format!("address {ip}/")),
            "{all}"
        );
        assert!(addrs.contains(&format!("inet {ip}/")), "{all}");
    }
    // Source routing as the guest init set it up.
    assert!(rules.contains(&format!("from {ip1} lookup 101")), "{all}");
    assert!(t101.contains(&format!("default via {SUBNET}.1")), "{all}");
    assert_eq!(main.matches("default").count(), 1, "{all}");
    net.ok(&["rm", "-f", "cn"]);
}

/// A create killed between CNI ADD and its record: `system check` names
/// the orphaned attachment, `system prune` runs its DEL (the lease goes)
/// and deletes the namespace.
#[test]
fn a_crash_after_cni_add_is_repaired_by_prune() {
    let Some(net) = setup("p") else { return };
    let img = web_image(&net.env);
    let out = in_ns(&net.ns, &net.env.root())
        .env("IGNIS_FAULT", "vm:cni-attached")
        .args(["create", "--network", "cni:testnet"])
        .args(net.cni_flags("create"))
        .args([&img, "/bin/busybox", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(net.leases().len(), 1, "ADD ran before the crash");
    let id = std::fs::read_dir(net.env.root().join("cni"))
        .unwrap()
        .flatten()
        .find_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".json")
                .map(str::to_string)
        })
        .expect("the attachment record");
    assert!(Path::new(&format!("/run/netns/ignis-{id}")).exists());
    assert!(net.ok(&["ps", "-a", "-q"]).trim().is_empty(), "no record");
    let check = net.ignis(&["system", "check"]);
    let text = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(text.contains("orphan-cni") && text.contains(&id), "{text}");
    net.ok(&["system", "prune"]);
    net.assert_nothing_left(&id);
    assert!(net.leases().is_empty(), "{:?}", net.leases());
    // Once: a second prune has nothing to delete.
    let check = net.ignis(&["system", "check"]);
    assert!(!String::from_utf8_lossy(&check.stdout).contains("orphan-cni"));
}

/// Firecracker (on PATH or in IGNIS_FIRECRACKER) where /dev/kvm works.
fn firecracker() -> Option<String> {
    let fc = match std::env::var_os("IGNIS_FIRECRACKER") {
        Some(p) => Some(PathBuf::from(p)),
        None => std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("firecracker"))
                .find(|p| p.is_file())
        }),
    }?;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .ok()?;
    Some(fc.display().to_string())
}

/// 50 create/start/rm cycles of VMs on the default CNI network (`--network
/// cni`: the first conflist), on Firecracker with the test guest where it
/// runs (under its jailer, `--netns`), else on QEMU: each rm runs DEL (the
/// lease goes) and deletes the namespace with the TAP and the plugins'
/// veth. The test guest does not configure its NIC: what is measured is
/// the host side.
#[test]
fn fifty_cni_vm_cycles_leave_nothing_behind() {
    let Some(net) = setup("y") else { return };
    let fc = firecracker();
    let (img, extra): (String, Vec<String>) = match &fc {
        Some(_) => {
            let guest = net.env.dir.path().join("testguest.elf");
            std::fs::write(&guest, ignis_testkit::testguest::elf()).unwrap();
            net.env.ok(&[
                "kernel",
                "import",
                guest.to_str().unwrap(),
                "--name",
                "testguest",
            ]);
            (
                net.env.app_image(),
                vec![
                    "--backend".into(),
                    "firecracker".into(),
                    "--kernel".into(),
                    "testguest".into(),
                ],
            )
        }
        None => (
            net.env
                .busybox_image("sleeper:1", false, &[], &["/bin/busybox", "sleep", "600"]),
            vec!["--no-wait".into()],
        ),
    };
    for i in 0..50 {
        let name = format!("c{i}");
        let mut args = vec!["run", "-d", "--name", &name, "--network", "cni"];
        args.extend(extra.iter().map(String::as_str));
        args.push(&img);
        let id = net.ok(&args).trim().to_string();
        assert!(Path::new(&format!("/run/netns/ignis-{id}")).exists());
        assert_eq!(net.leases().len(), 1);
        let v = net.env.vm_json(&name);
        assert_eq!(v["status"]["state"], "running", "{v}");
        if fc.is_some() {
            assert_eq!(v["spec"]["backend"], "firecracker");
        }
        net.ok(&["rm", "-f", &name]);
        net.assert_nothing_left(&id);
        assert!(net.leases().is_empty(), "cycle {i}: {:?}", net.leases());
    }
}

/// The `portmap` plugin, declaring the capability ignis passes ports by.
fn portmap() -> serde_json::Value {
    serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}})
}

/// The NAT rules (iptables, as portmap makes them) of namespace `ns`.
fn nat_rules(ns: &str) -> String {
    ok(&[
        "nsenter",
        &format!("--net=/run/netns/{ns}"),
        "iptables-save",
        "-t",
        "nat",
    ])
}

/// portmap's rules for VM `id`: the jumps to its chain (they carry a
/// comment naming the VM) and that chain's rules.
fn portmap_rules(ns: &str, id: &str) -> Vec<String> {
    let all = nat_rules(ns);
    let entries: Vec<&str> = all
        .lines()
        .filter(|l| l.contains("dnat name") && l.contains(id))
        .collect();
    let chains: Vec<String> = entries
        .iter()
        .filter_map(|l| l.rsplit(" -j ").next())
        .map(|c| format!("-A {c} "))
        .collect();
    entries
        .iter()
        .copied()
        .chain(
            all.lines()
                .filter(|l| chains.iter().any(|c| l.starts_with(c))),
        )
        .map(str::to_string)
        .collect()
}

/// `-p` on a CNI network: portmap (given the ports as
/// `runtimeConfig.portMappings`) publishes the VM's port on the test
/// namespace's addresses: a client in a namespace of its own reaches it
/// there, over a veth; stop/start keeps it (CHECK); `rm` runs DEL, which
/// removes portmap's rules; a create killed after ADD leaves rules that
/// `system prune` removes; a network without portmap is refused at create
/// with nothing made.
#[test]
fn published_ports_on_a_cni_network_through_portmap() {
    if sh(&["sh", "-c", "command -v iptables-save"])
        .stdout
        .is_empty()
    {
        tier::skip(
            tier::NET,
            "iptables missing (apt-get install iptables): portmap needs it",
        );
        return;
    }
    let Some(net) = setup_with("m", &[portmap()], None) else {
        return;
    };
    if !net.bin.join("portmap").is_file() {
        tier::skip(
            tier::NET,
            "no portmap plugin (apt-get install containernetworking-plugins)",
        );
        return;
    }
    // A client namespace, a veth away: 10.89.7.2 → 10.89.7.1 (the test
    // namespace, where ignis and portmap's rules are).
    let client = format!("igc-m{}", std::process::id());
    let _client = NsGuard(client.clone());
    ok(&["ip", "netns", "add", &client]);
    ok(&[
        "ip", "-n", &net.ns, "link", "add", "igv-h", "type", "veth", "peer", "name", "igv-c",
        "netns", &client,
    ]);
    for (ns, dev, addr) in [
        (&net.ns, "igv-h", "10.89.7.1/24"),
        (&client, "igv-c", "10.89.7.2/24"),
    ] {
        ok(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
        ok(&["ip", "-n", ns, "link", "set", dev, "up"]);
        ok(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    }
    let from_client = |url: &str| {
        let mut got = String::new();
        wait::within(Duration::from_secs(90), || {
            let out = sh(&[
                "nsenter",
                &format!("--net=/run/netns/{client}"),
                "curl",
                "-s",
                "-m",
                "2",
                url,
            ]);
            got = String::from_utf8_lossy(&out.stdout).into_owned();
            got.contains("hello")
        });
        got
    };
    let img = web_image(&net.env);
    let mut args = vec![
        "run",
        "--name",
        "web",
        "--network",
        "cni:testnet",
        "-p",
        "18080:80",
        &img,
    ];
    args.extend(HTTPD);
    let id = net.ok(&args).trim().to_string();
    let v = net.env.vm_json("web");
    assert_eq!(
        v["spec"]["network"]["ports"],
        serde_json::json!([{"hostPort": 18080, "vmPort": 80, "proto": "tcp"}]),
        "{v}"
    );
    let ps = net.ok(&["ps"]);
    assert!(ps.contains("0.0.0.0:18080->80/tcp"), "{ps}");
    // The port is in the attachment record, for DEL.
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(net.env.root().join("cni").join(format!("{id}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(
        record[0]["portMappings"],
        serde_json::json!([{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}])
    );
    let rules = portmap_rules(&net.ns, &id);
    assert!(
        rules
            .iter()
            .any(|r| r.contains("18080") && r.contains("DNAT")),
        "{}",
        nat_rules(&net.ns)
    );
    assert_eq!(
        from_client("http://10.89.7.1:18080/"),
        "hello from the VM\n",
        "console: {}",
        net.ok(&["logs", "web"])
    );
    // Restarted: CHECK (with the same ports) passes; still published.
    net.ok(&["stop", "-t", "5", "web"]);
    net.ok(&["start", "web"]);
    assert_eq!(
        from_client("http://10.89.7.1:18080/"),
        "hello from the VM\n"
    );
    // The port is taken: another VM cannot have it.
    let out = net.ignis(&[
        "create",
        "--network",
        "cni:testnet",
        "-p",
        "18080:81",
        &img,
        "/bin/busybox",
        "true",
    ]);
    common::assert_exit(&out, 4);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already published by VM"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    net.ok(&["rm", "-f", "web"]);
    net.assert_nothing_left(&id);
    assert!(
        portmap_rules(&net.ns, &id).is_empty(),
        "{}",
        nat_rules(&net.ns)
    );
    assert!(
        !nat_rules(&net.ns).contains("CNI-DN-"),
        "{}",
        nat_rules(&net.ns)
    );

    // Killed after ADD: the rules are there, with no VM; prune's DEL
    // (from the record, with the same ports) removes them.
    let out = in_ns(&net.ns, &net.env.root())
        .env("IGNIS_FAULT", "vm:cni-attached")
        .args(["create", "--network", "cni:testnet", "-p", "18081:80/udp"])
        .args(net.cni_flags("create"))
        .args([&img, "/bin/busybox", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let id = std::fs::read_dir(net.env.root().join("cni"))
        .unwrap()
        .flatten()
        .find_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".json")
                .map(str::to_string)
        })
        .expect("the attachment record");
    assert!(
        portmap_rules(&net.ns, &id)
            .iter()
            .any(|r| r.contains("18081") && r.contains("udp")),
        "{}",
        nat_rules(&net.ns)
    );
    net.ok(&["system", "prune"]);
    net.assert_nothing_left(&id);
    assert!(
        portmap_rules(&net.ns, &id).is_empty(),
        "{}",
        nat_rules(&net.ns)
    );

    // An IPv6 host address on an IPv4-only network: portmap would publish
    // nothing; refused once the IPAM answered, its ADD undone.
    let out = net.ignis(&[
        "create",
        "--network",
        "cni:testnet",
        "-p",
        "[::]:18083:80",
        &img,
        "/bin/busybox",
        "true",
    ]);
    common::assert_exit(&out, 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[::]:18083->80/tcp: the VM got no IPv6 address on the CNI network testnet"),
        "{err}"
    );
    assert!(net.ok(&["ps", "-a", "-q"]).trim().is_empty());
    assert_eq!(
        std::fs::read_dir(net.env.root().join("cni"))
            .unwrap()
            .count(),
        0
    );
    assert!(net.leases().is_empty(), "{:?}", net.leases());
    assert!(
        !nat_rules(&net.ns).contains("-A CNI-DN-"),
        "{}",
        nat_rules(&net.ns)
    );

    // A network without portmap cannot publish: refused, nothing made.
    std::fs::write(
        net.conf.join("20-plain.conflist"),
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "plain",
            "plugins": [{"type": "bridge", "bridge": "cnit1",
                         "ipam": {"type": "host-local", "subnet": "10.88.8.0/24", "dataDir": net.ipam}}],
        })
        .to_string(),
    )
    .unwrap();
    let out = net.ignis(&[
        "run",
        "--network",
        "cni:plain",
        "-p",
        "18082:80",
        &img,
        "/bin/busybox",
        "true",
    ]);
    common::assert_exit(&out, 125);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("-p: published ports (0.0.0.0:18082->80/tcp)")
            && err.contains("plain")
            && err.contains("add the portmap plugin"),
        "{err}"
    );
    assert!(net.ok(&["ps", "-a", "-q"]).trim().is_empty());
    assert_eq!(
        std::fs::read_dir(net.env.root().join("cni"))
            .unwrap()
            .count(),
        0
    );
    assert!(!ok(&["ip", "-n", &net.ns, "-o", "link"]).contains("cnit1"));
}

/// Dual stack: host-local with an IPv4 and an IPv6 range gives the VM an
/// address of each, both in the record and `ps`, and the guest has both:
/// it answers over IPv6 from the namespace and reaches its IPv6 gateway;
/// `-p [::]:…` is published by portmap over IPv6 only.
#[test]
fn dual_stack_host_local_gives_the_vm_both_addresses() {
    let Some(net) = setup_with("6", &[portmap()], Some("fd00:88:7::/64")) else {
        return;
    };
    let img = web_image(&net.env);
    let mut args = vec![
        "run",
        "--name",
        "web",
        "--network",
        "cni:testnet",
        "-p",
        "[::]:18090:80",
        &img,
    ];
    args.extend(HTTPD);
    let id = net.ok(&args).trim().to_string();
    let v = net.env.vm_json("web");
    let n = &v["spec"]["network"];
    let ip = n["ip"].as_str().unwrap().to_string();
    let ip6 = n["ip6"].as_str().expect("an IPv6 address").to_string();
    assert!(ip.starts_with(SUBNET), "{n}");
    assert!(ip6.starts_with("fd00:88:7::"), "{n}");
    assert_eq!(n["prefix6"], 64, "{n}");
    assert_eq!(n["gateway6"], "fd00:88:7::1", "{n}");
    let ps = net.ok(&["ps"]);
    assert!(ps.contains(&ip) && ps.contains(&ip6), "{ps}");
    // host-local leased both.
    let leases: Vec<String> = std::fs::read_dir(net.ipam.join("testnet"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(leases.contains(&ip) && leases.contains(&ip6), "{leases:?}");
    // Over IPv6 from the namespace the plugins' bridge is in.
    assert_eq!(
        net.curl(&format!("http://[{ip6}]/")),
        "hello from the VM\n",
        "console: {}",
        net.ok(&["logs", "web"])
    );
    // portmap published `[::]:18090` to it: IPv6 rules only.
    assert_eq!(
        net.curl("http://[fd00:88:7::1]:18090/"),
        "hello from the VM\n"
    );
    let v6rules = ok(&[
        "nsenter",
        &format!("--net=/run/netns/{}", net.ns),
        "ip6tables-save",
        "-t",
        "nat",
    ]);
    assert!(
        v6rules.contains(&format!("--to-destination [{ip6}]:80")),
        "{v6rules}"
    );
    assert!(
        !nat_rules(&net.ns).contains("-A CNI-DN-"),
        "{}",
        nat_rules(&net.ns)
    );
    let addrs = net.ok(&[
        "exec",
        "web",
        "/bin/busybox",
        "ip",
        "-6",
        "addr",
        "show",
        "eth0",
    ]);
    assert!(addrs.contains(&format!("{ip6}/64")), "{addrs}");
    let out = net.ok(&[
        "exec",
        "web",
        "/bin/busybox",
        "ping",
        "-6",
        "-c",
        "2",
        "-W",
        "5",
        "fd00:88:7::1",
    ]);
    assert!(out.contains("2 packets received"), "{out}");
    net.ok(&["rm", "-f", "web"]);
    net.assert_nothing_left(&id);
    let v6rules = ok(&[
        "nsenter",
        &format!("--net=/run/netns/{}", net.ns),
        "ip6tables-save",
        "-t",
        "nat",
    ]);
    assert!(!v6rules.contains("-A CNI-DN-"), "{v6rules}");
    assert!(
        std::fs::read_dir(net.ipam.join("testnet"))
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with("fd00")),
        "IPv6 lease left"
    );
}
