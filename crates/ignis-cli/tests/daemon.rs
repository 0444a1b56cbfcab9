//! `ignis daemon` through the real binary (fake VMM): the API gives what
//! the in-process path gives, TCP needs the token, metrics and events flow;
//! the reconcilers follow a manifest directory and Git repositories (a bare
//! repo over file:// and over `git daemon` on 127.0.0.1), report bad
//! manifests without touching the others, write status without looping,
//! and converge after the daemon is SIGKILLed mid-reconcile; one GitOps
//! cycle drives a real Linux guest on QEMU (skipped without QEMU).

#![cfg(feature = "fake-vmm")]

mod common;

use common::daemon::Daemon;
use common::Env;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn wait_for(what: &str, secs: u64, f: impl FnMut() -> bool) {
    common::wait::until(what, Duration::from_secs(secs), f);
}

fn setup() -> Env {
    Env::fake_app().0
}

fn vm_manifest(name: &str, running: bool) -> String {
    format!("apiVersion: ignis.dev/v1alpha1\nkind: VM\nmetadata:\n  name: {name}\nspec:\n  image: app:1\n  backend: fake\n  diskSize: 64MB\n  network: {{mode: none}}\n  running: {running}\n")
}

fn state(env: &Env, vm: &str) -> Option<String> {
    let out = env.run(&["inspect", vm]);
    out.status.success().then(|| {
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["status"]["state"]
            .as_str()
            .unwrap()
            .to_string()
    })
}

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (body.to_string(), code.to_string())
}

#[test]
fn api_matches_the_in_process_path_and_guards_tcp() {
    let env = setup();
    env.fake_vm("create", "x", "app:1");
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let token = "a-test-token-of-32-characters-ok";
    let mut d = Daemon::start(&env, &["--listen", &listen, "--token", token]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let remote = |args: &[&str]| {
        env.cmd()
            .env("IGNIS_HOST", d.host())
            .args(args)
            .output()
            .unwrap()
    };
    for args in [
        &["ps", "-a", "-o", "json"][..],
        &["inspect", "x"],
        &["ps", "-a"],
    ] {
        let r = remote(args);
        assert!(
            r.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&r.stdout), env.ok(args), "{args:?}");
    }
    let (a, b) = (remote(&["inspect", "nope"]), env.run(&["inspect", "nope"]));
    assert_eq!((a.status.code(), b.status.code()), (Some(3), Some(3)));
    // Problem details; TCP needs the token.
    let sock = d.socket.display().to_string();
    let (body, code) = curl(&["--unix-socket", &sock, "http://x/v1/vms/nope"]);
    assert_eq!(code, "404");
    let p: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (p["status"].as_u64(), p["title"].as_str()),
        (Some(404), Some("Not found"))
    );
    let (_, code) = curl(&[&format!("http://{listen}/v1/vms")]);
    assert_eq!(code, "401");
    let (_, code) = curl(&[
        "-H",
        "Authorization: Bearer wrong-token-of-32-characters-xx",
        &format!("http://{listen}/v1/vms"),
    ]);
    assert_eq!(code, "401");
    let (body, code) = curl(&[
        "-H",
        &format!("Authorization: Bearer {token}"),
        &format!("http://{listen}/v1/vms?all=true"),
    ]);
    assert_eq!(code, "200", "{body}");
    let (body, _) = curl(&["--unix-socket", &sock, "http://x/openapi.json"]);
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(api["paths"]["/v1/apply"].is_object());
    let (body, _) = curl(&["--unix-socket", &sock, "http://x/metrics"]);
    assert!(body.contains("ignis_vms{state=\"created\"} 1"), "{body}");
    // Events: a start through the API shows on the stream. The stream
    // subscribes before it answers: once its headers came, nothing is missed.
    let headers = env.dir.path().join("events.headers");
    let mut events = Command::new("curl")
        .args(["-sN", "--max-time", "60", "-D"])
        .arg(&headers)
        .args(["--unix-socket", &sock, "http://x/events"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the event stream to answer", 20, || {
        std::fs::read_to_string(&headers).is_ok_and(|h| h.contains(" 200"))
    });
    let r = remote(&["start", "x"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let mut out = String::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(events.stdout.take().unwrap())) {
        out.push_str(&line.unwrap());
        out.push('\n');
        if out.contains("event: start") && out.contains("\"name\":\"x\"") {
            break;
        }
    }
    let _ = events.kill();
    let _ = events.wait();
    assert!(
        out.contains("event: start") && out.contains("\"name\":\"x\""),
        "{out}"
    );
    // Per-VM series: its state, and its VMM's CPU time and resident
    // memory (the fake VMM is a real process).
    let (body, _) = curl(&["--unix-socket", &sock, "http://x/metrics"]);
    let series = |name: &str| {
        body.lines()
            .find(|l| l.starts_with(&format!("{name}{{")) && l.contains("vm=\"x\""))
            .unwrap_or_else(|| panic!("no {name} for x in:\n{body}"))
            .to_string()
    };
    let st = series("ignis_vm_state");
    assert!(
        st.contains("state=\"running\"") && st.ends_with(" 1"),
        "{st}"
    );
    let rss = series("ignis_vm_vmm_resident_bytes");
    let rss: u64 = rss.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(rss > 0, "{body}");
    series("ignis_vm_cpu_seconds");
    assert!(series("ignis_vm_restarts").ends_with(" 0"), "{body}");
    // Graceful shutdown leaves VMs running.
    assert!(d.sigterm().success());
    assert_eq!(state(&env, "x").as_deref(), Some("running"));
    env.ok(&["rm", "-f", "x"]);
}

#[test]
fn a_manifest_directory_is_followed() {
    let env = setup();
    let dir = env.dir.path().join("manifests");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("keep.yaml"), vm_manifest("keep", true)).unwrap();
    let _d = Daemon::start(
        &env,
        &["--manifests", dir.to_str().unwrap(), "--interval", "1"],
    );
    wait_for("keep to run", 20, || {
        state(&env, "keep").as_deref() == Some("running")
    });
    std::fs::write(dir.join("web.yaml"), vm_manifest("web", true)).unwrap();
    wait_for("web to run", 20, || {
        state(&env, "web").as_deref() == Some("running")
    });
    std::fs::write(dir.join("web.yaml"), vm_manifest("web", false)).unwrap();
    wait_for("web to stop", 20, || {
        state(&env, "web").as_deref() == Some("exited")
    });
    // A bad file is reported and changes nothing, not even the removal of
    // what it might have named.
    std::fs::write(
        dir.join("bad.yaml"),
        vm_manifest("bad", true).replace("image:", "imagez:"),
    )
    .unwrap();
    let seen = || {
        std::fs::read_to_string(env.dir.path().join("daemon.log"))
            .unwrap_or_default()
            .matches("bad.yaml")
            .count()
    };
    let before = seen();
    std::fs::remove_file(dir.join("web.yaml")).unwrap();
    // Two rounds reported the bad file after web.yaml went: the second
    // began after the first ended, so a whole round saw the removal.
    wait_for("two rounds to report bad.yaml", 30, || seen() >= before + 2);
    assert_eq!(
        state(&env, "web").as_deref(),
        Some("exited"),
        "nothing pruned while a file is bad"
    );
    assert_eq!(state(&env, "keep").as_deref(), Some("running"));
    assert!(state(&env, "bad").is_none());
    std::fs::remove_file(dir.join("bad.yaml")).unwrap();
    wait_for("web to be removed", 20, || state(&env, "web").is_none());
    assert_eq!(state(&env, "keep").as_deref(), Some("running"));
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

/// A bare repository and a working clone that pushes to it.
fn repo(env: &Env) -> (PathBuf, PathBuf) {
    let bare = env.dir.path().join("repo.git");
    let work = env.dir.path().join("work");
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "--bare", "-q"]);
    git(
        env.dir.path(),
        &[
            "clone",
            "-q",
            bare.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    git(&work, &["checkout", "-q", "-b", "main"]);
    (bare, work)
}

/// Commits everything and pushes, as a human would: on top of whatever
/// the daemon pushed meanwhile (its status commits).
fn push(work: &Path, msg: &str) {
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", msg, "--allow-empty"]);
    for attempt in 0.. {
        if git_ok(work, &["ls-remote", "--exit-code", "origin", "main"]) {
            git(work, &["pull", "-q", "--rebase", "origin", "main"]);
        }
        if git_ok(work, &["push", "-q", "origin", "main"]) {
            return;
        }
        assert!(attempt < 5, "cannot push {msg}");
    }
}

/// Waits until the branch has not moved for 4 s (several reconcile rounds
/// at `--interval 1`); a daemon committing in a loop never gets there.
fn wait_history_still(bare: &Path) {
    let count = || git(bare, &["rev-list", "--count", "main"]);
    let mut last = (count(), Instant::now());
    wait_for("the history to stay still for 4 s", 60, || {
        let n = count();
        if n != last.0 {
            last = (n, Instant::now());
        }
        last.1.elapsed() > Duration::from_secs(4)
    });
}

/// Whether git succeeds (for commands that may lose a race).
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

/// Waits until the daemon's log mentions `needle` at least `n` times: that
/// many reconcile rounds have seen it.
fn wait_log(env: &Env, needle: &str, n: usize) {
    let log = env.dir.path().join("daemon.log");
    wait_for(&format!("{n} log lines with {needle}"), 30, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches(needle)
            .count()
            >= n
    });
}

fn gitops_cycle(env: &Env, url: &str, bare: &Path, work: &Path) {
    std::fs::create_dir_all(work.join("vms")).unwrap();
    std::fs::write(work.join("vms/api.yaml"), vm_manifest("api", true)).unwrap();
    std::fs::write(work.join("vms/db.yaml"), vm_manifest("db", true)).unwrap();
    push(work, "two vms");
    let _d = Daemon::start(
        env,
        &[
            "--gitops",
            url,
            "--branch",
            "main",
            "--path",
            "vms",
            "--interval",
            "1",
            "--write-status",
        ],
    );
    wait_for("api to run", 30, || {
        state(env, "api").as_deref() == Some("running")
    });
    wait_for("db to run", 30, || {
        state(env, "db").as_deref() == Some("running")
    });
    // The observed status comes back as a commit, and follows every change.
    wait_for("a status commit", 30, || {
        status_in(bare, "api").is_some_and(|s| s.contains("state: running"))
    });
    git(work, &["pull", "-q", "--rebase", "origin", "main"]);
    let status = status_in(bare, "api").unwrap();
    assert!(status.contains("state: running"), "{status}");
    std::fs::write(work.join("vms/api.yaml"), vm_manifest("api", false)).unwrap();
    push(work, "stop api");
    wait_for("api to stop", 30, || {
        state(env, "api").as_deref() == Some("exited")
    });
    wait_for("api's status to follow", 30, || {
        status_in(bare, "api").is_some_and(|s| s.contains("state: exited"))
    });
    std::fs::write(work.join("vms/broken.yaml"), "apiVersion: ignis.dev/v1alpha1\nkind: VM\nmetadata: {name: broken}\nspec: {image: app:1, cpus: lots}\n").unwrap();
    push(work, "a bad manifest");
    // Two rounds saw the bad file: the second began after the first ended.
    wait_log(env, "broken.yaml", 2);
    assert!(state(env, "broken").is_none());
    assert_eq!(
        state(env, "db").as_deref(),
        Some("running"),
        "others untouched"
    );
    assert!(
        status_in(bare, "db").is_some(),
        "no status pruned while a file is bad"
    );
    std::fs::remove_file(work.join("vms/broken.yaml")).unwrap();
    std::fs::remove_file(work.join("vms/db.yaml")).unwrap();
    push(work, "remove db");
    wait_for("db to be removed", 30, || state(env, "db").is_none());
    wait_for("db's status file to go", 30, || {
        status_in(bare, "db").is_none()
    });
    // No commit loop: the history stops growing once the state is steady.
    wait_history_still(bare);
}

#[test]
fn gitops_over_file_url() {
    let env = setup();
    let (bare, work) = repo(&env);
    gitops_cycle(&env, &format!("file://{}", bare.display()), &bare, &work);
}

#[test]
fn gitops_over_git_daemon_on_loopback() {
    let env = setup();
    let (bare, work) = repo(&env);
    let gd = GitDaemon::start(&env);
    gitops_cycle(&env, &gd.url("repo.git"), &bare, &work);
}

/// `git daemon` on 127.0.0.1 serving the environment's directory, pushes
/// allowed (and, unlike libgit2's file:// transport, hooks run).
struct GitDaemon {
    child: Child,
    port: u16,
}

impl GitDaemon {
    fn start(env: &Env) -> Self {
        let port = common::free_port();
        use std::os::unix::process::CommandExt;
        let child = Command::new("git")
            .process_group(0)
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--enable=receive-pack",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", env.dir.path().display()))
            .arg(env.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let gd = Self { child, port };
        wait_for("git daemon", 10, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        gd
    }

    fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }
}

/// git daemon forks a worker per connection: stop the whole group.
impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

/// SIGKILL in the middle of creating ten VMs, then a restart: the end state
/// is the desired one, with no VM twice and no stray files.
#[test]
fn a_killed_daemon_converges_after_restart_without_duplicates() {
    let env = setup();
    let dir = env.dir.path().join("manifests");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..10 {
        std::fs::write(
            dir.join(format!("v{i}.yaml")),
            vm_manifest(&format!("v{i}"), true),
        )
        .unwrap();
    }
    // The daemon SIGKILLs itself mid-reconcile, right after recording the
    // first VM (created, not started): deterministic, however loaded the
    // machine is.
    let mut d = Daemon::start_with(
        &env,
        &["--manifests", dir.to_str().unwrap(), "--interval", "1"],
        &[("IGNIS_FAULT", "apply:vm-created")],
    );
    let status = d.child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "killed at the fault point");
    let partial = env.ok(&["ps", "-a", "-Q"]).lines().count();
    assert!(
        partial >= 1,
        "at least the VM of the fault point is recorded"
    );
    assert!(
        partial < 10,
        "killed too late to test anything ({partial} VMs)"
    );
    let _d = Daemon::start(
        &env,
        &["--manifests", dir.to_str().unwrap(), "--interval", "1"],
    );
    wait_for("all ten running", 60, || {
        (0..10).all(|i| state(&env, &format!("v{i}")).as_deref() == Some("running"))
    });
    let ps: Vec<serde_json::Value> =
        serde_json::from_str(&env.ok(&["ps", "-a", "-o", "json"])).unwrap();
    assert_eq!(ps.len(), 10, "no duplicates");
    // VMs being created when the daemon died left directories without a
    // record: `system check` names them, `system prune` removes them.
    if env.count("vms") > 10 {
        let check = env.run(&["system", "check"]);
        assert_eq!(check.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&check.stdout).contains("orphan-dir"));
        env.ok(&["system", "prune"]);
    }
    assert_eq!(env.count("vms"), 10, "no stray VM directories after prune");
    assert!(env.run(&["system", "check"]).status.success());
}

/// TCP over TLS: the CLI reaches the daemon through `--host https://...`
/// trusting only the CA in IGNIS_TLS_CA, still with the token; a client
/// without the CA, with another CA, or speaking plain HTTP gets nothing;
/// a bad key file is refused at start with a clear error.
#[test]
fn the_tcp_api_over_tls_with_a_pinned_ca() {
    let env = setup();
    env.fake_vm("create", "t", "app:1");
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = env.dir.path().join("cert.pem");
    let key = env.dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let other_ca = env.dir.path().join("other.pem");
    std::fs::write(&other_ca, other.cert.pem()).unwrap();

    // A key that is not PEM: refused before serving, naming the file.
    std::fs::write(env.dir.path().join("bad.pem"), "nope").unwrap();
    let out = env
        .cmd()
        .args(["daemon", "--socket"])
        .arg(env.dir.path().join("bad.sock"))
        .args([
            "--listen",
            "127.0.0.1:1",
            "--token",
            "a-test-token-of-32-characters-ok",
        ])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(env.dir.path().join("bad.pem"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--tls-key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let token = "a-test-token-of-32-characters-ok";
    let _d = Daemon::start(
        &env,
        &[
            "--listen",
            &listen,
            "--token",
            token,
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    wait_for("the TLS listener", 20, || {
        std::net::TcpStream::connect(&listen).is_ok()
    });
    let remote = |ca: Option<&Path>, args: &[&str]| {
        let mut c = env.cmd();
        c.env("IGNIS_HOST", format!("https://{listen}"))
            .env("IGNIS_TOKEN", token);
        match ca {
            Some(ca) => c.env("IGNIS_TLS_CA", ca),
            None => c.env_remove("IGNIS_TLS_CA"),
        };
        c.args(args).output().unwrap()
    };
    let ok = remote(Some(&cert), &["ps", "-a", "--format", "{{.Name}}"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "t");

    let no_ca = remote(None, &["ps", "-a"]);
    assert!(!no_ca.status.success());
    assert!(
        String::from_utf8_lossy(&no_ca.stderr).contains("IGNIS_TLS_CA"),
        "{}",
        String::from_utf8_lossy(&no_ca.stderr)
    );
    let wrong = remote(Some(&other_ca), &["ps", "-a"]);
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("TLS"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    // Plain HTTP to the TLS port: no answer a client could use.
    let (_, code) = curl(&[
        "-H",
        &format!("Authorization: Bearer {token}"),
        &format!("http://{listen}/v1/vms"),
    ]);
    assert_ne!(code, "200");
    // TLS without the token: 401.
    let (_, code) = curl(&[
        "--cacert",
        cert.to_str().unwrap(),
        &format!("https://{listen}/v1/vms"),
    ]);
    assert_eq!(code, "401");
}

/// GitOps with a real Linux guest (QEMU; TCG here): a manifest pushed with
/// `running: true` becomes a booted VM whose agent answers `exec`; flipped
/// to false it is stopped cleanly; its file deleted, it is removed. Skips
/// with one line where QEMU or the kernel package is missing.
#[test]
fn gitops_drives_a_linux_guest_on_qemu() {
    let Some(env) = common::linux_env() else {
        return;
    };
    let img = env.busybox_image("app:1", false, &[], &["/bin/busybox", "sleep", "100000"]);
    let (bare, work) = repo(&env);
    std::fs::create_dir_all(work.join("vms")).unwrap();
    let manifest = |running: bool| {
        format!(
            "apiVersion: ignis.dev/v1alpha1\nkind: VM\nmetadata: {{name: g1}}\nspec: {{image: \"{img}\", backend: qemu, memory: 256MB, diskSize: 128MB, network: {{mode: none}}, running: {running}}}\n"
        )
    };
    std::fs::write(work.join("vms/g1.yaml"), manifest(true)).unwrap();
    push(&work, "g1 running");
    let d = Daemon::start(
        &env,
        &[
            "--gitops",
            &format!("file://{}", bare.display()),
            "--branch",
            "main",
            "--interval",
            "1",
        ],
    );
    wait_for("g1 running with its agent", 180, || {
        let v: serde_json::Value = match env.run(&["inspect", "g1", "-o", "json"]) {
            o if o.status.success() => serde_json::from_slice(&o.stdout).unwrap(),
            _ => return false,
        };
        v["status"]["state"] == "running" && v["status"]["health"] == "healthy"
    });
    let out = env.ok(&["exec", "g1", "/bin/busybox", "uname", "-s"]);
    assert_eq!(out.trim(), "Linux", "a real Linux guest answers");
    // Its series in /metrics, from a real QEMU and its cgroup: running,
    // the agent healthy, CPU spent booting, the VM's memory and QEMU's.
    let sock = d.socket.display().to_string();
    let (body, _) = curl(&["--unix-socket", &sock, "http://x/metrics"]);
    let value = |name: &str| -> f64 {
        let line = body
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{")) && l.contains("vm=\"g1\""))
            .unwrap_or_else(|| panic!("no {name} for g1 in:\n{body}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let running = body.lines().find(|l| {
        l.starts_with("ignis_vm_state{")
            && l.contains("vm=\"g1\"")
            && l.contains("state=\"running\"")
    });
    assert!(running.is_some_and(|l| l.ends_with(" 1")), "{body}");
    assert_eq!(value("ignis_vm_agent_healthy"), 1.0, "{body}");
    assert!(value("ignis_vm_cpu_seconds") > 0.0, "{body}");
    assert!(
        value("ignis_vm_memory_bytes") > f64::from(16u32 << 20),
        "{body}"
    );
    assert!(
        value("ignis_vm_vmm_resident_bytes") > f64::from(16u32 << 20),
        "{body}"
    );

    std::fs::write(work.join("vms/g1.yaml"), manifest(false)).unwrap();
    push(&work, "g1 stopped");
    wait_for("g1 stopped", 120, || {
        state(&env, "g1").as_deref() == Some("exited")
    });
    let v = env.vm_json("g1");
    assert!(
        v["status"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("stopped"),
        "{v}"
    );

    std::fs::remove_file(work.join("vms/g1.yaml")).unwrap();
    push(&work, "g1 removed");
    // The record goes first, then the VM's directory (the daemon removes
    // it while this looks): both, or the wait fails.
    wait_for("g1 and its directory removed", 60, || {
        state(&env, "g1").is_none() && env.count("vms") == 0
    });
}

/// `--socket-group`: the socket is root's and the group's (0660), nobody
/// else's; an unknown group is refused before anything starts.
#[test]
fn the_socket_can_be_shared_with_one_group() {
    let env = setup();
    let d = Daemon::start(&env, &["--socket-group", "daemon"]);
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let m = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o660);
    assert_eq!(m.gid(), 1, "group daemon (gid 1)");
    let out = env
        .cmd()
        .args(["daemon", "--socket-group", "no-such-group-here", "--socket"])
        .arg(env.dir.path().join("x.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such group"));
}

/// kill, logs, snapshot and fork through --host give what the in-process
/// path gives (fake VMM: its "memory" and "state" are small files).
#[test]
fn kill_logs_snapshot_and_fork_through_the_daemon() {
    let env = setup();
    env.fake_vm("run", "f", "app:1");
    let d = Daemon::start(&env, &[]);
    let host = d.host();
    let remote = |args: &[&str]| env.ok_with(&[("IGNIS_HOST", &host)], args);
    assert_eq!(remote(&["logs", "f"]), env.ok(&["logs", "f"]));
    let snap = remote(&["snapshot", "f", "--name", "s"]);
    let snaps: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshot", "ls", "-o", "json"])).unwrap();
    assert_eq!(snaps[0]["id"].as_str().unwrap(), snap.trim());
    let ids: Vec<String> = remote(&["fork", "s", "-n", "2", "--name-prefix", "c"])
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(state(&env, "c-1").as_deref(), Some("running"));
    assert_eq!(state(&env, "c-2").as_deref(), Some("running"));
    assert_eq!(remote(&["kill", "c-1"]).trim(), ids[0]);
    assert_eq!(state(&env, "c-1").as_deref(), Some("exited"));
    // logs -f through the daemon: a chunked body that ends with the VM (an
    // exited one: at once), the same bytes as in-process.
    assert_eq!(remote(&["logs", "-f", "c-1"]), env.ok(&["logs", "c-1"]));
    env.ok(&["rm", "-f", "f", "c-1", "c-2"]);
}

/// `.ignis/status/<node>/<vm>.yaml` on the branch as the bare repository
/// has it (the node: this host's name).
fn status_in(bare: &Path, vm: &str) -> Option<String> {
    let files = Command::new("git")
        .current_dir(bare)
        .args(["ls-tree", "-r", "--name-only", "main", ".ignis/status"])
        .output()
        .unwrap();
    let suffix = format!("/{vm}.yaml");
    let path = String::from_utf8_lossy(&files.stdout)
        .lines()
        .find(|l| l.ends_with(&suffix) && l.matches('/').count() == 3)?
        .to_string();
    let out = Command::new("git")
        .current_dir(bare)
        .args(["show", &format!("main:{path}")])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn gitops_args<'a>(url: &'a str, path: &'a str) -> Vec<&'a str> {
    vec![
        "--gitops",
        url,
        "--branch",
        "main",
        "--path",
        path,
        "--interval",
        "1",
        "--write-status",
    ]
}

/// Issue 17, bug 1: status commits keep coming after the first one. Three
/// successive pushes each create a VM and each VM's status file appears;
/// a human pushing while the daemon writes status loses nothing; a second
/// daemon (another state root, another path) writes its status to the same
/// branch and neither erases the other's files; once steady, nobody
/// commits.
#[test]
fn gitops_status_follows_every_push_a_human_and_a_second_daemon() {
    let env = setup();
    let (bare, work) = repo(&env);
    let url = format!("file://{}", bare.display());
    std::fs::create_dir_all(work.join("vms")).unwrap();
    std::fs::write(work.join("vms/v1.yaml"), vm_manifest("v1", true)).unwrap();
    push(&work, "v1");
    let _d = Daemon::start(&env, &gitops_args(&url, "vms"));
    for i in 1..=3 {
        let vm = format!("v{i}");
        if i > 1 {
            git(&work, &["pull", "-q", "--rebase", "origin", "main"]);
            std::fs::write(work.join(format!("vms/{vm}.yaml")), vm_manifest(&vm, true)).unwrap();
            push(&work, &vm);
        }
        wait_for(&format!("{vm} to run"), 30, || {
            state(&env, &vm).as_deref() == Some("running")
        });
        wait_for(&format!(".ignis/status/{vm}.yaml on main"), 30, || {
            status_in(&bare, &vm).is_some_and(|s| s.contains("state: running"))
        });
    }
    // A human pushes right behind a change whose status the daemon is
    // about to write: both land, in one linear history, nothing forced.
    git(&work, &["pull", "-q", "--rebase", "origin", "main"]);
    std::fs::write(work.join("vms/v1.yaml"), vm_manifest("v1", false)).unwrap();
    push(&work, "stop v1");
    for n in 0..3 {
        std::fs::write(work.join("NOTES"), format!("note {n}\n")).unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", &format!("human note {n}")]);
        let pushed = Command::new("git")
            .current_dir(&work)
            .args(["push", "-q", "origin", "main"])
            .output()
            .unwrap();
        if !pushed.status.success() {
            // The daemon's status commit came first: as any human, rebase.
            git(&work, &["pull", "-q", "--rebase", "origin", "main"]);
            git(&work, &["push", "-q", "origin", "main"]);
        }
    }
    wait_for("v1's status to say exited", 30, || {
        status_in(&bare, "v1").is_some_and(|s| s.contains("state: exited"))
    });
    let log = git(&bare, &["log", "--format=%s", "main"]);
    for n in 0..3 {
        assert!(log.contains(&format!("human note {n}")), "{log}");
    }
    // A second daemon, another root, another directory of the repository.
    let other = setup();
    git(&work, &["pull", "-q", "--rebase", "origin", "main"]);
    std::fs::create_dir_all(work.join("staging")).unwrap();
    std::fs::write(work.join("staging/s1.yaml"), vm_manifest("s1", true)).unwrap();
    push(&work, "staging s1");
    let _d2 = Daemon::start(&other, &gitops_args(&url, "staging"));
    wait_for("s1's status", 30, || {
        status_in(&bare, "s1").is_some_and(|s| s.contains("state: running"))
    });
    assert!(state(&env, "s1").is_none() && state(&other, "v1").is_none());
    // Each daemon still owns its VMs' files: the first one's change shows
    // next to the second one's file.
    git(&work, &["pull", "-q", "--rebase", "origin", "main"]);
    std::fs::remove_file(work.join("vms/v2.yaml")).unwrap();
    push(&work, "remove v2");
    wait_for("v2's status file to go", 30, || {
        status_in(&bare, "v2").is_none()
    });
    for vm in ["v1", "v3", "s1"] {
        assert!(status_in(&bare, vm).is_some(), "{vm}'s status was erased");
    }
    // Steady state: two daemons, no commit ping-pong.
    wait_history_still(&bare);
    let authors = git(&bare, &["log", "--format=%an", "main"]);
    assert!(
        authors.lines().filter(|a| *a == "ignis-gitops").count() >= 5,
        "one status commit per change at least: {authors}"
    );
}

/// A status push the remote refuses (a pre-receive hook, through git
/// daemon: libgit2's file:// transport runs no hooks) is retried, then
/// logged at warn and counted in `/metrics`; the VMs converge regardless.
#[test]
fn gitops_status_failures_are_logged_and_counted() {
    let env = setup();
    let (bare, work) = repo(&env);
    std::fs::create_dir_all(work.join("vms")).unwrap();
    std::fs::write(work.join("vms/r1.yaml"), vm_manifest("r1", true)).unwrap();
    push(&work, "r1");
    let hook = bare.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\necho 'status refused by policy' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let gd = GitDaemon::start(&env);
    let url = gd.url("repo.git");
    let d = Daemon::start(&env, &gitops_args(&url, "vms"));
    wait_for("r1 to run", 30, || {
        state(&env, "r1").as_deref() == Some("running")
    });
    wait_log(&env, "status not written", 1);
    let log = std::fs::read_to_string(env.dir.path().join("daemon.log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("status not written"))
        .unwrap();
    assert!(line.contains("WARN"), "{line}");
    let (body, _) = curl(&[
        "--unix-socket",
        &d.socket.display().to_string(),
        "http://x/metrics",
    ]);
    assert!(
        body.contains(r#"ignis_operations_total{op="gitops_status",result="error"}"#),
        "{body}"
    );
    assert!(status_in(&bare, "r1").is_none());
    // The remote accepts again: the next round writes the status.
    std::fs::remove_file(&hook).unwrap();
    wait_for("r1's status", 30, || status_in(&bare, "r1").is_some());
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The JSON events one `ignis events` printed.
fn events_of(out: &std::process::Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "ignis events: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `ignis events` (Docker's `docker events`) both ways: through the daemon
/// with filters, `--until` ending the stream and `--since` replaying the
/// daemon's history; in-process from the records, refusing `--since`.
#[test]
fn events_are_followed_filtered_and_replayed() {
    let (env, img) = Env::fake_app();
    let d = Daemon::start(&env, &[]);
    let host = d.host();
    let until = (unix_now() + 6).to_string();
    let follow = env
        .cmd()
        .args(["--host", &host, "events", "-o", "json", "--until", &until])
        .args(["--filter", "name=web", "--filter", "type=start"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The stream is open before the VMs change (the daemon looks every
    // second).
    std::thread::sleep(Duration::from_millis(1500));
    env.fake_vm("run", "web", &img);
    env.fake_vm("run", "db", &img);
    let got = events_of(&follow.wait_with_output().unwrap());
    assert_eq!(got.len(), 1, "only web's start: {got:?}");
    assert_eq!(got[0]["type"], "start");
    assert_eq!(got[0]["name"], "web");
    assert_eq!(got[0]["object"], "vm");

    // The history: both VMs' creation and start, then the stream ends.
    let past = env.run(&[
        "--host",
        &host,
        "events",
        "-o",
        "json",
        "--since",
        "5m",
        "--until",
        &unix_now().to_string(),
    ]);
    let past = events_of(&past);
    let seen: Vec<(String, String)> = past
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for want in [
        ("create", "web"),
        ("start", "web"),
        ("create", "db"),
        ("start", "db"),
    ] {
        assert!(
            seen.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} not in {seen:?}"
        );
    }
    // The human form, with a template.
    let line = env.ok(&[
        "--host",
        &host,
        "events",
        "--since",
        "5m",
        "--until",
        &unix_now().to_string(),
        "--filter",
        "name=db",
        "--filter",
        "type=create",
        "--format",
        "{{.Type}} {{.Name}}",
    ]);
    assert_eq!(line.trim(), "create db");

    // In-process: the records are watched from now on.
    let until = (unix_now() + 5).to_string();
    let local = env
        .cmd()
        .args([
            "events",
            "-o",
            "json",
            "--until",
            &until,
            "--filter",
            "type=delete",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    env.ok(&["rm", "-f", "web"]);
    let got = events_of(&local.wait_with_output().unwrap());
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0]["type"].as_str(), got[0]["name"].as_str()),
        (Some("delete"), Some("web"))
    );
    let refused = env.run(&["events", "--since", "5m"]);
    assert_eq!(refused.status.code(), Some(5));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("ignis daemon"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // Bad filters are refused before anything is followed.
    let bad = env.run(&["events", "--filter", "colour=red"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown key"));
}

/// `Accept: application/x-ndjson` on an import: a line per bar move (the
/// unpack bars and the disk spinner `ignis image import` draws), then the
/// result; a bad archive ends with its problem (the status line is 200:
/// the stream had started). Without the header: the JSON reply as before.
#[test]
fn imports_stream_their_progress_as_ndjson() {
    let env = setup();
    let d = Daemon::start(&env, &[]);
    let sock = d.socket.display().to_string();
    let archive = env.dir.path().join("app.tar");
    let layout = env.dir.path().join("img-app_1");
    let out = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // A new image (its layers unpacked, its disk built), not a new name.
    env.ok(&["image", "rm", "app:1"]);
    env.ok(&["system", "prune"]);
    let import = |name: &str, file: &Path, ndjson: bool| {
        let mut args = vec![
            "--unix-socket".to_string(),
            sock.clone(),
            "-X".into(),
            "POST".into(),
            "--data-binary".into(),
            format!("@{}", file.display()),
            "-H".into(),
            "Content-Type: application/octet-stream".into(),
        ];
        if ndjson {
            args.extend(["-H".into(), "Accept: application/x-ndjson".into()]);
        }
        args.push(format!("http://x/v1/images/import?name={name}"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&args)
    };
    let (body, code) = import("streamed:1", &archive, true);
    assert_eq!(code, "200", "{body}");
    let lines: Vec<serde_json::Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let last = lines.last().unwrap();
    assert!(
        last["result"][0]["names"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("docker.io/library/streamed:1")),
        "{body}"
    );
    let events = &lines[..lines.len() - 1];
    let unpack_done = events.iter().any(|e| {
        e["status"].as_str().unwrap().starts_with("unpack ")
            && e["done"] == true
            && e["current"] == e["total"]
            && e["total"].as_u64().unwrap() > 0
    });
    assert!(unpack_done, "{body}");
    let spinner = events.iter().any(|e| {
        e["status"] == "build ext4 image disk" && e["total"].is_null() && e["done"] == true
    });
    assert!(spinner, "{body}");
    // The same image through the CLI's remote path (no terminal: no bars,
    // the plain reply) and the record exists.
    assert!(env.ok(&["image", "ls"]).contains("streamed"));

    let junk = env.dir.path().join("junk.tar");
    std::fs::write(&junk, b"not an archive").unwrap();
    let (body, code) = import("junk:1", &junk, true);
    assert_eq!(code, "200", "{body}");
    let last: serde_json::Value = serde_json::from_str(body.lines().last().unwrap()).unwrap();
    assert_eq!(last["problem"]["code"], "invalid", "{body}");
    assert_eq!(last["problem"]["status"], 400, "{body}");
    let (plain, code) = import("junk:1", &junk, false);
    assert_eq!(code, "400", "{plain}");
    let plain: serde_json::Value = serde_json::from_str(&plain).unwrap();
    assert_eq!(plain["code"], last["problem"]["code"]);
    assert_eq!(plain["title"], last["problem"]["title"]);
}
