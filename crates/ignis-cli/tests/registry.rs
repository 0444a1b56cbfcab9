//! Live test against a real registry: Debian's `docker-registry` on
//! 127.0.0.1 (a free port), an image built by the test pushed with skopeo,
//! pulled with `ignis image pull`, and the ext4 checked with debugfs.

mod common;

use common::{check_small_disk, small_spec, Env};
use ignis_testkit::OciWriter;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Registry {
    child: Child,
    addr: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn missing(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
}

/// Prints the skip line and returns true when the live-registry tools are missing.
fn registry_tools_missing() -> bool {
    for tool in ["docker-registry", "skopeo"] {
        if missing(tool) {
            common::tier::skip(
                common::tier::REGISTRY,
                &format!("{tool} not installed (apt-get install docker-registry skopeo)"),
            );
            return true;
        }
    }
    false
}

fn start_registry(dir: &std::path::Path) -> Registry {
    start_registry_with(dir, "")
}

/// `extra` is appended to the registry config (e.g. an auth section).
fn start_registry_with(dir: &std::path::Path, extra: &str) -> Registry {
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.join("registry-data").display()
        ) + extra,
    )
    .unwrap();
    // The access log (one line per request, on stdout): what was uploaded.
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(std::fs::File::create(dir.join("registry-access.log")).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("start docker-registry");
    let reg = Registry { child, addr };
    common::wait::until(
        &format!("docker-registry on {}", reg.addr),
        Duration::from_secs(20),
        || {
            let Ok(mut s) = TcpStream::connect(&reg.addr) else {
                return false;
            };
            let _ =
                s.write_all(format!("GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", reg.addr).as_bytes());
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            let code = buf.split(' ').nth(1).unwrap_or("");
            code == "200" || code == "401"
        },
    );
    reg
}

/// Blob uploads the registry started for `repo` so far (access log; only
/// the fake-VMM test uses it).
#[cfg(feature = "fake-vmm")]
fn uploads(dir: &std::path::Path, repo: &str) -> usize {
    std::fs::read_to_string(dir.join("registry-access.log"))
        .unwrap_or_default()
        .matches(&format!("\"POST /v2/{repo}/blobs/uploads/"))
        .count()
}

fn push(layout: &std::path::Path, dest: &str) {
    push_as(layout, dest, None)
}

fn push_as(layout: &std::path::Path, dest: &str, creds: Option<&str>) {
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
    if let Some(c) = creds {
        cmd.arg(format!("--dest-creds={c}"));
    }
    let out = cmd
        .arg(format!("oci:{}", layout.display()))
        .arg(format!("docker://{dest}"))
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pull_from_a_real_registry_builds_a_correct_disk() {
    if registry_tools_missing() {
        return;
    }
    let env = Env::for_tier(common::tier::REGISTRY);
    let reg = start_registry(env.dir.path());
    let layout = env.dir.path().join("layout");
    OciWriter::write_dir(
        &OciWriter::oci_files(&small_spec("app", "from-registry")),
        &layout,
    )
    .unwrap();
    let reference = format!("{}/acme/app:1.0", reg.addr);
    push(&layout, &reference);

    // Plain HTTP is refused unless the registry is marked insecure.
    let out = env.run(&["image", "pull", &reference]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--insecure-registry"), "{err}");
    assert!(env.image_ids().is_empty());

    // Killed once the blobs are stored (the pull:blobs-stored fault
    // point): no record, and prune leaves no orphan blob or scratch.
    let out = env.run_fault(
        "pull:blobs-stored",
        &[
            "--insecure-registry",
            &reg.addr,
            "image",
            "pull",
            &reference,
        ],
    );
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(9),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(env.image_ids().is_empty(), "no record after the kill");
    assert!(!env.blobs().is_empty(), "the point is after the blobs");
    env.ok(&["system", "prune"]);
    assert!(env.blobs().is_empty(), "orphan blobs {:?}", env.blobs());
    assert_eq!(env.count("tmp"), 0, "scratch left");
    assert_eq!(env.count("disks"), 0, "orphan disk");

    let id = env.ok_id(&[
        "--insecure-registry",
        &reg.addr,
        "image",
        "pull",
        &reference,
    ]);
    let rec: serde_json::Value =
        serde_json::from_str(&env.ok(&["image", "inspect", &reference])).unwrap();
    assert_eq!(rec["id"], id.as_str());
    assert_eq!(rec["names"][0], reference.as_str());
    assert_eq!(rec["config"]["cmd"][0], "/bin/sh");
    check_small_disk(rec["diskPath"].as_str().unwrap().as_ref(), "from-registry");

    // Pull by digest: the same image, no new blobs or disks.
    let blobs = env.blobs();
    let by_digest = format!(
        "{}/acme/app@{}",
        reg.addr,
        rec["manifestDigest"].as_str().unwrap()
    );
    let id2 = env.ok_id(&[
        "--insecure-registry",
        &reg.addr,
        "image",
        "pull",
        &by_digest,
    ]);
    assert_eq!(id2, id);
    assert_eq!(env.blobs(), blobs);
    assert_eq!(env.count("disks"), 1);

    // A reference the registry does not have is a clear error, nothing stored.
    let out = env.run(&[
        "--insecure-registry",
        &reg.addr,
        "image",
        "pull",
        &format!("{}/acme/none:1", reg.addr),
    ]);
    assert!(!out.status.success());
    assert_eq!(env.blobs(), blobs);
}

#[test]
fn kernel_import_from_an_ignite_style_kernel_image() {
    if registry_tools_missing() {
        return;
    }
    let env = Env::for_tier(common::tier::REGISTRY);
    let reg = start_registry(env.dir.path());
    let vmlinux = ignis_kernel::elf::test_elf(b"Linux version 5.10.77-ignis (t) #1");
    let layer = ignis_testkit::LayerBuilder::new()
        .dir("boot", 0o755)
        .file("boot/vmlinux", &vmlinux, 0o644)
        .dir("lib", 0o755)
        .dir("lib/modules", 0o755)
        .dir("lib/modules/5.10.77-ignis", 0o755)
        .file("lib/modules/5.10.77-ignis/modules.dep", b"", 0o644)
        .build();
    let spec = ignis_testkit::ImageSpec {
        layers: vec![layer],
        gzip: true,
        ..Default::default()
    };
    let layout = env.dir.path().join("kernel-layout");
    OciWriter::write_dir(&OciWriter::oci_files(&spec), &layout).unwrap();
    let reference = format!("{}/weaveworks/ignite-kernel:5.10.77", reg.addr);
    push(&layout, &reference);
    let id = env.ok_id(&[
        "--insecure-registry",
        &reg.addr,
        "kernel",
        "import",
        &reference,
    ]);
    assert_eq!(id, ignis_testkit::sha256(&vmlinux));
    let rec: serde_json::Value =
        serde_json::from_str(&env.ok(&["kernel", "inspect", &reference])).unwrap();
    assert_eq!(rec["version"], "5.10.77-ignis");
    assert_eq!(rec["source"]["kind"], "image");
    assert!(rec["modulesDigest"].is_string());
    // The pulled image's blobs are not kept once the kernel is extracted.
    env.ok(&["system", "prune"]);
    assert_eq!(env.blobs().len(), 2, "vmlinux + modules: {:?}", env.blobs());
}

#[test]
fn pull_uses_credentials_from_the_docker_config() {
    if registry_tools_missing() {
        return;
    }
    use base64::Engine as _;
    let env = Env::for_tier(common::tier::REGISTRY);
    let htpasswd = env.dir.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("alice:{}\n", bcrypt::hash("s3cret", 4).unwrap()),
    )
    .unwrap();
    let reg = start_registry_with(
        env.dir.path(),
        &format!(
            "auth:\n  htpasswd:\n    realm: ignis-test\n    path: {}\n",
            htpasswd.display()
        ),
    );
    let layout = env.dir.path().join("layout");
    OciWriter::write_dir(
        &OciWriter::oci_files(&small_spec("app", "private")),
        &layout,
    )
    .unwrap();
    let reference = format!("{}/private/app:1", reg.addr);
    push_as(&layout, &reference, Some("alice:s3cret"));

    let docker_config = env.dir.path().join("docker");
    std::fs::create_dir(&docker_config).unwrap();
    let pull = |config: &std::path::Path| {
        env.cmd()
            .env("DOCKER_CONFIG", config)
            .args([
                "--insecure-registry",
                &reg.addr,
                "image",
                "pull",
                &reference,
            ])
            .output()
            .unwrap()
    };
    // No credentials: refused by the registry, nothing stored.
    std::fs::write(docker_config.join("config.json"), "{}").unwrap();
    let out = pull(&docker_config);
    assert!(
        !out.status.success(),
        "anonymous pull of a private image must fail"
    );
    assert!(env.image_ids().is_empty());
    // Credentials in config.json: pulled.
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    std::fs::write(
        docker_config.join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.addr),
    )
    .unwrap();
    let out = pull(&docker_config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("s3cret"), "credentials must not be printed");
    assert_eq!(env.image_ids().len(), 1);
}

/// A snapshot travels as an OCI artifact through a real registry: pushed
/// from one state root, pulled (verified) into another, and forked there.
#[cfg(feature = "fake-vmm")]
#[test]
fn snapshot_push_pull_through_a_real_registry() {
    if registry_tools_missing() {
        return;
    }
    let env = Env::for_tier(common::tier::REGISTRY);
    let reg = start_registry(env.dir.path());
    let with_registry = |e: &Env, args: &[&str]| {
        let mut a = vec!["--insecure-registry", reg.addr.as_str()];
        a.extend_from_slice(args);
        e.ok(&a)
    };
    env.fake_kernel();
    let img = env.app_image();
    env.fake_vm("run", "src", &img);
    env.ok(&["snapshot", "src", "--name", "shared"]);
    let reference = format!("{}/snaps/shared:v1", reg.addr);
    let digest = with_registry(&env, &["snapshot", "push", "shared", &reference]);
    assert!(digest.trim().starts_with("sha256:"), "{digest}");
    let first = uploads(env.dir.path(), "snaps/shared");
    assert!(first >= 3, "state, memory and disk uploaded: {first}");
    // Pushing again uploads no blob twice and gives the same manifest.
    assert_eq!(
        with_registry(&env, &["snapshot", "push", "shared", &reference]),
        digest
    );
    assert_eq!(
        uploads(env.dir.path(), "snaps/shared"),
        first,
        "the second push uploaded blobs again"
    );

    let other = Env::new();
    other.fake_kernel();
    other.app_image();
    let id = with_registry(&other, &["snapshot", "pull", &reference]);
    let snap: serde_json::Value =
        serde_json::from_str(&other.ok(&["snapshot", "inspect", "shared"])).unwrap();
    assert_eq!(snap["id"], id.trim());
    let clone = other.ok(&["fork", "shared"]);
    assert_eq!(other.vm_json(clone.trim())["status"]["state"], "running");
    other.ok(&["rm", "-f", clone.trim()]);
    // An image (which the registry has) pulled as a snapshot is refused
    // with a clear error, and nothing is recorded.
    let layout = env.dir.path().join("image-layout");
    OciWriter::write_dir(
        &OciWriter::oci_files(&small_spec("app", "not a snapshot")),
        &layout,
    )
    .unwrap();
    let image_ref = format!("{}/snaps/an-image:v1", reg.addr);
    push(&layout, &image_ref);
    let out = other
        .cmd()
        .args([
            "--insecure-registry",
            &reg.addr,
            "snapshot",
            "pull",
            &image_ref,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is not an ignis snapshot"), "{err}");
    let snaps: serde_json::Value =
        serde_json::from_str(&other.ok(&["snapshot", "ls", "-o", "json"])).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 1, "{snaps}");
    env.ok(&["rm", "-f", "src"]);
}

/// The bar messages (`pull 0123456789ab`, `unpack ...`, `build ext4 image
/// disk`) a terminal showed, sorted (blobs may come in any order).
fn bar_messages(screen: &str) -> Vec<String> {
    let clean: String = screen
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == ' ' {
                c
            } else {
                ' '
            }
        })
        .collect();
    let words: Vec<&str> = clean.split_whitespace().collect();
    let mut found = Vec::new();
    for w in words.windows(2) {
        let is_id = w[1].len() == 12 && w[1].chars().all(|c| c.is_ascii_hexdigit());
        if (w[0] == "pull" || w[0] == "unpack") && is_id {
            found.push(format!("{} {}", w[0], w[1]));
        }
    }
    if clean.contains("build ext4 image disk") {
        found.push("build ext4 image disk".into());
    }
    found.sort();
    found.dedup();
    found
}

/// A pull through `ignis daemon` streams its progress; the remote CLI on
/// a terminal draws the bars the in-process pull draws (the same ones), none with --no-progress; the exit code of a failed
/// pull is the same both ways.
#[test]
fn a_pull_through_the_daemon_draws_the_same_bars_as_in_process() {
    if registry_tools_missing() {
        return;
    }
    if missing("script") {
        common::tier::skip(
            common::tier::REGISTRY,
            "script not installed (apt-get install bsdutils)",
        );
        return;
    }
    let env = Env::for_tier(common::tier::REGISTRY);
    let reg = start_registry(env.dir.path());
    let layout = env.dir.path().join("layout");
    OciWriter::write_dir(&OciWriter::oci_files(&small_spec("app", "bars")), &layout).unwrap();
    let reference = format!("{}/acme/bars:1", reg.addr);
    push(&layout, &reference);
    let d = common::daemon::Daemon::start(&env, &["--insecure-registry", &reg.addr]);
    // On a terminal: `script` runs the command on a pseudo-terminal and
    // copies what it drew to its stdout.
    let on_tty = |args: &str| {
        let out = Command::new("script")
            .arg("-qec")
            .arg(format!("{} {args}", env!("CARGO_BIN_EXE_ignis")))
            .arg("/dev/null")
            .env("IGNIS_ROOT", env.root())
            .env("IGNIS_LOG", "warn")
            .env("IGNIS_NETWORK", "none")
            .env("COLUMNS", "120")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let local = format!("--insecure-registry {} image pull {reference}", reg.addr);
    let remote = format!("--host {} image pull {reference}", d.host());
    let (code, screen) = on_tty(&local);
    assert_eq!(code, Some(0), "{screen}");
    let local_bars = bar_messages(&screen);
    assert!(
        local_bars.iter().any(|m| m.starts_with("pull "))
            && local_bars.iter().any(|m| m.starts_with("unpack ")),
        "{local_bars:?}\n{screen}"
    );
    env.ok(&["image", "rm", &reference]);
    env.ok(&["system", "prune"]);
    let (code, screen) = on_tty(&remote);
    assert_eq!(code, Some(0), "{screen}");
    assert_eq!(bar_messages(&screen), local_bars, "{screen}");
    assert!(env.ok(&["image", "ls"]).contains("acme/bars"));

    env.ok(&["image", "rm", &reference]);
    env.ok(&["system", "prune"]);
    let (code, screen) = on_tty(&format!("--no-progress {remote}"));
    assert_eq!(code, Some(0), "{screen}");
    assert!(bar_messages(&screen).is_empty(), "{screen}");

    // A reference the registry lacks: the problem ends the stream, and
    // the remote CLI exits as the in-process one does.
    let none = format!("{}/acme/none:1", reg.addr);
    let (lcode, lscreen) = on_tty(&format!(
        "--insecure-registry {} image pull {none}",
        reg.addr
    ));
    let (rcode, rscreen) = on_tty(&format!("--host {} image pull {none}", d.host()));
    assert_ne!(lcode, Some(0), "{lscreen}");
    assert_eq!(lcode, rcode, "local: {lscreen}\nremote: {rscreen}");
}
