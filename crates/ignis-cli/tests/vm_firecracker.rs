//! Live tier (a): Firecracker mechanics with the project's tiny test guest
//! (a static ELF, no Linux): run, logs show the ready line, ps, stop, rm, and
//! nothing left behind. Runs wherever `firecracker` (>= 1.10) is on PATH or
//! in IGNIS_FIRECRACKER and /dev/kvm is usable; skips with one line elsewhere.

mod common;

use common::Env;

fn firecracker() -> Option<String> {
    if let Some(p) = std::env::var_os("IGNIS_FIRECRACKER") {
        return Some(p.to_string_lossy().into_owned());
    }
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("firecracker"))
            .find(|p| p.is_file())
            .map(|p| p.display().to_string())
    })
}

/// The Firecracker binary, or `None` after one skip line naming what is
/// missing (the binary, or a usable /dev/kvm).
fn firecracker_or_skip() -> Option<String> {
    let Some(fc) = firecracker() else {
        eprintln!("skipped: firecracker not found (put firecracker >= 1.10 on PATH or set IGNIS_FIRECRACKER)");
        return None;
    };
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        eprintln!("skipped: /dev/kvm not accessible");
        return None;
    }
    Some(fc)
}

#[test]
fn test_guest_lifecycle_on_firecracker() {
    let Some(fc) = firecracker_or_skip() else {
        return;
    };
    let env = Env::new();
    let info: serde_json::Value = serde_json::from_str(&env.ok(&["info", "-o", "json"])).unwrap();
    if info["guestInit"].is_null() {
        eprintln!("skipped: static ignis-init not built (scripts/build-guest.sh)");
        return;
    }
    let guest = env.dir.path().join("testguest.elf");
    std::fs::write(&guest, ignis_testkit::testguest::elf()).unwrap();
    env.ok(&[
        "kernel",
        "import",
        guest.to_str().unwrap(),
        "--name",
        "testguest",
    ]);
    let img = env.busybox_image("app:1", false, &[], &["/bin/busybox", "true"]);

    let id = env
        .cmd()
        .env("IGNIS_FIRECRACKER", &fc)
        .args([
            "run",
            "--backend",
            "firecracker",
            "--kernel",
            "testguest",
            "--name",
            "fc1",
            &img,
        ])
        .output()
        .unwrap();
    assert!(
        id.status.success(),
        "{}",
        String::from_utf8_lossy(&id.stderr)
    );
    let id = String::from_utf8_lossy(&id.stdout).trim().to_string();
    assert!(env.ok(&["logs", "fc1"]).contains("IGNIS-INIT ready"));
    let ps = env.ok(&["ps"]);
    assert!(ps.contains("fc1") && ps.contains("Up"), "{ps}");
    assert!(!env.processes_with(&id).is_empty(), "firecracker runs");
    // The test guest ignores Ctrl-Alt-Del: stop kills it after the timeout.
    env.ok(&["stop", "--time", "1", "fc1"]);
    let v = env.vm_json("fc1");
    assert_eq!(v["status"]["state"], "exited");
    env.ok(&["rm", "fc1"]);
    assert_eq!(env.count("vms"), 0, "no VM files left");
    assert!(env.processes_with(&id).is_empty(), "no firecracker left");
}

/// Live mechanics of snapshots on Firecracker with the test guest (it
/// prints a dot per busy loop): snapshot, 10 concurrent forks, every fork's
/// console shows the guest continuing; everything is gone after rm.
#[test]
fn test_guest_snapshot_and_ten_forks_on_firecracker() {
    let Some(fc) = firecracker_or_skip() else {
        return;
    };
    let env = Env::new();
    let guest = env.dir.path().join("testguest.elf");
    std::fs::write(&guest, ignis_testkit::testguest::elf()).unwrap();
    env.ok(&[
        "kernel",
        "import",
        guest.to_str().unwrap(),
        "--name",
        "testguest",
    ]);
    let img = env.busybox_image("app:1", false, &[], &["/bin/busybox", "true"]);
    let ok = |args: &[&str]| {
        let out = env
            .cmd()
            .env("IGNIS_FIRECRACKER", &fc)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(&[
        "run",
        "--backend",
        "firecracker",
        "--kernel",
        "testguest",
        "--memory",
        "128MB",
        "--size",
        "64MB",
        "--name",
        "src",
        &img,
    ]);
    ok(&["snapshot", "src", "--name", "s"]);
    let ids: Vec<String> = ok(&["fork", "s", "-n", "10"])
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(ids.len(), 10);
    for id in &ids {
        let log = env.root().join("vms").join(id).join("console.log");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches('.')
            .count()
            < 2
        {
            assert!(
                std::time::Instant::now() < deadline,
                "fork {id} does not continue"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    let mut rm = vec!["rm", "-f", "src"];
    rm.extend(ids.iter().map(String::as_str));
    ok(&rm);
    ok(&["snapshot", "rm", "s"]);
    assert_eq!(env.count("vms"), 0);
    for id in &ids {
        assert!(
            env.processes_with(id).is_empty(),
            "firecracker of {id} left"
        );
    }
}
