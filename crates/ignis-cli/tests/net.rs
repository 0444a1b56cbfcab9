//! Live networking, inside network namespaces this test creates (never the
//! host's own interfaces or firewall): a VM serves HTTP through `-p`, VMs
//! reach each other over the bridge, outbound NAT reaches another
//! namespace, and create/rm cycles leave no TAP, lease or rule behind.

mod common;

use common::{tier, wait, Env};
use std::process::{Command, Output};
use std::time::Duration;

/// Removes, even when the test fails: the VMs, then the namespaces.
struct Cleanup {
    names: Vec<String>,
    root: std::path::PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let ids = Command::new(env!("CARGO_BIN_EXE_ignis"))
            .env("IGNIS_ROOT", &self.root)
            .args(["ps", "-a", "-Q"])
            .output();
        if let Ok(out) = ids {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        &self.names[0],
                        env!("CARGO_BIN_EXE_ignis"),
                        "rm",
                        "-f",
                        id,
                    ])
                    .env("IGNIS_ROOT", &self.root)
                    .output();
            }
        }
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
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

/// Runs ignis inside namespace `ns` with bridge networking.
fn ignis_in(env: &Env, ns: &str, args: &[&str]) -> Output {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_ignis")])
        .args(args);
    c.env("IGNIS_ROOT", env.root())
        .env("IGNIS_NETWORK", "bridge")
        .env("IGNIS_LOG", "warn");
    c.output().expect("ignis")
}

fn ignis_ok(env: &Env, ns: &str, args: &[&str]) -> String {
    let out = ignis_in(env, ns, args);
    assert!(
        out.status.success(),
        "ignis {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Imports `web:1`: busybox with `index` as /www/index.html.
fn web_image(env: &Env, index: &str) -> String {
    env.busybox_image("web:1", false, &[("www/index.html", index, 0o644)], &[])
}

/// Runs `img` in `ns` as the VM `web`, busybox httpd serving /www on port
/// 80, published as `publish`; returns ignis's stdout (the VM id).
fn run_web(env: &Env, ns: &str, publish: &str, img: &str) -> String {
    ignis_ok(
        env,
        ns,
        &[
            "run",
            "--name",
            "web",
            "-p",
            publish,
            img,
            "/bin/busybox",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/www",
        ],
    )
}

/// Why this tier cannot run here; `None`: it can.
fn missing() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root (network namespaces need CAP_SYS_ADMIN)".into());
    }
    for (bin, why) in [
        ("ip", "ip missing (apt-get install iproute2)"),
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
    common::qemu_missing_piece()
}

/// An environment for this tier, or `None` after recording the skip.
fn net_env() -> Option<Env> {
    if let Some(m) = missing() {
        tier::skip(tier::NET, &m);
        return None;
    }
    let env = Env::for_tier(tier::NET);
    env.debian_kernel();
    Some(env)
}

fn console_has(env: &Env, ns: &str, vm: &str, needle: &str) -> bool {
    wait::within(Duration::from_secs(60), || {
        ignis_ok(env, ns, &["logs", vm]).contains(needle)
    })
}

#[test]
fn bridge_nat_published_ports_and_clean_teardown() {
    let Some(env) = net_env() else { return };
    let tag = std::process::id();
    let (host, client) = (format!("ignis-h{tag}"), format!("ignis-c{tag}"));
    let _cleanup = Cleanup {
        names: vec![host.clone(), client.clone()],
        root: env.root(),
    };
    ok(&["ip", "netns", "add", &host]);
    ok(&["ip", "netns", "add", &client]);
    ok(&[
        "ip", "link", "add", "veth-h", "netns", &host, "type", "veth", "peer", "name", "veth-c",
        "netns", &client,
    ]);
    for (ns, dev, addr) in [
        (&host, "veth-h", "192.168.240.1/24"),
        (&client, "veth-c", "192.168.240.2/24"),
    ] {
        ok(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
        ok(&["ip", "-n", ns, "link", "set", dev, "up"]);
        ok(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    }
    let img = web_image(&env, "hello through -p\n");
    let web = run_web(&env, &host, "8080:80", &img);
    let web = web.trim().to_string();
    let web_ip = env.vm_json("web")["spec"]["network"]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(web_ip, "10.61.0.2");
    let ps = ignis_ok(&env, &host, &["ps"]);
    assert!(
        ps.contains("10.61.0.2") && ps.contains("0.0.0.0:8080->80/tcp"),
        "{ps}"
    );
    let net: serde_json::Value =
        serde_json::from_str(&ignis_ok(&env, &host, &["network", "inspect"])).unwrap();
    assert_eq!(net["leases"][0]["vmName"], "web");
    assert_eq!(net["leases"][0]["ports"][0], "0.0.0.0:8080->80/tcp");
    let ls = ignis_ok(&env, &host, &["network", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with("bridge") && l.contains("ignis0") && l.contains("10.61.0.0/16")),
        "{ls}"
    );

    // Host (another namespace, like a remote client) → published port → VM.
    let mut got = String::new();
    let reached = wait::within(Duration::from_secs(30), || {
        let out = sh(&[
            "ip",
            "netns",
            "exec",
            &client,
            "curl",
            "-s",
            "-m",
            "2",
            "http://192.168.240.1:8080/",
        ]);
        got = String::from_utf8_lossy(&out.stdout).into_owned();
        got.contains("hello")
    });
    assert!(reached, "the published port never answered: {got:?}");
    assert_eq!(got, "hello through -p\n");
    // A client on the host itself (loopback) too.
    let local = sh(&[
        "ip",
        "netns",
        "exec",
        &host,
        "curl",
        "-s",
        "-m",
        "5",
        "http://127.0.0.1:8080/",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&local.stdout),
        "hello through -p\n",
        "loopback client"
    );

    // VM → VM over the bridge, and VM → outside through NAT.
    let probe = ignis_ok(
        &env,
        &host,
        &["run", "--name", "probe", "--mac", "02:42:0a:3d:00:99", &img, "/bin/busybox", "sh", "-c",
          "/bin/busybox ping -c 2 -W 5 10.61.0.2 && echo VM-TO-VM-OK; /bin/busybox ping -c 2 -W 5 192.168.240.2 && echo NAT-OUT-OK; /bin/busybox sleep 600"],
    );
    let probe = probe.trim().to_string();
    assert!(
        console_has(&env, &host, "probe", "VM-TO-VM-OK"),
        "VM to VM: {}",
        ignis_ok(&env, &host, &["logs", "probe"])
    );
    assert!(
        console_has(&env, &host, "probe", "NAT-OUT-OK"),
        "NAT out: {}",
        ignis_ok(&env, &host, &["logs", "probe"])
    );
    // The client namespace saw the host's address, not the VM's (masquerade).
    let probe_ip = env.vm_json("probe")["spec"]["network"]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(probe_ip, "10.61.0.3");
    // --mac: the guest's eth0 has the address asked for.
    assert_eq!(
        ignis_ok(
            &env,
            &host,
            &[
                "exec",
                "probe",
                "/bin/busybox",
                "cat",
                "/sys/class/net/eth0/address"
            ]
        ),
        "02:42:0a:3d:00:99\n"
    );

    // A taken host port is refused before anything is made.
    let out = ignis_in(&env, &host, &["create", "-p", "8080:81", &img, "/bin/true"]);
    common::assert_exit(&out, 4);

    ignis_ok(&env, &host, &["rm", "-f", "web", "probe"]);
    let links = ok(&["ip", "-n", &host, "-o", "link"]);
    assert!(
        !links.contains(&ignis_net_tap(&web)) && !links.contains(&ignis_net_tap(&probe)),
        "TAPs left: {links}"
    );
    let rules = ok(&[
        "ip", "netns", "exec", &host, "nft", "list", "table", "ip", "ignis",
    ]);
    assert!(!rules.contains("dnat"), "rules left: {rules}");

    // Create/rm cycles: leases and ports come and go with the records.
    for i in 0..200 {
        let name = format!("c{i}");
        ignis_ok(
            &env,
            &host,
            &[
                "create",
                "--name",
                &name,
                "--size",
                "64MB",
                "-p",
                "9000:80",
                &img,
                "/bin/true",
            ],
        );
        ignis_ok(&env, &host, &["rm", &name]);
    }
    let db = rusqlite::Connection::open(env.root().join("state.db")).unwrap();
    let leases: i64 = db
        .query_row("SELECT COUNT(*) FROM leases", [], |r| r.get(0))
        .unwrap();
    let ports: i64 = db
        .query_row("SELECT COUNT(*) FROM ports", [], |r| r.get(0))
        .unwrap();
    assert_eq!((leases, ports), (0, 0));
    let rules = ok(&[
        "ip", "netns", "exec", &host, "nft", "list", "table", "ip", "ignis",
    ]);
    assert!(!rules.contains("dnat"), "rules left: {rules}");
    assert!(!ok(&["ip", "-n", &host, "-o", "link"]).contains(" ig-"));
    // Started VMs have a TAP (made by QEMU, on the bridge) that rm must
    // not leak: `run --no-wait` returns once the VMM runs, rm -f at once.
    for i in 0..20 {
        let id = ignis_ok(
            &env,
            &host,
            &[
                "run",
                "--no-wait",
                "--name",
                &format!("t{i}"),
                "--size",
                "64MB",
                "-p",
                "9000:80",
                &img,
                "/bin/busybox",
                "sleep",
                "600",
            ],
        );
        let tap = ignis_net_tap(id.trim());
        wait::until(
            &format!("{tap} on the bridge"),
            Duration::from_secs(30),
            || ok(&["ip", "-n", &host, "-o", "link", "show", "master", "ignis0"]).contains(&tap),
        );
        ignis_ok(&env, &host, &["rm", "-f", &format!("t{i}")]);
    }
    assert!(
        !ok(&["ip", "-n", &host, "-o", "link"]).contains(" ig-"),
        "a TAP outlived its VM"
    );
    let rules = ok(&[
        "ip", "netns", "exec", &host, "nft", "list", "table", "ip", "ignis",
    ]);
    assert!(!rules.contains("dnat"), "rules left: {rules}");
    // Prune removes the unused bridge and table: nothing of ignis is left.
    ignis_ok(&env, &host, &["system", "prune"]);
    assert!(!ok(&["ip", "-n", &host, "-o", "link"]).contains("ignis0"));
    assert!(!ok(&["ip", "netns", "exec", &host, "nft", "list", "tables"]).contains("ignis"));
}

/// IPv6 on the bridge (`IGNIS_SUBNET6`), in namespaces of its own: two
/// VMs ping each other over IPv6, one pings a client namespace through
/// NAT66, and `-p` (no host IP: both families) and `-p [::]:...` are
/// reached over IPv6 from the client namespace; rm leaves no IPv6 rule.
#[test]
fn ipv6_between_vms_nat66_and_published_ports() {
    let Some(env) = net_env() else { return };
    if let Err(why) = ignis_net::ipv6_available() {
        tier::skip(tier::NET, &format!("IPv6 is off on this host: {why}"));
        return;
    }
    let tag = std::process::id();
    let (host, client) = (format!("ignis-h6{tag}"), format!("ignis-c6{tag}"));
    let _cleanup = Cleanup {
        names: vec![host.clone(), client.clone()],
        root: env.root(),
    };
    ok(&["ip", "netns", "add", &host]);
    ok(&["ip", "netns", "add", &client]);
    ok(&[
        "ip", "link", "add", "veth-h", "netns", &host, "type", "veth", "peer", "name", "veth-c",
        "netns", &client,
    ]);
    for (ns, dev, addr) in [
        (&host, "veth-h", "fd99::1/64"),
        (&client, "veth-c", "fd99::2/64"),
    ] {
        ok(&[
            "ip", "-n", ns, "-6", "addr", "add", addr, "dev", dev, "nodad",
        ]);
        ok(&["ip", "-n", ns, "link", "set", dev, "up"]);
        ok(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    }
    let v6 = |args: &[&str]| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &host, env!("CARGO_BIN_EXE_ignis")])
            .args(args)
            .env("IGNIS_ROOT", env.root())
            .env("IGNIS_NETWORK", "bridge")
            .env("IGNIS_SUBNET6", "fd00:61::/64")
            .env("IGNIS_LOG", "warn");
        let out = c.output().expect("ignis");
        assert!(
            out.status.success(),
            "ignis {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let img = web_image(&env, "hello over IPv6\n");
    v6(&[
        "run",
        "--name",
        "web",
        "-p",
        "8080:80",
        "-p",
        "[::]:8081:80",
        "-p",
        "[::1]:8082:80",
        &img,
        "/bin/busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    let web = env.vm_json("web");
    assert_eq!(web["spec"]["network"]["ip6"], "fd00:61::2", "{web}");
    assert_eq!(web["spec"]["network"]["gateway6"], "fd00:61::1");
    let ps = v6(&["ps"]);
    assert!(
        ps.contains("fd00:61::2") && ps.contains("[::]:8081->80/tcp"),
        "{ps}"
    );
    let net: serde_json::Value = serde_json::from_str(&v6(&["network", "inspect"])).unwrap();
    assert_eq!(net["subnet6"], "fd00:61::/64", "{net}");
    assert_eq!(net["leases"][0]["ip6"], "fd00:61::2");

    // Client namespace → the host's IPv6 address → published port → VM.
    for url in ["http://[fd99::1]:8080/", "http://[fd99::1]:8081/"] {
        let mut got = String::new();
        let reached = wait::within(Duration::from_secs(30), || {
            let out = sh(&["ip", "netns", "exec", &client, "curl", "-s", "-m", "2", url]);
            got = String::from_utf8_lossy(&out.stdout).into_owned();
            got.contains("hello")
        });
        assert!(reached, "{url} never answered: {got:?}");
        assert_eq!(got, "hello over IPv6\n");
    }
    // Over IPv4 too: no host IP publishes on both families.
    let out = sh(&[
        "ip",
        "netns",
        "exec",
        &host,
        "curl",
        "-s",
        "-m",
        "5",
        "http://127.0.0.1:8080/",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello over IPv6\n");
    // [::1] from the host itself: the supervisor's relay.
    let out = sh(&[
        "ip",
        "netns",
        "exec",
        &host,
        "curl",
        "-s",
        "-m",
        "5",
        "http://[::1]:8082/",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello over IPv6\n",
        "[::1] published port from the host"
    );

    // VM → VM over IPv6 (--ip6), and VM → outside through NAT66.
    v6(&[
        "run",
        "--name",
        "probe",
        "--ip6",
        "fd00:61::99",
        &img,
        "/bin/busybox",
        "sh",
        "-c",
        "/bin/busybox ping -6 -c 2 -W 5 fd00:61::2 && echo V6-VM-TO-VM-OK; \
         /bin/busybox ping -6 -c 2 -W 5 fd99::2 && echo NAT66-OUT-OK; \
         /bin/busybox ip -6 addr; /bin/busybox ip -6 route; /bin/busybox sleep 600",
    ]);
    let logs = || v6(&["logs", "probe"]);
    assert!(
        wait::within(Duration::from_secs(60), || logs()
            .contains("V6-VM-TO-VM-OK")),
        "VM to VM over IPv6: {}",
        logs()
    );
    assert!(
        wait::within(Duration::from_secs(60), || logs().contains("NAT66-OUT-OK")),
        "NAT66 out: {}",
        logs()
    );
    assert_eq!(
        env.vm_json("probe")["spec"]["network"]["ip6"],
        "fd00:61::99"
    );

    // A fork gets an IPv6 address of its own: the agent replaces the
    // source's (which would be a duplicate on the bridge).
    v6(&["snapshot", "web", "--name", "web6"]);
    let fork = v6(&["fork", "web6"]).trim().to_string();
    let fork_ip6 = env.vm_json(&fork)["spec"]["network"]["ip6"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(fork_ip6, "fd00:61::3");
    let addrs = v6(&["exec", &fork, "/bin/busybox", "cat", "/proc/net/if_inet6"]);
    assert!(
        addrs.contains("fd000061000000000000000000000003")
            && !addrs.contains("fd000061000000000000000000000002"),
        "the fork's IPv6 addresses: {addrs}"
    );
    v6(&["rm", "-f", &fork]);

    v6(&["rm", "-f", "web", "probe"]);
    let rules = ok(&[
        "ip", "netns", "exec", &host, "nft", "list", "table", "ip6", "ignis",
    ]);
    assert!(!rules.contains("dnat"), "IPv6 rules left: {rules}");
    v6(&["system", "prune"]);
    assert!(!ok(&["ip", "netns", "exec", &host, "nft", "list", "tables"]).contains("ignis"));
}

fn ignis_net_tap(id: &str) -> String {
    format!("ig-{}", &id[..12])
}

/// A state root with the Debian kernel imported and a network namespace of
/// its own (removed, VMs first, when dropped); `None` after recording the
/// skip.
struct NsEnv {
    _cleanup: Cleanup,
    env: Env,
    ns: String,
}

impl NsEnv {
    fn new(tag: &str) -> Option<Self> {
        let env = net_env()?;
        let ns = format!("ignis-{tag}{}", std::process::id());
        let cleanup = Cleanup {
            names: vec![ns.clone()],
            root: env.root(),
        };
        ok(&["ip", "netns", "add", &ns]);
        ok(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        Some(Self {
            _cleanup: cleanup,
            env,
            ns,
        })
    }
}

/// The files of a dynamically linked host binary: itself and every library
/// `ldd` lists (copied to their own paths), for a test image.
fn binary_with_libs(bin: &str, dest: &str) -> Vec<(String, Vec<u8>, u32)> {
    let mut files = vec![(dest.to_string(), std::fs::read(bin).unwrap(), 0o755)];
    for line in ok(&["ldd", bin]).lines() {
        let path = match line.split("=>").nth(1) {
            Some(rest) => rest.split_whitespace().next().unwrap_or(""),
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if path.starts_with('/') {
            files.push((
                path.trim_start_matches('/').to_string(),
                std::fs::read(path).unwrap(),
                0o755,
            ));
        }
    }
    files
}

/// `--ssh` generates a key pair, `ignis ssh` logs in with it and pins the
/// host key read through the agent: a VM presenting another key is refused.
#[test]
fn ssh_with_a_generated_key_and_a_host_key_pinned_through_the_agent() {
    if let Some(m) = missing() {
        tier::skip(tier::NET, &m);
        return;
    }
    for (bin, why) in [
        (
            "/usr/sbin/dropbear",
            "dropbear missing (apt-get install dropbear-bin)",
        ),
        (
            "/usr/bin/ssh",
            "ssh missing (apt-get install openssh-client)",
        ),
    ] {
        if !std::path::Path::new(bin).exists() {
            tier::skip(tier::NET, why);
            return;
        }
    }
    let Some(t) = NsEnv::new("s") else { return };
    let (env, ns) = (&t.env, t.ns.clone());
    // An image that runs dropbear, with its host key (dropbear format) and
    // the OpenSSH public half where sshd keeps it.
    let keydir = env.dir.path().join("hostkey");
    std::fs::create_dir(&keydir).unwrap();
    let key = keydir.join("ed25519");
    ok(&["dropbearkey", "-t", "ed25519", "-f", key.to_str().unwrap()]);
    let public = |k: &std::path::Path| {
        ok(&["dropbearkey", "-y", "-f", k.to_str().unwrap()])
            .lines()
            .find(|l| l.starts_with("ssh-ed25519 "))
            .unwrap()
            .to_string()
    };
    let host_pub = public(&key);
    let mut files: Vec<(String, Vec<u8>, u32)> =
        binary_with_libs("/usr/sbin/dropbear", "usr/sbin/dropbear");
    files.extend([
        (
            "etc/passwd".to_string(),
            b"root:x:0:0:root:/root:/bin/sh\n".to_vec(),
            0o644,
        ),
        ("etc/shells".to_string(), b"/bin/sh\n".to_vec(), 0o644),
        (
            "etc/dropbear/ed25519".to_string(),
            std::fs::read(&key).unwrap(),
            0o600,
        ),
        (
            "etc/ssh/ssh_host_ed25519_key.pub".to_string(),
            format!("{host_pub}\n").into_bytes(),
            0o644,
        ),
        ("root/.profile".to_string(), b"".to_vec(), 0o644),
    ]);
    let files: Vec<(&str, Vec<u8>, u32)> = files
        .iter()
        .map(|(p, c, m)| (p.as_str(), c.clone(), *m))
        .collect();
    let img = env.busybox_image_with(
        "sshd:1",
        false,
        &files,
        &[
            "/usr/sbin/dropbear",
            "-F",
            "-E",
            "-s",
            "-r",
            "/etc/dropbear/ed25519",
            "-p",
            "22",
        ],
    );
    // --subnet on the command line: the bridge and the VM use it.
    ignis_ok(
        env,
        &ns,
        &[
            "--subnet",
            "10.62.0.0/24",
            "run",
            "--name",
            "sshbox",
            "--ssh",
            &img,
        ],
    );
    let v = env.vm_json("sshbox");
    assert_eq!(v["spec"]["network"]["ip"], "10.62.0.2", "{v}");
    assert!(ok(&["ip", "-n", &ns, "-4", "-o", "addr", "show", "ignis0"]).contains("10.62.0.1/24"));
    assert_eq!(v["spec"]["ssh"]["generated"], true, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let private = env.root().join("vms").join(&id).join("id_ed25519");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&private).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let mut last = None;
    wait::within(Duration::from_secs(30), || {
        let out = ignis_in(
            env,
            &ns,
            &[
                "ssh",
                "sshbox",
                "echo",
                "hello-over-ssh;",
                "cat",
                "/proc/sys/kernel/hostname",
            ],
        );
        let done = out.status.success();
        last = Some(out);
        done
    });
    let out = last.unwrap();
    assert!(
        out.status.success(),
        "ssh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello-over-ssh\nsshbox\n"
    );
    let known =
        std::fs::read_to_string(env.root().join("vms").join(&id).join("known_hosts")).unwrap();
    assert!(
        known.contains(host_pub.split_whitespace().nth(1).unwrap()),
        "{known}"
    );

    // The same from a client outside the VM's namespace (no route to
    // 10.62.0.0/24 from here): through a daemon in it, which serves the
    // keys and carries the connection (`ssh`'s ProxyCommand is
    // `ignis system ssh-proxy` over the API).
    let mut base = Command::new("ip");
    base.args(["netns", "exec", &ns, env!("CARGO_BIN_EXE_ignis")])
        .env("IGNIS_ROOT", env.root())
        .env("IGNIS_NETWORK", "bridge")
        .env("IGNIS_LOG", "warn");
    let daemon = common::daemon::Daemon::start_from(env, base, &[]);
    let tmp = env.dir.path().join("client-tmp");
    std::fs::create_dir(&tmp).unwrap();
    // Bounded: `timeout` ends the whole group (ssh and its proxy too).
    let remote = |args: &[&str]| {
        Command::new("timeout")
            .args(["120", env!("CARGO_BIN_EXE_ignis")])
            .env("IGNIS_ROOT", env.root())
            .env("IGNIS_NETWORK", "none")
            .env("IGNIS_LOG", "warn")
            .env("IGNIS_HOST", daemon.host())
            .env("TMPDIR", &tmp)
            .args(args)
            .output()
            .unwrap()
    };
    let out = remote(&[
        "ssh",
        "sshbox",
        "echo",
        "hello-through-the-daemon;",
        "cat",
        "/proc/sys/kernel/hostname",
    ]);
    assert!(
        out.status.success(),
        "remote ssh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello-through-the-daemon\nsshbox\n"
    );
    // Its exit code is the command's; the session's key files are gone.
    common::assert_exit(&remote(&["ssh", "sshbox", "exit", "7"]), 7);
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "no key file left on the client"
    );
    // boot-plan: the same bytes from the API.
    let local_plan = ignis_ok(env, &ns, &["__boot-plan", "sshbox"]);
    let out = remote(&["__boot-plan", "sshbox"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), local_plan);

    // The VM now claims another host key than the one dropbear presents:
    // ssh refuses (host key verification), never connects silently.
    let other = keydir.join("other");
    ok(&[
        "dropbearkey",
        "-t",
        "ed25519",
        "-f",
        other.to_str().unwrap(),
    ]);
    let other_pub = keydir.join("other.pub");
    std::fs::write(&other_pub, format!("{}\n", public(&other))).unwrap();
    ignis_ok(
        env,
        &ns,
        &[
            "cp",
            other_pub.to_str().unwrap(),
            "sshbox:/etc/ssh/ssh_host_ed25519_key.pub",
        ],
    );
    let out = ignis_in(env, &ns, &["ssh", "sshbox", "true"]);
    common::assert_exit(&out, 255);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Host key verification failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Through the daemon too: the keys it serves are the guest's claim.
    let out = remote(&["ssh", "sshbox", "true"]);
    common::assert_exit(&out, 255);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Host key verification failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(daemon);

    ignis_ok(env, &ns, &["rm", "-f", "sshbox"]);
    assert_eq!(env.count("vms"), 0, "key files removed with the VM");
}

/// A running Linux guest is snapshotted and forked five times: every fork
/// resumes the parent's memory (its file, its counter keeps counting), has
/// its own address, MAC, hostname and RNG state (reseeded through the
/// agent: without that every fork would draw the same random bytes), the
/// forks reach each other over the bridge, and the parent keeps running.
#[test]
fn snapshot_and_five_forks_with_their_own_identity() {
    let Some(t) = NsEnv::new("f") else { return };
    let (env, ns) = (&t.env, t.ns.clone());
    let img = env.busybox_image(
        "counter:1",
        false,
        &[],
        &[
            "/bin/busybox",
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 1; done",
        ],
    );
    ignis_ok(
        env,
        &ns,
        &[
            "run", "--name", "parent", "--memory", "256MB", "--size", "128MB", &img,
        ],
    );
    ignis_ok(
        env,
        &ns,
        &[
            "exec",
            "parent",
            "sh",
            "-c",
            "mkdir -p /root && echo from-parent > /root/data",
        ],
    );
    let out = ignis_in(env, &ns, &["snapshot", "parent", "--name", "tmpl"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = ignis_ok(env, &ns, &["fork", "tmpl", "-n", "5"]);
    let ids: Vec<String> = ids.split_whitespace().map(str::to_string).collect();
    assert_eq!(ids.len(), 5);
    // The image has busybox and sh only: applets run through `sh -c`.
    let sh_in = |vm: &str, cmd: &str| ignis_ok(env, &ns, &["exec", vm, "sh", "-c", cmd]);
    let counter = |vm: &str| -> u64 { sh_in(vm, "cat /tmp/counter").trim().parse().unwrap() };
    let mut ips = std::collections::BTreeSet::new();
    let mut macs = std::collections::BTreeSet::new();
    let mut randoms = std::collections::BTreeSet::new();
    for (i, id) in ids.iter().enumerate() {
        let v = env.vm_json(id);
        let name = format!("tmpl-{}", i + 1);
        assert_eq!(v["name"], name.as_str());
        let ip = v["spec"]["network"]["ip"].as_str().unwrap().to_string();
        assert_eq!(sh_in(&name, "cat /root/data"), "from-parent\n");
        assert_eq!(sh_in(&name, "hostname").trim(), name);
        let addr = sh_in(&name, "ip -4 -o addr show eth0");
        assert!(addr.contains(&format!("{ip}/")), "{name}: {addr}");
        let mac = sh_in(&name, "cat /sys/class/net/eth0/address");
        assert_eq!(mac.trim(), v["spec"]["network"]["mac"].as_str().unwrap());
        ips.insert(ip);
        macs.insert(mac);
        randoms.insert(sh_in(&name, "head -c 16 /dev/urandom | od -An -tx1"));
    }
    assert_eq!(
        (ips.len(), macs.len(), randoms.len()),
        (5, 5, 5),
        "{ips:?} {macs:?} {randoms:?}"
    );
    // The forks keep running the parent's workload from where it was.
    let c1 = counter("tmpl-1");
    assert!(
        wait::within(Duration::from_secs(30), || counter("tmpl-1") > c1),
        "the fork's counter does not advance"
    );
    // Forks reach each other over the bridge.
    let ip2 = env.vm_json(&ids[1])["spec"]["network"]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    let out = ignis_in(
        env,
        &ns,
        &[
            "exec",
            "tmpl-1",
            "sh",
            "-c",
            &format!("ping -c 1 -W 5 {ip2}"),
        ],
    );
    assert!(
        out.status.success(),
        "tmpl-1 cannot reach tmpl-2: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The parent is untouched.
    assert_eq!(sh_in("parent", "hostname").trim(), "parent");
    let p = env.vm_json("parent");
    assert_eq!(p["status"]["state"], "running");
    let tree = ignis_ok(env, &ns, &["snapshot", "ls", "--tree"]);
    assert!(tree.contains("vm tmpl-5"), "{tree}");

    let mut rm = vec!["rm", "-f", "parent"];
    rm.extend(ids.iter().map(String::as_str));
    ignis_ok(env, &ns, &rm);
    ignis_ok(env, &ns, &["snapshot", "rm", "tmpl"]);
    assert_eq!(env.count("vms"), 0);
    assert!(
        env.processes_with(&env.root().display().to_string())
            .is_empty(),
        "a VMM is left"
    );
    let shm: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter(|e| {
            ids.iter()
                .any(|id| e.file_name().to_string_lossy().contains(id.as_str()))
        })
        .collect();
    assert!(shm.is_empty(), "guest RAM files left in /dev/shm");
}

/// `ignis system prune` of state root `root` inside namespace `ns`.
fn prune_in(root: &std::path::Path, ns: &str, network: &str) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_ignis")])
        .args(["system", "prune"])
        .env("IGNIS_ROOT", root)
        .env("IGNIS_NETWORK", network)
        .env("IGNIS_LOG", "warn")
        .output()
        .expect("ignis")
}

/// Issue 17, bug 2: the bridge and the nftables table are shared by every
/// state root on the host. Root A's VM serves on `-p 18080:80`; `system
/// prune` of root B (no VM at all) must leave them alone, and A's port
/// keeps answering. Once A's VM is gone, B's prune removes both. All in a
/// namespace this test made: the host's own `ignis0` is never seen.
#[test]
fn prune_of_one_root_keeps_the_bridge_another_root_uses() {
    let Some(t) = NsEnv::new("p") else { return };
    let (env, ns) = (&t.env, t.ns.clone());
    let img = web_image(env, "still served\n");
    run_web(env, &ns, "18080:80", &img);
    let get = || {
        let out = sh(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "curl",
            "-s",
            "-m",
            "2",
            "http://127.0.0.1:18080/",
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ignis_testkit::wait::until("A's published port", Duration::from_secs(60), || {
        get() == "still served\n"
    });
    let b = Env::new();
    let out = prune_in(&b.root(), &ns, "bridge");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        ok(&["ip", "-n", &ns, "-o", "link"]).contains("ignis0"),
        "root B's prune removed the bridge root A's VM is on"
    );
    let rules = ok(&[
        "ip", "netns", "exec", &ns, "nft", "list", "table", "ip", "ignis",
    ]);
    assert!(
        rules.contains("dnat"),
        "root B's prune removed A's rules: {rules}"
    );
    assert_eq!(get(), "still served\n", "A's published port died");
    // Nothing uses them any more; a root that does not network
    // (IGNIS_NETWORK=none, as every test outside a namespace of its own)
    // still leaves them alone, B's prune removes them.
    ignis_ok(env, &ns, &["rm", "-f", "web"]);
    assert!(prune_in(&b.root(), &ns, "none").status.success());
    assert!(ok(&["ip", "-n", &ns, "-o", "link"]).contains("ignis0"));
    let out = prune_in(&b.root(), &ns, "bridge");
    assert!(out.status.success());
    assert!(!ok(&["ip", "-n", &ns, "-o", "link"]).contains("ignis0"));
    assert!(!ok(&["ip", "netns", "exec", &ns, "nft", "list", "tables"]).contains("ignis"));
}

/// A tiny DNS server for the test, in namespace `ns` (its own thread
/// joins it): answers `web.test` A with 10.1.2.3, anything else NXDOMAIN,
/// on each of `addrs` port 53, until `stop`.
#[allow(unsafe_code)]
fn dns_server(
    ns: &str,
    addrs: &[&str],
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let (ns, addrs): (String, Vec<String>) =
        (ns.into(), addrs.iter().map(|a| a.to_string()).collect());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
        // SAFETY: setns on a valid descriptor; it moves this thread only.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns");
        let socks: Vec<std::net::UdpSocket> = addrs
            .iter()
            .map(|a| std::net::UdpSocket::bind((a.as_str(), 53)).unwrap())
            .collect();
        for s in &socks {
            s.set_nonblocking(true).unwrap();
        }
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 512];
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            for s in &socks {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    if let Some(r) = dns_answer(&buf[..n]) {
                        let _ = s.send_to(&r, from);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    ready_rx.recv().unwrap();
    t
}

/// The answer to a one-question query (RFC 1035 wire format).
fn dns_answer(q: &[u8]) -> Option<Vec<u8>> {
    let mut i = 12;
    let mut labels = Vec::new();
    while *q.get(i)? != 0 {
        let l = usize::from(q[i]);
        labels.push(String::from_utf8_lossy(q.get(i + 1..i + 1 + l)?).to_lowercase());
        i += 1 + l;
    }
    let qtype = u16::from_be_bytes([*q.get(i + 1)?, *q.get(i + 2)?]);
    let end = i + 5;
    let mut r = q.get(..end)?.to_vec();
    let ours = labels == ["web", "test"];
    r[2] = q[2] | 0x80; // a response, opcode and RD kept
    r[3] = 0x80 | if ours { 0 } else { 3 }; // RA; NOERROR or NXDOMAIN
    let answers: u8 = (ours && qtype == 1).into();
    r[4..12].copy_from_slice(&[0, 1, 0, answers, 0, 0, 0, 0]);
    if answers == 1 {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 1, 2, 3]);
    }
    Some(r)
}

/// DNS on a stock host, whose resolver is a stub on 127.0.0.53: with
/// systemd-resolved's upstream list, a VM asks the upstream server; without
/// one (a dnsmasq-like loopback resolver), the VM asks the bridge's gateway,
/// where its supervisor relays to the stub. Both resolve a name the test's
/// DNS server serves; `--add-host` and `--dns-search` reach the guest.
#[test]
fn dns_through_a_stub_resolver_on_loopback() {
    let Some(env) = net_env() else { return };
    let ns = format!("ignis-d{}", std::process::id());
    let _cleanup = Cleanup {
        names: vec![ns.clone()],
        root: env.root(),
    };
    ok(&["ip", "netns", "add", &ns]);
    ok(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
    // The upstream server's address, on an interface of its own.
    ok(&[
        "ip", "-n", &ns, "link", "add", "up0", "type", "veth", "peer", "name", "up1",
    ]);
    ok(&[
        "ip",
        "-n",
        &ns,
        "addr",
        "add",
        "192.168.241.1/24",
        "dev",
        "up0",
    ]);
    for dev in ["up0", "up1"] {
        ok(&["ip", "-n", &ns, "link", "set", dev, "up"]);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = dns_server(&ns, &["127.0.0.53", "192.168.241.1"], stop.clone());
    let dir = env.dir.path();
    let stub = dir.join("resolv.conf");
    std::fs::write(&stub, "nameserver 127.0.0.53\noptions edns0\n").unwrap();
    let upstream = dir.join("resolved.conf");
    std::fs::write(&upstream, "nameserver 192.168.241.1\n").unwrap();
    let img = env.busybox_image("dns:1", false, &[], &[]);
    let probe = "/bin/busybox cat /etc/resolv.conf /etc/hosts; /bin/busybox nslookup web.test && echo RESOLVED; /bin/busybox sleep 600";
    let run = |name: &str, upstream: &std::path::Path, extra: &[&str]| {
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &ns,
            env!("CARGO_BIN_EXE_ignis"),
            "run",
            "-d",
            "--name",
            name,
        ])
        .args(extra)
        .args([&img, "/bin/busybox", "sh", "-c", probe])
        .env("IGNIS_ROOT", env.root())
        .env("IGNIS_NETWORK", "bridge")
        .env("IGNIS_LOG", "warn")
        .env("IGNIS_RESOLV_CONF", &stub)
        .env("IGNIS_RESOLVED_UPSTREAM", upstream);
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(
        "resolved",
        &upstream,
        &["--add-host", "db:10.9.9.9", "--dns-search", "test"],
    );
    run("relayed", &dir.join("no-such-file"), &[]);
    for vm in ["resolved", "relayed"] {
        let seen = wait::within(Duration::from_secs(180), || {
            ignis_ok(&env, &ns, &["logs", vm]).contains("RESOLVED")
        });
        let logs = ignis_ok(&env, &ns, &["logs", vm]);
        assert!(seen && logs.contains("10.1.2.3"), "{vm}: {logs}");
    }
    let logs = ignis_ok(&env, &ns, &["logs", "resolved"]);
    assert!(logs.contains("nameserver 192.168.241.1"), "{logs}");
    assert!(
        logs.contains("search test") && logs.contains("10.9.9.9\tdb"),
        "{logs}"
    );
    let logs = ignis_ok(&env, &ns, &["logs", "relayed"]);
    assert!(
        logs.contains("nameserver 10.61.0.1"),
        "the gateway relays: {logs}"
    );
    for vm in ["resolved", "relayed"] {
        ignis_ok(&env, &ns, &["rm", "-f", vm]);
    }
    // The relay went with its VM: the gateway's port 53 is free.
    let ss = ok(&["ip", "netns", "exec", &ns, "ss", "-uln"]);
    assert!(!ss.contains("10.61.0.1:53"), "{ss}");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    server.join().unwrap();
}

/// The macvtap links of VMs (`mv<id>N`) in namespace `ns`.
fn macvtaps_in(ns: &str) -> Vec<String> {
    ok(&["ip", "-n", ns, "-o", "link", "show", "type", "macvtap"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

#[test]
fn macvtap_puts_the_vm_on_a_host_segment_with_its_own_mac() {
    let Some(env) = net_env() else { return };
    let tag = std::process::id();
    let (host, lan) = (format!("ignis-mh{tag}"), format!("ignis-ml{tag}"));
    let _cleanup = Cleanup {
        names: vec![host.clone(), lan.clone()],
        root: env.root(),
    };
    ok(&["ip", "netns", "add", &host]);
    ok(&["ip", "netns", "add", &lan]);
    // The host's "eth1" (no address of its own) on a segment where a peer
    // lives at 192.0.2.1.
    ok(&[
        "ip", "link", "add", "lan0", "netns", &host, "type", "veth", "peer", "name", "peer0",
        "netns", &lan,
    ]);
    ok(&[
        "ip",
        "-n",
        &lan,
        "addr",
        "add",
        "192.0.2.1/24",
        "dev",
        "peer0",
    ]);
    for (ns, dev) in [
        (&host, "lan0"),
        (&lan, "peer0"),
        (&host, "lo"),
        (&lan, "lo"),
    ] {
        ok(&["ip", "-n", ns, "link", "set", dev, "up"]);
    }
    let img = web_image(&env, "hello over macvtap\n");

    // A host interface that does not exist: refused, nothing made.
    let out = ignis_in(
        &env,
        &host,
        &[
            "run",
            "-d",
            "--name",
            "bad",
            "--network",
            "macvtap:nosuch9",
            &img,
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no interface nosuch9"), "{err}");
    assert!(ignis_ok(&env, &host, &["ps", "-a", "-q"]).trim().is_empty());
    assert!(macvtaps_in(&host).is_empty());

    // The VM: a static address on the segment, busybox httpd on :80.
    ignis_ok(
        &env,
        &host,
        &[
            "run",
            "-d",
            "--name",
            "mv",
            "--network",
            "macvtap:lan0,ip=192.0.2.10/24,gateway=192.0.2.1",
            &img,
            "/bin/busybox",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/www",
        ],
    );
    let v = env.vm_json("mv");
    let id = v["id"].as_str().unwrap().to_string();
    let n = &v["spec"]["network"];
    assert_eq!(n["mode"], "macvtap", "{n}");
    assert_eq!(n["link"], "lan0", "{n}");
    assert_eq!(n["ip"], "192.0.2.10", "{n}");
    let mac = n["mac"].as_str().unwrap().to_string();
    assert!(
        ignis_ok(&env, &host, &["ps"]).contains("192.0.2.10"),
        "ps shows the address"
    );
    // The macvtap, on lan0, with the VM's MAC.
    let links = macvtaps_in(&host);
    assert_eq!(links.len(), 1, "{links:?}");
    assert!(
        links[0].starts_with(&format!("mv{}", &id[..11])),
        "{links:?}"
    );
    let detail = ok(&["ip", "-n", &host, "-d", "link", "show", &links[0]]);
    assert!(
        detail.contains(&format!("{}@lan0", links[0]))
            && detail.contains(&mac)
            && detail.contains("macvtap mode bridge"),
        "{detail}"
    );

    // The peer on the segment reaches the VM (the host's stack is not in
    // the way: lan0 has no address), and sees the VM's own MAC.
    let mut got = String::new();
    let reached = wait::within(Duration::from_secs(120), || {
        let out = sh(&[
            "ip",
            "netns",
            "exec",
            &lan,
            "curl",
            "-s",
            "-m",
            "2",
            "http://192.0.2.10/",
        ]);
        got = String::from_utf8_lossy(&out.stdout).into_owned();
        got.contains("hello")
    });
    assert!(reached, "the VM never answered on the segment: {got:?}");
    assert_eq!(got, "hello over macvtap\n");
    let neigh = ok(&["ip", "-n", &lan, "neigh", "show", "192.0.2.10"]);
    assert!(
        neigh.contains(&mac),
        "the peer learnt the VM's MAC: {neigh}"
    );
    // And the VM reaches the peer.
    let out = ignis_in(
        &env,
        &host,
        &[
            "exec",
            "mv",
            "/bin/busybox",
            "ping",
            "-c",
            "1",
            "-W",
            "5",
            "192.0.2.1",
        ],
    );
    assert!(
        out.status.success(),
        "VM to peer: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Clones would all claim the fixed address: refused before anything
    // (not even the snapshot a fork of a running VM takes first).
    let out = ignis_in(&env, &host, &["fork", "mv", "-n", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("fixed address on a macvtap"),
        "{err}"
    );
    assert!(ignis_ok(&env, &host, &["snapshot", "ls", "-q"])
        .trim()
        .is_empty());
    assert_eq!(
        ignis_ok(&env, &host, &["ps", "-a", "-q"]).lines().count(),
        1
    );

    // `stats` counts the macvtap's traffic (the page the peer fetched).
    let stats: serde_json::Value = serde_json::from_str(&ignis_ok(
        &env,
        &host,
        &["stats", "--no-stream", "-o", "json", "mv"],
    ))
    .unwrap();
    let row = &stats[0];
    assert!(
        row["netTxBytes"].as_u64().unwrap() > 0 && row["netRxBytes"].as_u64().unwrap() > 0,
        "{stats}"
    );

    // Stopped, the macvtap goes (it would outlive QEMU by itself); started
    // again, it comes back and the VM answers again.
    ignis_ok(&env, &host, &["stop", "-t", "0", "mv"]);
    assert!(macvtaps_in(&host).is_empty(), "stop left the macvtap");
    ignis_ok(&env, &host, &["start", "mv"]);
    assert_eq!(macvtaps_in(&host).len(), 1);
    assert!(
        wait::within(Duration::from_secs(120), || {
            let out = sh(&[
                "ip",
                "netns",
                "exec",
                &lan,
                "curl",
                "-s",
                "-m",
                "2",
                "http://192.0.2.10/",
            ]);
            String::from_utf8_lossy(&out.stdout).contains("hello")
        }),
        "no answer after a restart"
    );

    // rm: no link, no device node, no VM directory.
    ignis_ok(&env, &host, &["rm", "-f", "mv"]);
    assert!(macvtaps_in(&host).is_empty(), "rm left the macvtap");
    assert!(!env.root().join("vms").join(&id).exists());

    // A supervisor killed once the VMM ran leaves the macvtap; system
    // check names it and prune removes it.
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &host, env!("CARGO_BIN_EXE_ignis")])
        .args([
            "run",
            "-d",
            "--name",
            "crash",
            "--network",
            "macvtap:lan0",
            &img,
            "/bin/busybox",
            "sleep",
            "600",
        ])
        .env("IGNIS_ROOT", env.root())
        .env("IGNIS_LOG", "warn")
        .env("IGNIS_FAULT", "supervise:vmm-started");
    let out = c.output().unwrap();
    assert!(!out.status.success(), "run reports the supervisor's death");
    let left = macvtaps_in(&host);
    assert_eq!(left.len(), 1, "the crash left its macvtap: {left:?}");
    let check = ignis_in(&env, &host, &["system", "check"]);
    assert_eq!(check.status.code(), Some(1), "check reports a problem");
    let text = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(
        text.contains("stale-tap") && text.contains(&left[0]),
        "{text}"
    );
    ignis_ok(&env, &host, &["system", "prune"]);
    assert!(macvtaps_in(&host).is_empty(), "prune left the macvtap");
    ignis_ok(&env, &host, &["rm", "-f", "crash"]);
}
