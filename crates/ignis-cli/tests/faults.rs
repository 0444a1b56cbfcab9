//! Crash safety: SIGKILL at each step of create, start, snapshot, fork, rm
//! and imports (IGNIS_FAULT fault points: the process kills itself there,
//! like a power cut or an OOM kill, with no cleanup running), then the next
//! commands find a consistent state: `system check` names every leftover,
//! `system prune` repairs it, and afterwards no record lacks its files, no
//! file lacks its record, and no supervisor, cgroup, jail or lock is left.
//! Fake VMM here (the supervisor, the state and the files are real); the
//! Firecracker tier (tests/vm_firecracker.rs) covers a killed supervisor's
//! cgroup and jail.

#![cfg(feature = "fake-vmm")]

mod common;

use common::Env;
use std::os::unix::process::ExitStatusExt;

fn setup() -> (Env, String) {
    let env = Env::new();
    env.fake_kernel();
    let img = env.busybox_image("app:1", false, &[], &["/bin/busybox", "true"]);
    (env, img)
}

fn run(env: &Env, name: &str, img: &str) {
    env.ok(&[
        "run",
        "--backend",
        "fake",
        "--size",
        "64MB",
        "--name",
        name,
        img,
    ]);
}

/// Runs `args` with the fault point armed; returns the command's status.
fn crash(env: &Env, point: &str, args: &[&str]) -> std::process::ExitStatus {
    env.cmd()
        .env("IGNIS_FAULT", point)
        .args(args)
        .output()
        .unwrap()
        .status
}

/// The state is consistent: every VM record has its directory and disk,
/// every VM directory has a record, and `system check` finds nothing.
fn assert_consistent(env: &Env, when: &str) {
    let vms: serde_json::Value =
        serde_json::from_str(&env.ok(&["ps", "-a", "-o", "json"])).unwrap();
    let ids: Vec<String> = vms
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    for id in &ids {
        assert!(
            env.root().join("vms").join(id).join("data.ext4").exists(),
            "{when}: VM {id} has no disk"
        );
    }
    for e in std::fs::read_dir(env.root().join("vms")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            ids.contains(&name),
            "{when}: directory {name} has no record"
        );
    }
    for e in std::fs::read_dir(env.root().join("locks")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(id) = name
            .strip_prefix("supervisor-")
            .and_then(|n| n.strip_suffix(".lock"))
        {
            assert!(ids.iter().any(|i| i == id), "{when}: stale lock {name}");
        }
    }
    let check = env.run(&["system", "check"]);
    assert!(
        check.status.success(),
        "{when}: system check after prune: {}",
        String::from_utf8_lossy(&check.stdout)
    );
}

/// After the crash: check reports (exit 1) or not, prune repairs, check is
/// clean.
fn repair(env: &Env, when: &str) -> String {
    let check = env.run(&["system", "check", "-o", "json"]);
    let report = String::from_utf8_lossy(&check.stdout).into_owned();
    let problems: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(
        check.status.code(),
        Some(if problems.as_array().unwrap().is_empty() {
            0
        } else {
            1
        }),
        "{when}: exit code follows the report"
    );
    env.ok(&["system", "prune"]);
    assert_consistent(env, when);
    report
}

#[test]
fn sigkill_during_create_then_prune_leaves_nothing() {
    let (env, img) = setup();
    let st = crash(&env, "vm:disk-made", &["create", "--backend", "fake", &img]);
    assert_eq!(st.signal(), Some(9));
    let report = repair(&env, "create");
    assert!(report.contains("orphan-dir"), "{report}");
    assert_eq!(env.count("vms"), 0);
}

#[test]
fn sigkill_of_the_supervisor_right_after_the_vmm_started() {
    let (env, img) = setup();
    // The CLI survives; its supervisor dies after launching the VMM.
    let out = env
        .cmd()
        .env("IGNIS_FAULT", "supervise:vmm-started")
        .args(["run", "--backend", "fake", "--name", "v", &img])
        .output()
        .unwrap();
    assert!(!out.status.success(), "run reports the supervisor's death");
    // Never "running": the supervisor died before recording the start.
    let v = env.vm_json("v");
    assert!(
        v["status"]["state"] == "created" || v["status"]["state"] == "exited",
        "{v}"
    );
    assert!(
        env.processes_with(v["id"].as_str().unwrap()).is_empty(),
        "the VMM died with its supervisor"
    );
    repair(&env, "start");
    // The VM starts again normally.
    env.ok(&["start", "v"]);
    assert_eq!(env.vm_json("v")["status"]["state"], "running");
    env.ok(&["rm", "-f", "v"]);
    assert_consistent(&env, "after restart");
}

#[test]
fn sigkill_at_each_snapshot_step_keeps_the_vm_and_no_half_snapshot() {
    for point in [
        "snapshot:state-saved",
        "snapshot:resumed",
        "snapshot:blobs-stored",
    ] {
        let (env, img) = setup();
        run(&env, "src", &img);
        let st = crash(&env, point, &["snapshot", "src", "--name", "s"]);
        assert_eq!(st.signal(), Some(9), "{point}");
        repair(&env, point);
        let snaps: serde_json::Value =
            serde_json::from_str(&env.ok(&["snapshot", "ls", "-o", "json"])).unwrap();
        assert_eq!(snaps, serde_json::json!([]), "{point}: no half snapshot");
        // The source VM is usable: running, or resumable if the kill left
        // it paused.
        let v = env.vm_json("src");
        assert_eq!(v["status"]["state"], "running", "{point}: {v}");
        if v["status"]["paused"] == true {
            env.ok(&["unpause", "src"]);
        }
        env.ok(&["snapshot", "src", "--name", "s"]);
        env.ok(&["rm", "-f", "src"]);
        env.ok(&["snapshot", "rm", "s"]);
        env.ok(&["system", "prune"]);
        assert!(env.blobs().iter().all(|b| !b.is_empty()));
        assert_consistent(&env, point);
    }
}

#[test]
fn sigkill_during_fork_leaves_created_clones_that_start_or_remove() {
    let (env, img) = setup();
    run(&env, "src", &img);
    env.ok(&["snapshot", "src", "--name", "s"]);
    let st = crash(&env, "fork:clones-created", &["fork", "s", "-n", "3"]);
    assert_eq!(st.signal(), Some(9));
    repair(&env, "fork");
    // Each clone is a complete, created VM: it starts (resuming the
    // snapshot) or is removed like any other.
    env.ok(&["start", "s-1"]);
    assert_eq!(env.vm_json("s-1")["status"]["state"], "running");
    env.ok(&["rm", "-f", "s-1", "s-2", "s-3", "src"]);
    env.ok(&["snapshot", "rm", "s"]);
    assert_consistent(&env, "fork cleanup");
}

#[test]
fn sigkill_at_each_rm_step() {
    for point in ["rm:resources-released", "rm:record-deleted"] {
        let (env, img) = setup();
        run(&env, "v", &img);
        let id = env.vm_json("v")["id"].as_str().unwrap().to_string();
        let st = crash(&env, point, &["rm", "-f", "v"]);
        assert_eq!(st.signal(), Some(9), "{point}");
        assert!(env.processes_with(&id).is_empty(), "{point}: VM stopped");
        let report = repair(&env, point);
        if point == "rm:record-deleted" {
            assert!(report.contains("orphan-dir"), "{point}: {report}");
        }
        // Either the VM is still there (remove it again) or it is gone.
        let _ = env.run(&["rm", "-f", "v"]);
        assert_consistent(&env, point);
        assert_eq!(env.count("vms"), 0, "{point}");
    }
}

#[test]
fn sigkill_during_kernel_import_leaves_no_record_and_prune_cleans() {
    let env = Env::new();
    let guest = env.dir.path().join("k.elf");
    std::fs::write(&guest, ignis_testkit::testguest::elf()).unwrap();
    let st = crash(
        &env,
        "kernel:files-read",
        &["kernel", "import", guest.to_str().unwrap(), "--name", "k"],
    );
    assert_eq!(st.signal(), Some(9));
    assert!(env.ok(&["kernel", "ls", "-o", "json"]).trim() == "[]");
    repair(&env, "kernel import");
    assert!(env.blobs().is_empty(), "{:?}", env.blobs());
}

/// A supervisor whose VM record vanished (the record deleted by a crashed
/// `rm` on another path, or a restored backup) is found and stopped.
#[test]
fn an_orphan_supervisor_is_reported_and_stopped() {
    let (env, img) = setup();
    run(&env, "v", &img);
    let id = env.vm_json("v")["id"].as_str().unwrap().to_string();
    let db = rusqlite::Connection::open(env.root().join("state.db")).unwrap();
    db.execute("DELETE FROM objects WHERE kind = 'vm' AND id = ?1", [&id])
        .unwrap();
    let check = env.run(&["system", "check"]);
    assert_eq!(check.status.code(), Some(1));
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(report.contains("orphan-supervisor"), "{report}");
    env.ok(&["system", "prune"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !env.processes_with(&id).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "supervisor still runs"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_consistent(&env, "orphan supervisor");
}
