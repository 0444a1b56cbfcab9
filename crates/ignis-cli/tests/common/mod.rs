#![allow(dead_code)]
//! Helpers for tests that run the real `ignis` binary.

pub mod cloud;
pub mod daemon;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use ignis_testkit::ext4::{assert_fsck_clean, debugfs};
pub use ignis_testkit::{tier, wait};
use ignis_testkit::{ImageSpec, LayerBuilder, OciWriter};

pub struct Env {
    pub dir: tempfile::TempDir,
    /// The live tier this test runs, recorded when the environment goes
    /// (passed, or failed when dropped by a panic).
    pub ran: Option<tier::Ran>,
}

/// A test that fails midway leaves no VM running: every VM of the state
/// root is killed and removed when the environment goes.
impl Drop for Env {
    fn drop(&mut self) {
        let Ok(rd) = std::fs::read_dir(self.root().join("vms")) else {
            return;
        };
        let ids: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if !ids.is_empty() {
            let _ = self
                .cmd()
                .args(["rm", "-f"])
                .args(&ids)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Drop does not run when the test process is killed (a nextest timeout
/// kills the test's process group): the VMs' supervisors, in sessions of
/// their own, would run on. A watchdog in its own session waits for this
/// test process to end, then removes whatever VMs the root still has and
/// the directory. After a normal end it finds nothing to do.
fn watchdog(dir: &Path) {
    const SCRIPT: &str = r#"
while kill -0 "$1" 2>/dev/null; do sleep 1; done
[ -d "$2" ] || exit 0
ids=$(ls "$2/root/vms" 2>/dev/null)
[ -n "$ids" ] && IGNIS_ROOT="$2/root" IGNIS_NETWORK=none "$3" rm -f $ids
rm -rf "$2"
"#;
    let _ = Command::new("setsid")
        .args(["sh", "-c", SCRIPT, "ignis-test-watchdog"])
        .arg(std::process::id().to_string())
        .arg(dir)
        .arg(env!("CARGO_BIN_EXE_ignis"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        // Like /var/lib: other users may pass through (VMMs run as their
        // own uid and reach their disks by path); the tempdir is 0700.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod tempdir");
        watchdog(dir.path());
        Self { dir, ran: None }
    }

    /// As [`Env::new`], recording that this test runs `tier`.
    pub fn for_tier(tier: &str) -> Self {
        let mut env = Self::new();
        env.ran = Some(tier::ran(tier));
        env
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ignis"));
        // Tests never touch the host's own network: bridge networking is
        // tested inside network namespaces (tests/net.rs).
        c.env("IGNIS_NETWORK", "none");
        c.env("IGNIS_ROOT", self.root())
            .env_remove("IGNIS_FAULT")
            .env("IGNIS_LOG", "warn");
        c
    }

    /// Runs ignis with the fault point `point` armed (IGNIS_FAULT: the
    /// process SIGKILLs itself there); returns its output.
    pub fn run_fault(&self, point: &str, args: &[&str]) -> Output {
        self.cmd()
            .env("IGNIS_FAULT", point)
            .args(args)
            .output()
            .expect("run ignis")
    }

    /// Runs ignis and returns its output, whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run ignis")
    }

    /// Runs ignis, asserting success, and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_with(&[], args)
    }

    /// As [`Env::ok`] with extra environment variables.
    pub fn ok_with(&self, vars: &[(&str, &str)], args: &[&str]) -> String {
        let out = self
            .cmd()
            .envs(vars.iter().copied())
            .args(args)
            .output()
            .expect("run ignis");
        assert!(
            out.status.success(),
            "ignis {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    }

    /// Every blob in the store: sha256 ones by their hex, the chunked
    /// ones (snapshots) as `sha256-chunked:<hex>`.
    pub fn blobs(&self) -> Vec<String> {
        let list = |dir: &str, prefix: &str| -> Vec<String> {
            std::fs::read_dir(self.root().join("blobs").join(dir))
                .map(|rd| {
                    rd.flatten()
                        .map(|e| format!("{prefix}{}", e.file_name().to_string_lossy()))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut v = list("sha256", "");
        v.extend(list("sha256-chunked", "sha256-chunked:"));
        v.sort();
        v
    }

    pub fn count(&self, sub: &str) -> usize {
        std::fs::read_dir(self.root().join(sub))
            .map(|rd| rd.count())
            .unwrap_or(0)
    }

    pub fn image_ids(&self) -> Vec<String> {
        let json = self.ok(&["image", "ls", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        v.as_array()
            .expect("array")
            .iter()
            .map(|i| i["id"].as_str().expect("id").to_string())
            .collect()
    }

    /// Writes a small image (2 layers, a whiteout, a symlink, a setuid
    /// file, non-root ownership) as an OCI layout directory.
    pub fn small_image(&self, name: &str, salt: &str) -> PathBuf {
        let out = self
            .dir
            .path()
            .join(format!("layout-{}", name.replace(['/', ':'], "_")));
        OciWriter::write_dir(&OciWriter::oci_files(&small_spec(name, salt)), &out).expect("layout");
        out
    }
}

pub fn small_spec(name: &str, salt: &str) -> ImageSpec {
    let base = LayerBuilder::new()
        .dir("bin", 0o755)
        .file("bin/sh", b"#!fake shell", 0o755)
        .file("bin/su", b"setuid", 0o4755)
        .dir("etc", 0o755)
        .file("etc/salt", salt.as_bytes(), 0o644)
        .file("etc/old", b"removed by the next layer", 0o644)
        .symlink("etc/link", "salt")
        .owner(1000, 1000)
        .dir("home", 0o750)
        .file("home/note", b"user file", 0o600)
        .build();
    let top = LayerBuilder::new()
        .whiteout("etc/old")
        .file("etc/new", b"added", 0o644)
        .build();
    ImageSpec {
        layers: vec![base, top],
        cmd: Some(vec!["/bin/sh".into()]),
        env: vec!["PATH=/bin".into()],
        gzip: true,
        name: Some(name.to_string()),
        ..Default::default()
    }
}

/// The arguments of [`Env::fake_vm`], for commands run otherwise.
pub fn fake_vm_args<'a>(verb: &'a str, name: &'a str, img: &'a str) -> [&'a str; 8] {
    [
        verb,
        "--backend",
        "fake",
        "--size",
        "64MB",
        "--name",
        name,
        img,
    ]
}

/// Asserts that a command exited with `code`, its stderr as the message.
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `kill -9 PID`; whether the signal was sent.
pub fn kill9(pid: u64) -> bool {
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill")
        .success()
}

/// Whether process `pid` has ended (gone, or a zombie not reaped yet).
pub fn process_gone(pid: u64) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.is_empty() || stat.contains(") Z")
}

/// Asserts that the VM record `v` gives its supervisor's death as the
/// reason it exited.
pub fn assert_supervisor_died(v: &serde_json::Value) {
    let reason = v["status"]["reason"].as_str().unwrap();
    assert!(reason.contains("supervisor died"), "{v}");
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Checks the ext4 image disk of `small_spec`: content, modes, ownership,
/// whiteout applied.
pub fn check_small_disk(disk: &Path, salt: &str) {
    assert_eq!(debugfs(disk, "cat /etc/salt"), salt);
    assert_eq!(debugfs(disk, "cat /etc/new"), "added");
    assert!(
        debugfs(disk, "stat /etc/old").is_empty(),
        "whiteout applied"
    );
    let su = debugfs(disk, "stat /bin/su");
    assert!(
        su.contains("Mode:  04755") && su.contains("User:     0"),
        "{su}"
    );
    let home = debugfs(disk, "stat /home/note");
    assert!(
        home.contains("User:  1000")
            && home.contains("Group:  1000")
            && home.contains("Mode:  0600"),
        "{home}"
    );
    assert!(debugfs(disk, "stat /etc/link").contains("Type: symlink"));
    assert_fsck_clean(disk, "fsck");
}

impl Env {
    /// Imports a synthetic kernel (an ELF inside a gzip bzImage) as the
    /// default kernel: enough for VMs on the fake backend.
    pub fn fake_kernel(&self) {
        use std::io::Write;
        let elf = ignis_kernel::elf::test_elf(b"Linux version 6.6.6-fake (t) #1");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&elf).unwrap();
        let bz = ignis_kernel::bzimage::test_bzimage(&gz.finish().unwrap(), "6.6.6-fake");
        let path = self.dir.path().join("vmlinuz-fake");
        std::fs::write(&path, bz).unwrap();
        self.ok(&["kernel", "import", path.to_str().unwrap(), "--default"]);
    }

    /// Imports an image whose root is busybox (from the host's
    /// busybox-static) plus `files` (path, content, mode); returns its name.
    /// With `init`, `/sbin/init` is busybox init (a system image).
    pub fn busybox_image(
        &self,
        name: &str,
        init: bool,
        files: &[(&str, &str, u32)],
        cmd: &[&str],
    ) -> String {
        let files: Vec<(&str, Vec<u8>, u32)> = files
            .iter()
            .map(|(p, c, m)| (*p, c.as_bytes().to_vec(), *m))
            .collect();
        self.busybox_image_with(name, init, &files, cmd)
    }

    /// As [`Self::busybox_image`], with binary file contents.
    pub fn busybox_image_with(
        &self,
        name: &str,
        init: bool,
        files: &[(&str, Vec<u8>, u32)],
        cmd: &[&str],
    ) -> String {
        let busybox =
            std::fs::read("/bin/busybox").expect("/bin/busybox (apt-get install busybox-static)");
        let mut layer = LayerBuilder::new()
            .dir("bin", 0o755)
            .file("bin/busybox", &busybox, 0o755)
            .symlink("bin/sh", "busybox")
            .dir("etc", 0o755)
            .dir("tmp", 0o1777)
            .dir("proc", 0o555)
            .dir("sys", 0o555)
            .dir("dev", 0o755);
        if init {
            layer = layer
                .dir("sbin", 0o755)
                .symlink("sbin/init", "../bin/busybox");
        }
        for (p, c, m) in files {
            layer = layer.file(p, c, *m);
        }
        let spec = ImageSpec {
            layers: vec![layer.build()],
            cmd: (!cmd.is_empty()).then(|| cmd.iter().map(|s| s.to_string()).collect()),
            env: vec!["PATH=/bin:/sbin".into()],
            gzip: true,
            name: Some(name.to_string()),
            ..Default::default()
        };
        let dir = self
            .dir
            .path()
            .join(format!("img-{}", name.replace(['/', ':'], "_")));
        OciWriter::write_dir(&OciWriter::oci_files(&spec), &dir).unwrap();
        self.ok(&["image", "import", dir.to_str().unwrap()]);
        name.to_string()
    }

    /// Imports `app:1`: busybox whose command is `true`; returns its name.
    pub fn app_image(&self) -> String {
        self.busybox_image("app:1", false, &[], &["/bin/busybox", "true"])
    }

    /// A fresh environment ready for the fake backend: the synthetic
    /// kernel as default and [`Env::app_image`] imported (its name too).
    pub fn fake_app() -> (Self, String) {
        let env = Self::new();
        env.fake_kernel();
        let img = env.app_image();
        (env, img)
    }

    /// `ignis VERB --backend fake --size 64MB --name NAME IMG` (VERB is
    /// `run` or `create`), asserting success; returns the VM id.
    pub fn fake_vm(&self, verb: &str, name: &str, img: &str) -> String {
        self.ok(&fake_vm_args(verb, name, img)).trim().to_string()
    }

    /// Runs ignis, asserting success, and returns stdout trimmed (an id).
    pub fn ok_id(&self, args: &[&str]) -> String {
        self.ok(args).trim().to_string()
    }

    pub fn vm_json(&self, vm: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["inspect", vm])).expect("inspect json")
    }

    /// Processes whose command line mentions `needle`.
    pub fn processes_with(&self, needle: &str) -> Vec<u32> {
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if pid == std::process::id() {
                continue;
            }
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let zombie = stat
                .rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'));
            if !zombie && String::from_utf8_lossy(&cmd).contains(needle) {
                out.push(pid);
            }
        }
        out
    }
}

/// An environment with Debian's kernel as the default, for the live Linux
/// tier; `None` after one skip line (and record) naming what is missing.
pub fn linux_env() -> Option<Env> {
    linux_env_for(tier::QEMU)
}

/// As [`linux_env`], recording `tier`.
pub fn linux_env_for(t: &str) -> Option<Env> {
    if let Some(m) = qemu_missing_piece() {
        tier::skip(t, &m);
        return None;
    }
    let env = Env::for_tier(t);
    env.debian_kernel();
    Some(env)
}

impl Env {
    /// Debian's kernel (IGNIS_TEST_KERNEL_DEB) as this root's default
    /// kernel, from the shared read-only fixture: imported once per test
    /// run, then cloned (the state DB copied, the immutable blobs hard
    /// linked) instead of imported again by every live test.
    pub fn debian_kernel(&self) {
        // Held (shared) while cloning: no other run removes it meanwhile.
        let (fixture, _lock) = kernel_fixture();
        let root = self.root();
        std::fs::create_dir_all(root.join("blobs/sha256")).unwrap();
        for f in ["state.db", "state.db-wal", "state.db-shm"] {
            let _ = std::fs::remove_file(root.join(f));
        }
        std::fs::copy(fixture.join("state.db"), root.join("state.db")).unwrap();
        for e in std::fs::read_dir(fixture.join("blobs/sha256")).unwrap() {
            let e = e.unwrap();
            std::fs::hard_link(e.path(), root.join("blobs/sha256").join(e.file_name())).unwrap();
        }
        let k: serde_json::Value =
            serde_json::from_str(&self.ok(&["kernel", "inspect", "default"])).unwrap();
        assert!(k["version"].as_str().unwrap().ends_with("-amd64"), "{k}");
    }
}

/// The fixture state root holding only Debian's kernel, made once per test
/// run (per .deb and ignis binary) under an exclusive lock, returned with
/// the lock held shared: `IGNIS_TEST_FIXTURES`, else
/// `target/ignis-test-fixtures`. Making one removes the fixtures of older
/// binaries (no fixture per rebuild piles up).
fn kernel_fixture() -> (PathBuf, std::fs::File) {
    let deb = PathBuf::from(std::env::var_os("IGNIS_TEST_KERNEL_DEB").expect("checked first"));
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_ignis"));
    let stamp = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        format!("{}:{}:{:?}", p.display(), m.len(), m.modified().unwrap())
    };
    let key = ignis_testkit::sha256(format!("{}|{}", stamp(&deb), stamp(&bin)).as_bytes());
    let base = std::env::var_os("IGNIS_TEST_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // target/debug/ignis -> target/ignis-test-fixtures
            bin.parent()
                .and_then(Path::parent)
                .unwrap()
                .join("ignis-test-fixtures")
        });
    std::fs::create_dir_all(&base).unwrap();
    let dir = base.join(format!("kernel-{}", &key[7..23]));
    let lock = std::fs::File::create(base.join("kernel.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    if !dir.join("state.db").exists() {
        for e in std::fs::read_dir(&base).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("kernel-") || name.starts_with(".kernel-") {
                std::fs::remove_dir_all(e.path()).unwrap();
            }
        }
        let tmp = base.join(format!(".kernel-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let out = Command::new(env!("CARGO_BIN_EXE_ignis"))
            .env("IGNIS_ROOT", &tmp)
            .env("IGNIS_LOG", "warn")
            .arg("kernel")
            .arg("import")
            .arg(&deb)
            .arg("--default")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kernel fixture: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // One self-contained file to copy: the WAL folded in.
        let db = rusqlite::Connection::open(tmp.join("state.db")).unwrap();
        db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode=DELETE;")
            .unwrap();
        drop(db);
        for e in std::fs::read_dir(tmp.join("blobs/sha256")).unwrap() {
            std::fs::set_permissions(
                e.unwrap().path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o444),
            )
            .unwrap();
        }
        std::fs::rename(&tmp, &dir).unwrap();
    }
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockShared).unwrap();
    (dir, lock)
}

/// Why the live QEMU tier cannot run here (`None`: it can).
pub fn qemu_missing_piece() -> Option<String> {
    if ignis_vmm_missing("qemu-system-x86_64") {
        return Some("qemu-system-x86_64 not installed (apt-get install qemu-system-x86)".into());
    }
    if !std::path::Path::new("/bin/busybox").exists() {
        return Some("/bin/busybox missing (apt-get install busybox-static)".into());
    }
    if let Some(m) = guest_init_missing() {
        return Some(m);
    }
    if std::env::var_os("IGNIS_TEST_KERNEL_DEB").is_none() {
        return Some(
            "IGNIS_TEST_KERNEL_DEB unset (scripts/kernel-deb.sh downloads Debian's kernel)".into(),
        );
    }
    None
}

/// Why no static guest init is found (`None`: `ignis info` finds one).
pub fn guest_init_missing() -> Option<String> {
    let probe = Env::new();
    let info: serde_json::Value = serde_json::from_str(&probe.ok(&["info", "-o", "json"])).unwrap();
    info["guestInit"]
        .is_null()
        .then(|| "static ignis-init not built (scripts/build-guest.sh)".to_string())
}

fn ignis_vmm_missing(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| !std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(true)
}

pub fn wait_state(env: &Env, vm: &str, state: &str) -> serde_json::Value {
    wait::for_value(
        &format!("{vm} to be {state}"),
        std::time::Duration::from_secs(60),
        || {
            let v = env.vm_json(vm);
            (v["status"]["state"] == state).then_some(v)
        },
    )
}
