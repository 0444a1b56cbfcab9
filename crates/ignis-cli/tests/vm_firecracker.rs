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
        common::tier::skip(
            common::tier::FIRECRACKER,
            "firecracker not found (put firecracker >= 1.10 on PATH or set IGNIS_FIRECRACKER)",
        );
        return None;
    };
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        common::tier::skip(common::tier::FIRECRACKER, "/dev/kvm not accessible");
        return None;
    }
    Some(fc)
}

/// `ignis run` of the test guest on Firecracker; returns the VM ID. A
/// failure shows the console, `ps` and the supervisors' logs.
fn run_test_guest(env: &Env, fc: &str, name: &str, img: &str) -> String {
    let out = env
        .cmd()
        .env("IGNIS_FIRECRACKER", fc)
        .args([
            "run",
            "--backend",
            "firecracker",
            "--kernel",
            "testguest",
            "--name",
            name,
            img,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\nconsole: {:?}\nps: {}\nsupervisor: {:?}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&env.run(&["logs", name]).stdout),
        String::from_utf8_lossy(&env.run(&["ps", "-a"]).stdout),
        std::fs::read_dir(env.root().join("vms"))
            .unwrap()
            .flatten()
            .map(|e| std::fs::read_to_string(e.path().join("supervisor.log")).unwrap_or_default())
            .collect::<Vec<_>>()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Imports the test guest as the kernel `testguest` and [`Env::app_image`];
/// returns the image's name.
fn import_test_guest_and_app(env: &Env) -> String {
    let guest = env.dir.path().join("testguest.elf");
    std::fs::write(&guest, ignis_testkit::testguest::elf()).unwrap();
    env.ok(&[
        "kernel",
        "import",
        guest.to_str().unwrap(),
        "--name",
        "testguest",
    ]);
    env.app_image()
}

/// Whether ignis finds a jailer where it looks: next to firecracker, in
/// IGNIS_JAILER, on PATH.
fn jailer_found(fc: &str) -> bool {
    std::path::Path::new(fc).with_file_name("jailer").is_file()
        || std::env::var_os("IGNIS_JAILER").is_some()
        || std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("jailer").is_file()))
}

#[test]
fn test_guest_lifecycle_on_firecracker() {
    let Some(fc) = firecracker_or_skip() else {
        return;
    };
    if let Some(m) = common::guest_init_missing() {
        common::tier::skip(common::tier::FIRECRACKER, &m);
        return;
    }
    let mut env = Env::for_tier(common::tier::FIRECRACKER);
    let img = import_test_guest_and_app(&env);

    // Firecracker opens TAPs by name: a macvtap is refused up front,
    // naming what works instead, and nothing is made.
    let out = env
        .cmd()
        .env("IGNIS_FIRECRACKER", &fc)
        .args([
            "run",
            "--backend",
            "firecracker",
            "--kernel",
            "testguest",
            "--network",
            "macvtap:lo",
            "--name",
            "mv",
            &img,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cannot use a macvtap") && err.contains("qemu"),
        "{err}"
    );
    assert!(env.ok(&["ps", "-a", "-q"]).trim().is_empty());

    let id = run_test_guest(&env, &fc, "fc1", &img);
    assert!(env.ok(&["logs", "fc1"]).contains("IGNIS-INIT ready"));
    let ps = env.ok(&["ps"]);
    assert!(ps.contains("fc1") && ps.contains("Up"), "{ps}");
    assert!(!env.processes_with(&id).is_empty(), "firecracker runs");
    // Least privilege, as inspect reports it and as the kernel holds it.
    let v = env.vm_json("fc1");
    let c = &v["status"]["confinement"];
    let pid = v["status"]["vmmPid"].as_u64().unwrap();
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let proc_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    if jailer_found(&fc) {
        assert_eq!(
            c["sandbox"],
            serde_json::json!(["seccomp", "jailer"]),
            "{c}"
        );
        let user = c["user"].as_str().unwrap();
        let uid = user.split(':').next().unwrap();
        let uid_line = proc_status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            uid_line.split_whitespace().skip(1).all(|u| u == uid),
            "firecracker runs as {user}: {uid_line}"
        );
        // Chrooted: its / is the jail (kernel, disks, sockets), not the host's.
        let seen: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/root"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            seen.contains(&"vmlinux".to_string()) && !seen.contains(&"etc".to_string()),
            "{seen:?}"
        );
        assert!(
            !env.ok(&["logs", "fc1"]).contains("Running Firecracker"),
            "VMM logs stay off the console"
        );
    } else {
        // Unjailed, and inspect says so (no claim of a jail it lacks).
        assert_eq!(c["sandbox"], serde_json::json!(["seccomp"]), "{c}");
        assert!(c["chroot"].is_null(), "{c}");
        if let Some(r) = env.ran.as_mut() {
            r.note("no jailer found: ran unjailed, jail not checked");
        }
    }
    let cg = &c["cgroup"];
    assert_eq!(cg["cpuQuotaUs"], 100_000, "{c}");
    assert_eq!(cg["memoryMaxBytes"], (512u64 + 64) << 20, "{c}");
    for p in cg["paths"].as_array().unwrap() {
        let p = p.as_str().unwrap();
        let rel = p.split("/ignis/").nth(1).unwrap();
        assert!(
            proc_cgroup.contains(&format!("/ignis/{rel}")),
            "VMM in {p}: {proc_cgroup}"
        );
    }
    // The test guest ignores Ctrl-Alt-Del: stop kills it after the timeout.
    env.ok(&["stop", "--time", "1", "fc1"]);
    let v = env.vm_json("fc1");
    assert_eq!(v["status"]["state"], "exited");
    env.ok(&["rm", "fc1"]);
    assert_eq!(env.count("vms"), 0, "no VM files left");
    assert!(env.processes_with(&id).is_empty(), "no firecracker left");
    for p in cg["paths"].as_array().unwrap() {
        assert!(
            !std::path::Path::new(p.as_str().unwrap()).exists(),
            "cgroup {p} left"
        );
    }

    // SIGKILL of a supervisor: the next command tells the truth and
    // releases the VM's cgroup and jail; `system check` finds nothing.
    run_test_guest(&env, &fc, "fc2", &img);
    let v = env.vm_json("fc2");
    let id2 = v["id"].as_str().unwrap().to_string();
    let sup = v["status"]["supervisorPid"].as_u64().unwrap();
    let paths: Vec<String> = v["status"]["confinement"]["cgroup"]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    common::kill9(sup);
    let gone = common::wait::within(std::time::Duration::from_secs(10), || {
        env.processes_with(&id2).is_empty()
    });
    assert!(
        gone,
        "firecracker outlived its supervisor: {:?}",
        env.processes_with(&id2)
            .iter()
            .map(|p| std::fs::read_to_string(format!("/proc/{p}/status"))
                .unwrap_or_default()
                .lines()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "))
            .collect::<Vec<_>>()
    );
    let v = env.vm_json("fc2");
    assert_eq!(v["status"]["state"], "exited", "{v}");
    common::assert_supervisor_died(&v);
    for p in &paths {
        assert!(
            !std::path::Path::new(p).exists(),
            "cgroup {p} left after the crash"
        );
    }
    assert!(
        !env.root().join("vms").join(&id2).join("jail").exists(),
        "jail left after the crash"
    );
    let check = env.run(&["system", "check"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    env.ok(&["rm", "fc2"]);
}

/// Live mechanics of snapshots on Firecracker with the test guest (it
/// prints a dot per busy loop): snapshot, 10 concurrent forks, every fork's
/// console shows the guest continuing; everything is gone after rm.
#[test]
fn test_guest_snapshot_and_ten_forks_on_firecracker() {
    let Some(fc) = firecracker_or_skip() else {
        return;
    };
    let env = Env::for_tier(common::tier::FIRECRACKER);
    let img = import_test_guest_and_app(&env);
    let ok = |args: &[&str]| env.ok_with(&[("IGNIS_FIRECRACKER", &fc)], args);
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
        common::wait::until(
            &format!("fork {id} to continue"),
            std::time::Duration::from_secs(30),
            || {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .matches('.')
                    .count()
                    >= 2
            },
        );
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

/// Volumes on Firecracker: the test guest cannot mount, so this checks
/// what the VMM is given: a drive per volume (a named volume read-write, a
/// loop device this test attaches read-only), accepted by Firecracker (the
/// guest reports ready), in the jail (a link, a device node) when jailed;
/// the named volume outlives the VM.
#[test]
fn volumes_are_drives_on_firecracker() {
    let Some(fc) = firecracker_or_skip() else {
        return;
    };
    if let Some(m) = common::guest_init_missing() {
        common::tier::skip(common::tier::FIRECRACKER, &m);
        return;
    }
    let env = Env::for_tier(common::tier::FIRECRACKER);
    let img = import_test_guest_and_app(&env);
    let dev_file = env.dir.path().join("ro.img");
    std::fs::write(&dev_file, vec![0u8; 1 << 20]).unwrap();
    let lo = std::process::Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&dev_file)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    struct Detach(Option<String>);
    impl Drop for Detach {
        fn drop(&mut self) {
            if let Some(d) = &self.0 {
                let _ = std::process::Command::new("losetup")
                    .args(["-d", d])
                    .status();
            }
        }
    }
    let _detach = Detach(lo.clone());
    let mut args = vec![
        "run".to_string(),
        "--backend".into(),
        "firecracker".into(),
        "--kernel".into(),
        "testguest".into(),
        "--name".into(),
        "fcv".into(),
        "-v".into(),
        "fcvol:/data".into(),
        "--volume-size".into(),
        "16MB".into(),
    ];
    if let Some(d) = &lo {
        args.extend(["-v".into(), format!("{d}:/ro:ro")]);
    }
    args.push(img.clone());
    let out = env
        .cmd()
        .env("IGNIS_FIRECRACKER", &fc)
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(env.ok(&["logs", "fcv"]).contains("IGNIS-INIT ready"));
    let plan: serde_json::Value = serde_json::from_str(&env.ok(&["__boot-plan", "fcv"])).unwrap();
    let drives = plan["firecrackerConfig"]["drives"].as_array().unwrap();
    assert_eq!(drives.len(), if lo.is_some() { 4 } else { 3 }, "{drives:?}");
    assert_eq!(drives[2]["is_read_only"], false);
    let vol: serde_json::Value =
        serde_json::from_str(&env.ok(&["volume", "inspect", "fcvol"])).unwrap();
    assert_eq!(drives[2]["path_on_host"], vol["path"]);
    if lo.is_some() {
        assert_eq!(drives[3]["is_read_only"], true);
    }
    let v = env.vm_json("fcv");
    if jailer_found(&fc) {
        use std::os::unix::fs::FileTypeExt;
        let pid = v["status"]["vmmPid"].as_u64().unwrap();
        let root = std::path::PathBuf::from(format!("/proc/{pid}/root"));
        assert!(root.join("disk2.img").is_file());
        if lo.is_some() {
            let t = std::fs::metadata(root.join("disk3.img"))
                .unwrap()
                .file_type();
            assert!(t.is_block_device(), "a device node in the jail");
        }
    }
    env.ok(&["rm", "-f", "-v", "fcv"]);
    assert_eq!(env.ok(&["volume", "ls", "-Q"]).trim(), "fcvol");
    env.ok(&["volume", "rm", "fcvol"]);
}

/// Firecracker's own metrics in the daemon's `/metrics`, per VM: its
/// supervisor reads the VMM's metric FIFO (flushing every few seconds) and
/// the series show this run's totals; the test guest prints a dot per busy
/// loop on the serial port, so its vCPU exits keep growing.
#[test]
fn firecracker_own_metrics_per_vm_in_the_daemon() {
    let Some(fc) = firecracker_or_skip() else {
        return;
    };
    if let Some(m) = common::guest_init_missing() {
        common::tier::skip(common::tier::FIRECRACKER, &m);
        return;
    }
    let env = Env::for_tier(common::tier::FIRECRACKER);
    let img = import_test_guest_and_app(&env);
    let id = run_test_guest(&env, &fc, "fcm", &img);
    let d = common::daemon::Daemon::start_with(&env, &[], &[("IGNIS_FIRECRACKER", &fc)]);
    let scrape = || {
        let out = std::process::Command::new("curl")
            .args(["-sf", "--unix-socket"])
            .arg(&d.socket)
            .arg("http://x/metrics")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    // `ignis_NAME_total{vm="fcm",id="..."} VALUE`
    let value = |body: &str, name: &str| -> Option<u64> {
        let head = format!("ignis_{name}_total{{");
        body.lines()
            .find(|l| l.starts_with(&head) && l.contains("vm=\"fcm\"") && l.contains(&id))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    let mut body = String::new();
    common::wait::until(
        "two metric flushes of Firecracker",
        std::time::Duration::from_secs(60),
        || {
            body = scrape();
            value(&body, "firecracker_metric_flushes").is_some_and(|n| n >= 2)
        },
    );
    let exits = value(&body, "firecracker_vcpu_exits").unwrap();
    assert!(exits > 0, "{body}");
    for name in [
        "firecracker_block_read_bytes",
        "firecracker_block_write_bytes",
        "firecracker_net_rx_bytes",
        "firecracker_net_tx_bytes",
    ] {
        assert!(value(&body, name).is_some(), "{name} missing:\n{body}");
    }
    assert_eq!(
        value(&body, "firecracker_seccomp_faults"),
        Some(0),
        "{body}"
    );
    assert!(
        body.contains("# HELP ignis_firecracker_vcpu_exits"),
        "{body}"
    );
    // Totals, not the last flush's deltas: they only grow while it runs.
    common::wait::until(
        "more vCPU exits",
        std::time::Duration::from_secs(60),
        || {
            body = scrape();
            value(&body, "firecracker_vcpu_exits").is_some_and(|n| n > exits)
        },
    );
    env.ok(&["rm", "-f", "fcm"]);
    let body = scrape();
    assert!(
        !body.contains("vm=\"fcm\""),
        "series of a removed VM:\n{body}"
    );
    assert!(
        !env.root().join("vms").join(&id).exists(),
        "the VM's files (metrics FIFO, totals) are gone"
    );
}
