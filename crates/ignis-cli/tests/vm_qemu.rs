//! Live tier (b): real Linux guests on QEMU (TCG here, KVM where usable),
//! booted from Debian's kernel with ignis's own init. Skips with one line
//! naming the missing piece.

mod common;

use std::time::Duration;

#[test]
fn linux_guest_lifecycle_on_qemu() {
    let Some(env) = common::linux_env() else {
        return;
    };
    let app = env.busybox_image(
        "app:1",
        false,
        &[("etc/motd", "from the image\n", 0o644)],
        &[
            "/bin/busybox",
            "sh",
            "-c",
            "echo $GREETING from $(/bin/busybox cat /etc/motd)",
        ],
    );

    // (b1) An app image runs a command; stdout/stderr and the exit code come back.
    let out = env
        .cmd()
        .args([
            "run",
            "--rm",
            &app,
            "/bin/busybox",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\nerr\n");
    let out = env
        .cmd()
        .args(["run", "--rm", &app, "/bin/busybox", "echo", "hi"])
        .output()
        .unwrap();
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string()
        ),
        (Some(0), "hi\n".to_string())
    );

    // The image's Cmd with -e and a copied file.
    let host_file = env.dir.path().join("note.txt");
    std::fs::write(&host_file, "copied in\n").unwrap();
    let out = env
        .cmd()
        .args([
            "run",
            "--rm",
            "-e",
            "GREETING=hello",
            "--copy-files",
            &format!("{}:/etc/motd", host_file.display()),
            &app,
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from copied in\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Interactive: stdin reaches the guest's console, the exit code comes back.
    {
        use std::io::{BufRead, Write};
        let mut child = env
            .cmd()
            .args([
                "run",
                "-i",
                "--rm",
                &app,
                "/bin/busybox",
                "sh",
                "-c",
                "echo ask; read x; echo got $x; exit 6",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut seen = String::new();
        let mut line = String::new();
        while stdout.read_line(&mut line).unwrap() > 0 {
            seen.push_str(&line);
            if line.contains("ask") {
                stdin.write_all(b"hello\n").unwrap();
            }
            line.clear();
        }
        let status = child.wait().unwrap();
        assert!(seen.contains("got hello"), "{seen}");
        assert_eq!(status.code(), Some(6), "{seen}");
    }

    // (b2) A system image boots its own init; `ignis stop` shuts it down cleanly.
    let sys = env.busybox_image(
        "sys:1",
        true,
        &[(
            "etc/inittab",
            "::sysinit:/bin/busybox echo SYSTEM-IMAGE-BOOTED\n::shutdown:/bin/busybox echo SYSTEM-IMAGE-SHUTDOWN\n::shutdown:/bin/busybox umount -a -r\n",
            0o644,
        )],
        &[],
    );
    let id = env.ok_id(&["run", "--name", "sys", &sys]);
    let v = env.vm_json("sys");
    assert_eq!(v["spec"]["mode"], "system");
    assert_eq!(v["status"]["state"], "running");
    common::wait::until("the image's init to boot", Duration::from_secs(30), || {
        env.ok(&["logs", "sys"]).contains("SYSTEM-IMAGE-BOOTED")
    });
    // Least privilege: QEMU runs as the VM's own uid, under seccomp, in a
    // cgroup with the VM's CPU and memory caps (inspect and the kernel agree).
    let v = env.vm_json("sys");
    let c = &v["status"]["confinement"];
    let pid = v["status"]["vmmPid"].as_u64().unwrap();
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        proc_status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(c["sandbox"], serde_json::json!(["seccomp"]), "{c}");
    let uid = c["user"]
        .as_str()
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .to_string();
    assert!(uid.parse::<u32>().unwrap() >= 1_000_000_000, "{c}");
    assert!(
        field("Uid:").iter().all(|u| *u == uid),
        "QEMU runs as {uid}: {proc_status}"
    );
    assert_eq!(field("Seccomp:"), ["2"], "QEMU is under a seccomp filter");
    let cg = &c["cgroup"];
    assert_eq!(cg["cpuQuotaUs"], 100_000, "{c}");
    assert_eq!(
        cg["memoryMaxBytes"].as_u64().unwrap(),
        (512 + 256 + 128) << 20,
        "guest RAM + QEMU/TCG overhead: {c}"
    );
    let proc_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for p in cg["paths"].as_array().unwrap() {
        let rel = p
            .as_str()
            .unwrap()
            .split("/ignis/")
            .nth(1)
            .unwrap()
            .to_string();
        assert!(
            proc_cgroup.contains(&format!("/ignis/{rel}")),
            "{proc_cgroup}"
        );
    }
    let cgroup_paths: Vec<String> = cg["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    // Pause freezes the vCPUs (QMP stop); stop thaws before shutting down.
    env.ok(&["pause", "sys"]);
    assert_eq!(env.vm_json("sys")["status"]["paused"], true);
    env.ok(&["unpause", "sys"]);
    env.ok(&["pause", "sys"]);
    env.ok(&["stop", "--time", "60", "sys"]);
    let v = env.vm_json("sys");
    assert_eq!(v["status"]["reason"], "stopped", "{v}");
    assert_eq!(v["status"]["exitCode"], 0);
    assert!(env.ok(&["logs", "sys"]).contains("SYSTEM-IMAGE-SHUTDOWN"));
    // The supervisor records the exit, then releases the VM's resources:
    // `stop` may return just before the cgroup goes.
    for p in &cgroup_paths {
        common::wait::until(
            &format!("cgroup {p} to go after stop"),
            Duration::from_secs(10),
            || !std::path::Path::new(p).exists(),
        );
    }
    let data = env.root().join("vms").join(&id).join("data.ext4");
    common::assert_fsck_clean(&data, "writable disk not clean");

    // (b3) After kill -9 of the supervisor, ps tells the truth and no QEMU is left.
    let id2 = env.ok_id(&[
        "run",
        "--name",
        "victim",
        &app,
        "/bin/busybox",
        "sleep",
        "600",
    ]);
    let v = common::wait_state(&env, "victim", "running");
    let sup = v["status"]["supervisorPid"].as_u64().unwrap();
    assert!(!env.processes_with(&id2).is_empty(), "QEMU runs");
    common::kill9(sup);
    common::wait::until("the supervisor to die", Duration::from_secs(10), || {
        common::process_gone(sup)
    });
    let ps = env.ok(&["ps", "-a", "--filter", "name=victim"]);
    assert!(ps.contains("Exited") && !ps.contains("Up "), "{ps}");
    let v = env.vm_json("victim");
    common::assert_supervisor_died(&v);
    common::wait::until(
        "QEMU to die with its supervisor",
        Duration::from_secs(10),
        || env.processes_with(&id2).is_empty(),
    );

    env.ok(&["rm", "sys", "victim"]);
    assert_eq!(env.count("vms"), 0, "no VM files left");
    assert!(env.processes_with(&id).is_empty());
}

/// `--restart always` on a real guest: it survives its own `reboot`, a
/// SIGKILLed QEMU and a (simulated) host reboot, which `ignis daemon`
/// brings it back from. The host's boot ID is faked (`IGNIS_BOOT_ID`):
/// every command runs on boot A until the host "goes down" (its
/// supervisor and QEMU killed), then the daemon starts on boot B.
#[test]
fn restart_always_survives_a_guest_reboot_a_killed_vmm_and_a_host_reboot() {
    let Some(env) = common::linux_env() else {
        return;
    };
    let app = env.busybox_image("app:1", false, &[], &["/bin/busybox", "true"]);
    let on = |boot: &str, args: &[&str]| env.ok_with(&[("IGNIS_BOOT_ID", boot)], args);
    let json = |boot: &str| -> serde_json::Value {
        serde_json::from_str(&on(boot, &["inspect", "r"])).unwrap()
    };
    let running = |boot: &str, what: &str, ok: &dyn Fn(&serde_json::Value) -> bool| {
        common::wait::for_value(what, Duration::from_secs(180), || {
            let v = json(boot);
            (v["status"]["state"] == "running" && v["status"]["readyMs"].is_u64() && ok(&v))
                .then_some(v)
        })
    };
    // The first boot reboots the guest (the kernel's own restart, as
    // `reboot -f`); the next ones run.
    on(
        "A",
        &[
            "run",
            "-d",
            "--no-wait",
            "--restart",
            "always",
            "--name",
            "r",
            &app,
            "/bin/busybox",
            "sh",
            "-c",
            "if [ ! -e /rebooted ]; then : > /rebooted; sync; busybox reboot -f; fi; exec busybox sleep 100000",
        ],
    );
    let v = running("A", "the guest to come back from its reboot", &|v| {
        v["status"]["restartCount"] == 1
    });
    assert!(
        on("A", &["logs", "r"]).contains("reboot: Restarting system"),
        "the guest rebooted"
    );
    // QEMU killed from outside: a crash, restarted by the policy.
    let vmm = v["status"]["vmmPid"].as_u64().unwrap();
    assert!(common::kill9(vmm));
    let v = running("A", "the VM to come back from a killed QEMU", &|v| {
        v["status"]["restartCount"] == 2
    });
    assert_ne!(v["status"]["vmmPid"].as_u64(), Some(vmm));
    // The host goes down: the supervisor dies, its QEMU with it.
    let sup = v["status"]["supervisorPid"].as_u64().unwrap();
    assert!(common::kill9(sup));
    let id = v["id"].as_str().unwrap().to_string();
    common::wait::until("QEMU to go with the host", Duration::from_secs(10), || {
        env.processes_with(&id).is_empty()
    });
    // It boots again: the daemon starts the VM.
    let sock = env.root().join("daemon.sock");
    let daemon_log = env.dir.path().join("daemon.log");
    let daemon = env
        .cmd()
        .env("IGNIS_BOOT_ID", "B")
        .args(["daemon", "--socket", sock.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&daemon_log).unwrap())
        .spawn()
        .unwrap();
    // Stopped however the test ends (a failed assertion too), and the VM
    // it started with it.
    struct Stop<'a>(std::process::Child, &'a common::Env);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            let _ = self
                .1
                .cmd()
                .env("IGNIS_BOOT_ID", "B")
                .args(["rm", "-f", "r"])
                .output();
        }
    }
    let daemon = Stop(daemon, &env);
    let back = common::wait::within(Duration::from_secs(180), || {
        let v = json("B");
        v["status"]["state"] == "running" && v["status"]["readyMs"].is_u64()
    });
    assert!(
        back,
        "the daemon did not start the VM after the reboot: {}\ndaemon: {}\nconsole: {}\nsupervisor: {}",
        json("B"),
        std::fs::read_to_string(&daemon_log).unwrap_or_default(),
        on("B", &["logs", "r"]),
        std::fs::read_to_string(env.root().join("vms").join(&id).join("supervisor.log"))
            .unwrap_or_default()
    );
    let v = json("B");
    assert_eq!(v["status"]["bootId"], "B");
    on("B", &["stop", "r"]);
    let v = json("B");
    assert_eq!(v["status"]["state"], "exited", "{v}");
    assert_eq!(v["status"]["stoppedByUser"], true);
    drop(daemon);
    assert!(env.processes_with(&id).is_empty());
}
