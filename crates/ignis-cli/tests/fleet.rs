//! A fleet: three `ignis daemon --gitops` on one bare repository, each with
//! its own state root in its own network namespace (separate hosts), the
//! fake VMM. VMs land only on the nodes their manifests select, a changed
//! `nodeName` moves a VM, the status of every node arrives (no push lost
//! to the others'), `ignis fleet ps` lists every VM and `ignis fleet
//! nodes` shows a SIGKILLed daemon's node as STALE. Root only (network
//! namespaces): skipped with one line otherwise.

#![cfg(feature = "fake-vmm")]

mod common;

use common::{tier, Env};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Polls `f` every 300 ms (each try runs several processes) until it holds.
fn poll(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    common::wait::until(what, Duration::from_secs(secs), || {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
        false
    });
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn git_ok(dir: &Path, args: &[&str]) -> bool {
    Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .output()
        .unwrap()
        .status
        .success()
}

/// Commits everything and pushes on top of what the daemons pushed.
fn push(work: &Path, msg: &str) {
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", msg]);
    for attempt in 0.. {
        if git_ok(work, &["ls-remote", "--exit-code", "origin", "main"]) {
            git(work, &["pull", "-q", "--rebase", "origin", "main"]);
        }
        let out = Command::new("git")
            .current_dir(work)
            .args(["push", "-q", "origin", "main"])
            .output()
            .unwrap();
        if out.status.success() {
            return;
        }
        // The daemons commit status and heartbeats meanwhile: as any
        // human, pull again and retry.
        assert!(
            attempt < 60,
            "cannot push {msg}: {}; {} commits on main",
            String::from_utf8_lossy(&out.stderr),
            git(work, &["rev-list", "--count", "origin/main"]).trim()
        );
    }
}

/// A VM on the fake backend, with `placement` lines added to its spec.
fn vm(name: &str, placement: &str) -> String {
    format!("apiVersion: ignis.dev/v1alpha1\nkind: VM\nmetadata:\n  name: {name}\nspec:\n  image: app:1\n  backend: fake\n  diskSize: 64MB\n  network: {{mode: none}}\n{placement}")
}

/// One host: a state root, a network namespace, a daemon in it.
struct Host {
    env: Env,
    ns: String,
    node: String,
    daemon: Option<Child>,
}

impl Host {
    fn new(node: &str) -> Self {
        let env = Env::fake_app().0;
        let ns = format!("ignis-fl{}-{}", node, std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &ns])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            env,
            ns,
            node: node.to_string(),
            daemon: None,
        }
    }

    fn start(&mut self, url: &str, label: &str) {
        let log = self.env.dir.path().join("daemon.log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, env!("CARGO_BIN_EXE_ignis")])
            .env("IGNIS_ROOT", self.env.root())
            .env("IGNIS_NETWORK", "none")
            .env("IGNIS_LOG", "info")
            .env_remove("IGNIS_FAULT")
            .arg("daemon")
            .arg("--socket")
            .arg(self.env.dir.path().join("d.sock"))
            .args(["--gitops", url, "--branch", "main", "--path", "vms"])
            .args(["--interval", "1", "--heartbeat", "5", "--write-status"])
            .args(["--node", &self.node, "--node-label", label])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        self.daemon = Some(child);
    }

    /// The daemon runs inside the namespace (`ip netns exec` execs it).
    fn in_namespace(&self) -> bool {
        let pid = self.daemon.as_ref().unwrap().id();
        let ours = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
        let named = std::fs::metadata(format!("/run/netns/{}", self.ns)).ok();
        let host = std::fs::read_link("/proc/self/ns/net").ok();
        use std::os::unix::fs::MetadataExt;
        match (ours, named, host) {
            (Some(o), Some(n), Some(h)) => {
                o != h && o.to_string_lossy().contains(&n.ino().to_string())
            }
            _ => false,
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The VMs of this host with their state.
    fn vms(&self) -> BTreeSet<(String, String)> {
        let out = self.env.run(&["ps", "-a", "-o", "json"]);
        assert!(out.status.success());
        let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        v.iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap().to_string(),
                    r["status"]["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    fn running(&self, names: &[&str]) -> bool {
        let want: BTreeSet<(String, String)> = names
            .iter()
            .map(|n| (n.to_string(), "running".to_string()))
            .collect();
        self.vms() == want
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill9();
        // The VMs go with the Env; then the namespace.
        let ids = self.env.run(&["ps", "-a", "-Q"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.env.run(&["rm", "-f", id]);
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// `path -> content` of every status file on main.
fn status_files(bare: &Path) -> BTreeSet<String> {
    git(
        bare,
        &["ls-tree", "-r", "--name-only", "main", ".ignis/status"],
    )
    .lines()
    .map(str::to_string)
    .collect()
}

fn show(bare: &Path, path: &str) -> Option<String> {
    let out = Command::new("git")
        .current_dir(bare)
        .args(["show", &format!("main:{path}")])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ignis fleet ARGS`, its cache clone in the test's directory.
fn fleet_cmd(env: &Env, args: &[&str]) -> std::process::Output {
    env.cmd()
        .env("XDG_CACHE_HOME", env.dir.path().join("cache"))
        .arg("fleet")
        .args(args)
        .output()
        .unwrap()
}

fn fleet_ok(env: &Env, args: &[&str]) -> String {
    let out = fleet_cmd(env, args);
    assert!(
        out.status.success(),
        "fleet {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fleet(env: &Env, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&fleet_ok(env, &[args, &["-o", "json"]].concat())).unwrap()
}

/// (name, node, state) of `fleet ps`.
fn fleet_ps(env: &Env, url: &str) -> BTreeSet<(String, String, String)> {
    fleet(env, &["ps", "--repo", url, "--path", "vms"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["node"].as_str().unwrap_or("<none>").to_string(),
                v["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn set(rows: &[(&str, &str, &str)]) -> BTreeSet<(String, String, String)> {
    rows.iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

#[test]
fn three_hosts_one_repository() {
    if !rustix::process::geteuid().is_root() {
        tier::skip(
            tier::ROOT,
            "not root (network namespaces need CAP_SYS_ADMIN)",
        );
        return;
    }
    let _ran = tier::ran(tier::ROOT);
    let top = Env::new();
    let bare = top.dir.path().join("repo.git");
    let work = top.dir.path().join("work");
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "--bare", "-q"]);
    git(
        top.dir.path(),
        &[
            "clone",
            "-q",
            bare.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    git(&work, &["checkout", "-q", "-b", "main"]);
    std::fs::create_dir_all(work.join("vms")).unwrap();
    // solo: exactly n2. east: two copies over the zone=east nodes (n1, n3
    // by name). every: no placement, every node. gpu: no node matches.
    std::fs::write(work.join("vms/solo.yaml"), vm("solo", "  nodeName: n2\n")).unwrap();
    std::fs::write(
        work.join("vms/east.yaml"),
        vm("east", "  nodeSelector: {zone: east}\n  replicas: 2\n"),
    )
    .unwrap();
    std::fs::write(work.join("vms/every.yaml"), vm("every", "")).unwrap();
    std::fs::write(
        work.join("vms/gpu.yaml"),
        vm("gpu", "  nodeSelector: {gpu: \"yes\"}\n"),
    )
    .unwrap();
    push(&work, "a fleet");
    let url = format!("file://{}", bare.display());

    let mut hosts: Vec<Host> = ["n1", "n2", "n3"].iter().map(|n| Host::new(n)).collect();
    for (h, zone) in hosts.iter_mut().zip(["east", "west", "east"]) {
        h.start(&url, &format!("zone={zone}"));
    }
    for h in &hosts {
        poll(&format!("{}'s daemon in {}", h.node, h.ns), 20, || {
            h.in_namespace()
        });
    }

    // Each host runs exactly what is placed on it.
    let want = [
        vec!["east-1", "every"],
        vec!["every", "solo"],
        vec!["east-2", "every"],
    ];
    poll("each node to run exactly its VMs", 120, || {
        hosts.iter().zip(&want).all(|(h, w)| h.running(w))
    });

    // The status of all three nodes arrives, each in its own directory,
    // none lost to another node's push.
    let files = |w: &[Vec<&str>]| -> BTreeSet<String> {
        hosts
            .iter()
            .zip(w)
            .flat_map(|(h, vms)| {
                vms.iter()
                    .map(move |v| format!(".ignis/status/{}/{v}.yaml", h.node))
            })
            .collect()
    };
    let expected = files(&want);
    poll("every node's status on main", 120, || {
        status_files(&bare) == expected
            && expected
                .iter()
                .all(|f| show(&bare, f).is_some_and(|s| s.contains("state: running")))
    });
    for h in &hosts {
        let rec = show(&bare, &format!(".ignis/nodes/{}.yaml", h.node)).unwrap();
        assert!(rec.contains("kind: Node") && rec.contains("zone:"), "{rec}");
    }
    let log = git(&bare, &["log", "--format=%s", "main"]);
    for n in ["n1", "n2", "n3"] {
        assert!(
            log.contains(&format!("observed status of node {n}")),
            "{n} committed: {log}"
        );
    }

    // `fleet ps` lists every VM with its node; gpu runs nowhere.
    poll("fleet ps to list every VM", 60, || {
        fleet_ps(&top, &url)
            == set(&[
                ("east-1", "n1", "running"),
                ("east-2", "n3", "running"),
                ("every", "n1", "running"),
                ("every", "n2", "running"),
                ("every", "n3", "running"),
                ("gpu", "<none>", "unschedulable"),
                ("solo", "n2", "running"),
            ])
    });
    let table = fleet_ok(&top, &["ps", "--repo", &url, "--path", "vms"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("solo") && l.contains("n2")),
        "{table}"
    );

    // Moving solo is one line: it stops on n2 and starts on n3.
    let moved = vm("solo", "  nodeName: n3\n");
    std::fs::write(work.join("vms/solo.yaml"), moved).unwrap();
    push(&work, "move solo to n3");
    let want = [
        vec!["east-1", "every"],
        vec!["every"],
        vec!["east-2", "every", "solo"],
    ];
    poll("solo to move from n2 to n3", 120, || {
        hosts.iter().zip(&want).all(|(h, w)| h.running(w))
    });
    let expected = files(&want);
    poll("solo's status to move with it", 120, || {
        status_files(&bare) == expected
    });
    poll("fleet ps to show solo on n3", 60, || {
        fleet_ps(&top, &url).contains(&(
            "solo".to_string(),
            "n3".to_string(),
            "running".to_string(),
        ))
    });

    // n1 dies: its node turns STALE (others stay Ready), its VMs are shown
    // stale. A heartbeat is 5 s here (each one a commit: a human pushing
    // to a fleet beating every second would lose most races); stale after
    // 2 missed.
    hosts[0].kill9();
    let nodes_args = ["nodes", "--repo", &url, "--stale-after", "2"];
    poll("n1 stale, n2 and n3 not", 120, || {
        let v = fleet(&top, &nodes_args);
        let stale: Vec<(String, bool)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["metadata"]["name"].as_str().unwrap().to_string(),
                    n["stale"].as_bool().unwrap(),
                )
            })
            .collect();
        stale
            == [
                ("n1".to_string(), true),
                ("n2".to_string(), false),
                ("n3".to_string(), false),
            ]
    });
    let nodes = fleet(&top, &nodes_args);
    let n2 = &nodes[1];
    assert!(n2["status"]["capacity"]["cpus"].as_u64().unwrap() >= 1);
    assert!(n2["status"]["capacity"]["memoryBytes"].as_u64().unwrap() > 0);
    assert!(
        n2["status"]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b.as_str().unwrap().starts_with("fake")),
        "{n2}"
    );
    let ps = fleet(
        &top,
        &["ps", "--repo", &url, "--path", "vms", "--stale-after", "2"],
    );
    for v in ps.as_array().unwrap() {
        if v["node"] == "n1" {
            assert_eq!(v["stale"], true, "{v}");
        }
    }
    let table = fleet_ok(&top, &["nodes", "--repo", &url, "--stale-after", "2"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("n1") && l.contains("STALE")),
        "{table}"
    );
    // Bad input names the flag and starts nothing.
    let out = top
        .cmd()
        .args(["daemon", "--node", "no/slash", "--socket"])
        .arg(top.dir.path().join("x.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--node 'no/slash'"));
    let out = top
        .cmd()
        .args(["daemon", "--node-label", "zone", "--socket"])
        .arg(top.dir.path().join("x.sock"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--node-label"));
    assert!(!top.root().exists(), "no state root made for a bad flag");
    let out = fleet_cmd(&top, &["ps", "--repo", "file:///nonexistent/repo.git"]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
