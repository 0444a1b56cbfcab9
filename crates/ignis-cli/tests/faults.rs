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
use std::time::Duration;

/// Runs `args` with the fault point armed; returns the command's status.
fn crash(env: &Env, point: &str, args: &[&str]) -> std::process::ExitStatus {
    env.run_fault(point, args).status
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

/// The kinds of problem in a `system check -o json` report, sorted.
fn problem_kinds(problems: &serde_json::Value) -> Vec<&str> {
    let mut kinds: Vec<&str> = problems
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    kinds.sort_unstable();
    kinds
}

/// After the crash: `system check` names exactly the kinds of leftover in
/// `expect` (exit 1; exit 0 when `expect` is empty: the crash left the
/// state consistent), `system prune` repairs them, and the check is clean.
fn repair(env: &Env, when: &str, expect: &[&str]) -> String {
    let check = env.run(&["system", "check", "-o", "json"]);
    let report = String::from_utf8_lossy(&check.stdout).into_owned();
    let problems: serde_json::Value = serde_json::from_str(&report).unwrap();
    let mut kinds = problem_kinds(&problems);
    kinds.dedup();
    let mut want = expect.to_vec();
    want.sort_unstable();
    assert_eq!(kinds, want, "{when}: system check found {report}");
    assert_eq!(
        check.status.code(),
        Some(if want.is_empty() { 0 } else { 1 }),
        "{when}: exit code follows the report"
    );
    env.ok(&["system", "prune"]);
    assert_consistent(env, when);
    report
}

#[test]
fn sigkill_during_create_then_prune_leaves_nothing() {
    let (env, img) = Env::fake_app();
    let st = crash(&env, "vm:disk-made", &["create", "--backend", "fake", &img]);
    assert_eq!(st.signal(), Some(9));
    repair(&env, "create", &["orphan-dir"]);
    assert_eq!(env.count("vms"), 0);
}

/// A create that dies after making an anonymous volume and before
/// recording its VM: `system check` names the volume, `system prune`
/// removes it. A dangling one (its VM removed without -v) is the user's
/// and stays, as Docker keeps it.
#[test]
fn sigkill_after_an_anonymous_volume_was_made_then_prune_removes_it() {
    let (env, img) = Env::fake_app();
    env.ok(&[
        "create",
        "--backend",
        "fake",
        "--name",
        "kept",
        "-v",
        "/keep",
        &img,
    ]);
    env.ok(&["rm", "kept"]);
    let dangling = env.ok(&["volume", "ls", "-q"]);
    assert_eq!(dangling.lines().count(), 1, "{dangling}");
    let st = crash(
        &env,
        "vm:cni-attached",
        &["create", "--backend", "fake", "-v", "/data", &img],
    );
    assert_eq!(st.signal(), Some(9));
    assert_eq!(env.ok(&["volume", "ls", "-q"]).lines().count(), 2);
    let report = repair(
        &env,
        "create with a volume",
        &["orphan-dir", "orphan-volume"],
    );
    assert!(report.contains("was never recorded"), "{report}");
    assert_eq!(
        env.ok(&["volume", "ls", "-q"]),
        dangling,
        "the dangling one stays"
    );
    assert_eq!(
        std::fs::read_dir(env.root().join("volumes"))
            .unwrap()
            .count(),
        1,
        "the crashed create's volume file went"
    );
}

#[test]
fn sigkill_of_the_supervisor_right_after_the_vmm_started() {
    let (env, img) = Env::fake_app();
    // The CLI survives; its supervisor dies after launching the VMM.
    let out = env.run_fault(
        "supervise:vmm-started",
        &["run", "--backend", "fake", "--name", "v", &img],
    );
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
    // The record stays (created or exited): nothing to repair.
    repair(&env, "start", &[]);
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
        let (env, img) = Env::fake_app();
        env.fake_vm("run", "src", &img);
        let before = env.blobs();
        let st = crash(&env, point, &["snapshot", "src", "--name", "s"]);
        assert_eq!(st.signal(), Some(9), "{point}");
        // The snapshot's scratch (state, memory, disk copies).
        repair(&env, point, &["temp"]);
        assert_eq!(env.blobs(), before, "{point}: half a snapshot's blobs left");
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
        assert_eq!(env.blobs(), before, "{point}: the snapshot's blobs left");
        assert_consistent(&env, point);
    }
}

#[test]
fn sigkill_during_fork_leaves_created_clones_that_start_or_remove() {
    let (env, img) = Env::fake_app();
    env.fake_vm("run", "src", &img);
    env.ok(&["snapshot", "src", "--name", "s"]);
    let st = crash(&env, "fork:clones-created", &["fork", "s", "-n", "3"]);
    assert_eq!(st.signal(), Some(9));
    // Each clone was recorded whole: nothing to repair.
    repair(&env, "fork", &[]);
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
        let (env, img) = Env::fake_app();
        env.fake_vm("run", "v", &img);
        let id = env.vm_json("v")["id"].as_str().unwrap().to_string();
        let st = crash(&env, point, &["rm", "-f", "v"]);
        assert_eq!(st.signal(), Some(9), "{point}");
        assert!(env.processes_with(&id).is_empty(), "{point}: VM stopped");
        let expect: &[&str] = match point {
            // The VM is stopped, its record and directory intact.
            "rm:resources-released" => &[],
            // The record went first: its directory and lock are left.
            _ => &["orphan-dir", "stale-lock"],
        };
        repair(&env, point, expect);
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
    repair(&env, "kernel import", &["temp"]);
    assert!(env.blobs().is_empty(), "{:?}", env.blobs());
}

/// A supervisor whose VM record vanished (the record deleted by a crashed
/// `rm` on another path, or a restored backup) is found and stopped.
#[test]
fn an_orphan_supervisor_is_reported_and_stopped() {
    let (env, img) = Env::fake_app();
    env.fake_vm("run", "v", &img);
    let id = env.vm_json("v")["id"].as_str().unwrap().to_string();
    let db = rusqlite::Connection::open(env.root().join("state.db")).unwrap();
    db.execute("DELETE FROM objects WHERE kind = 'vm' AND id = ?1", [&id])
        .unwrap();
    let check = env.run(&["system", "check"]);
    assert_eq!(check.status.code(), Some(1));
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(report.contains("orphan-supervisor"), "{report}");
    env.ok(&["system", "prune"]);
    common::wait::until(
        "the orphan supervisor to go",
        Duration::from_secs(10),
        || env.processes_with(&id).is_empty(),
    );
    assert_consistent(&env, "orphan supervisor");
}

/// What the fake VMM never has, on the QEMU tier: a crashed VM's cgroup,
/// guest RAM file and TAP. A VM whose supervisor is SIGKILLed has them
/// released by the next command; a VM whose record vanished while it ran
/// (a restored backup, a crashed `rm` on another path) leaves them, and
/// `system check` names each, `system prune` releases each. The TAP is
/// made by hand, as a Firecracker VM's persistent TAP would be left (QEMU's
/// own goes with QEMU), in a namespace of the test's own.
#[test]
fn stale_cgroup_ram_file_and_tap_are_found_and_released_on_qemu() {
    if !rustix::process::geteuid().is_root() {
        common::tier::skip(
            common::tier::QEMU,
            "not root (a network namespace for the TAP)",
        );
        return;
    }
    let Some(env) = common::linux_env() else {
        return;
    };
    let img = env.busybox_image(
        "sleeper:1",
        false,
        &[],
        &["/bin/busybox", "sleep", "100000"],
    );
    let ns = format!("ignis-st{}", std::process::id());
    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .status();
        }
    }
    assert!(std::process::Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .unwrap()
        .success());
    let _ns = Ns(ns.clone());
    // In the namespace's network with a sysfs of its own (for its TAPs)
    // but the host's cgroup mounts (`ip netns exec` hides them under its
    // fresh /sys): a private mount namespace keeps both.
    let cg = env.dir.path().join("cgroup-mounts");
    std::fs::create_dir_all(&cg).unwrap();
    let in_ns = |args: &[&str]| {
        std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .args(["unshare", "-m", "sh", "-c"])
            .arg(
                "mount --make-rprivate / && mount --rbind /sys/fs/cgroup \"$0\" \
                 && mount -t sysfs sysfs /sys && mount --rbind \"$0\" /sys/fs/cgroup \
                 && exec \"$@\"",
            )
            .arg(&cg)
            .arg(env!("CARGO_BIN_EXE_ignis"))
            .args(args)
            .env("IGNIS_ROOT", env.root())
            .env("IGNIS_NETWORK", "none")
            .env("IGNIS_LOG", "warn")
            .output()
            .unwrap()
    };
    let ram = |id: &str| std::path::PathBuf::from(format!("/dev/shm/ignis-{id}.mem"));
    let cgroups = |v: &serde_json::Value| -> Vec<std::path::PathBuf> {
        v["status"]["confinement"]["cgroup"]["paths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().into())
            .collect()
    };
    let kill_supervisor = |v: &serde_json::Value| {
        let id = v["id"].as_str().unwrap();
        let sup = v["status"]["supervisorPid"].as_u64().unwrap();
        common::kill9(sup);
        common::wait::until(
            "QEMU to die with its supervisor",
            Duration::from_secs(20),
            || env.processes_with(id).is_empty(),
        );
    };

    // A killed supervisor, the record intact: the next command releases.
    env.ok(&["run", "--name", "a", &img]);
    let a = env.vm_json("a");
    let a_id = a["id"].as_str().unwrap().to_string();
    let a_cg = cgroups(&a);
    assert!(!a_cg.is_empty() && a_cg.iter().all(|p| p.exists()), "{a}");
    assert!(
        ram(&a_id).exists(),
        "QEMU's guest RAM is a file on /dev/shm"
    );
    kill_supervisor(&a);
    env.ok(&["ps", "-a"]);
    assert!(a_cg.iter().all(|p| !p.exists()), "cgroup left: {a_cg:?}");
    assert!(!ram(&a_id).exists(), "RAM file left");

    // The record vanished, then the supervisor died: leftovers by name.
    env.ok(&["run", "--name", "b", &img]);
    let b = env.vm_json("b");
    let b_id = b["id"].as_str().unwrap().to_string();
    let b_cg = cgroups(&b);
    let db = rusqlite::Connection::open(env.root().join("state.db")).unwrap();
    db.execute("DELETE FROM objects WHERE kind = 'vm' AND id = ?1", [&b_id])
        .unwrap();
    drop(db);
    kill_supervisor(&b);
    let tap = format!("ig-{}", &b_id[..12]);
    assert!(std::process::Command::new("ip")
        .args(["-n", &ns, "tuntap", "add", "dev", &tap, "mode", "tap"])
        .status()
        .unwrap()
        .success());
    let check = in_ns(&["system", "check", "-o", "json"]);
    assert_eq!(check.status.code(), Some(1));
    let problems: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(
        problem_kinds(&problems),
        [
            "orphan-dir",
            "stale-cgroup",
            "stale-lock",
            "stale-memory",
            "stale-tap"
        ],
        "{problems}"
    );
    let out = in_ns(&["system", "prune"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(b_cg.iter().all(|p| !p.exists()), "cgroup left: {b_cg:?}");
    assert!(!ram(&b_id).exists(), "RAM file left");
    let links = std::process::Command::new("ip")
        .args(["-n", &ns, "-o", "link"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains(&tap),
        "TAP left"
    );
    assert!(in_ns(&["system", "check"]).status.success());
    env.ok(&["rm", "a"]);
    assert_consistent(&env, "stale resources");
}
