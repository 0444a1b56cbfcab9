//! Live tier (b): volumes in real Linux guests on QEMU. A named volume
//! written by one VM, its VM removed, read by the next; a host disk image
//! file written by the guest and read on the host; a read-only block
//! device (a loop device this test attaches and detaches) that the guest
//! reads and cannot write. Skips with one line naming the missing piece.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// An attached loop device, detached on drop.
struct Loop(PathBuf);

impl Loop {
    fn attach(file: &Path) -> Option<Self> {
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(file)
            .output()
            .ok()?;
        out.status.success().then(|| {
            Self(PathBuf::from(
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
            ))
        })
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// `run --rm ARGS... IMG /bin/busybox sh -c SCRIPT`: (exit code, stdout).
fn run_sh(env: &common::Env, args: &[&str], img: &str, script: &str) -> (Option<i32>, String) {
    let out = env
        .cmd()
        .arg("run")
        .arg("--rm")
        .args(args)
        .args([img, "/bin/busybox", "sh", "-c", script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.code().is_some(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code(),
        format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn volumes_in_linux_guests_on_qemu() {
    let Some(env) = common::linux_env() else {
        return;
    };
    let img = env.busybox_image("vol:1", false, &[], &["/bin/busybox", "true"]);

    // A named volume, made on first use: written by one VM (removed with
    // --rm, the volume stays), read by the next.
    let (code, out) = run_sh(
        &env,
        &["-v", "shared:/data", "--volume-size", "32MB"],
        &img,
        "echo persisted > /data/note && /bin/busybox sync && /bin/busybox cat /data/note",
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(env.ok(&["ps", "-a", "-Q"]), "", "the first VM is gone");
    let (code, out) = run_sh(
        &env,
        &["-v", "shared:/srv/again"],
        &img,
        "/bin/busybox cat /srv/again/note",
    );
    assert_eq!((code, out.trim()), (Some(0), "persisted"));

    // Kept across stop/start: the same disk, mounted again.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "keep",
        "-v",
        "kept:/k",
        "--volume-size",
        "32MB",
        &img,
        "/bin/busybox",
        "sleep",
        "1000",
    ]);
    env.ok(&[
        "exec",
        "keep",
        "/bin/busybox",
        "sh",
        "-c",
        "echo before-stop > /k/a",
    ]);
    env.ok(&["stop", "keep"]);
    env.ok(&["start", "keep"]);
    assert_eq!(
        env.ok(&["exec", "keep", "/bin/busybox", "cat", "/k/a"])
            .trim(),
        "before-stop"
    );
    env.ok(&["rm", "-f", "-v", "keep"]);

    // A host disk image file, read-write: what the guest wrote is on the host.
    let file = env.dir.path().join("data.ext4");
    let f = std::fs::File::create(&file).unwrap();
    f.set_len(32 << 20).unwrap();
    drop(f);
    assert!(Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&file)
        .status()
        .unwrap()
        .success());
    let (code, out) = run_sh(
        &env,
        &["-v", &format!("{}:/mnt/f", file.display())],
        &img,
        "echo from-guest > /mnt/f/out",
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(common::debugfs(&file, "cat /out").trim(), "from-guest");
    common::assert_fsck_clean(&file, "the volume file after the VM");

    // A block device, read-only: readable, every write refused.
    if !rustix::process::geteuid().is_root() {
        common::tier::skip(common::tier::QEMU, "loop devices need root");
        return;
    }
    let src = env.dir.path().join("ro-src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("hello"), "from the device\n").unwrap();
    let dev_file = env.dir.path().join("ro.ext4");
    let f = std::fs::File::create(&dev_file).unwrap();
    f.set_len(32 << 20).unwrap();
    drop(f);
    assert!(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&src)
        .arg(&dev_file)
        .status()
        .unwrap()
        .success());
    let Some(lo) = Loop::attach(&dev_file) else {
        common::tier::skip(common::tier::QEMU, "losetup cannot attach a loop device");
        return;
    };
    let before = std::fs::read(&dev_file).unwrap();
    let (code, out) = run_sh(
        &env,
        &["-v", &format!("{}:/ro:ro", lo.0.display())],
        &img,
        "/bin/busybox cat /ro/hello; if echo x > /ro/new; then echo WROTE; else echo REFUSED; fi",
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("from the device"), "{out}");
    assert!(out.contains("REFUSED") && !out.contains("WROTE"), "{out}");
    drop(lo);
    assert!(
        std::fs::read(&dev_file).unwrap() == before,
        "the read-only device is unchanged"
    );
    // Named volumes stay until `volume rm`.
    assert_eq!(
        env.ok(&["volume", "ls", "-Q"]).lines().collect::<Vec<_>>(),
        ["kept", "shared"]
    );
    env.ok(&["volume", "rm", "shared", "kept"]);
}
