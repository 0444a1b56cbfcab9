//! The VM lifecycle through the real binary, on the fake VMM (a script
//! speaking the guest init's console protocol): supervisor, records, exit
//! codes, errors, crash truth. Needs `--features fake-vmm`.

#![cfg(feature = "fake-vmm")]

mod common;

use common::{wait, Env};
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

/// [`Env::fake_app`] for the tests of bridge networking, which need root
/// (`None` after the skip line).
fn bridge_env() -> Option<(Env, String)> {
    if !rustix::process::geteuid().is_root() {
        common::tier::skip(common::tier::ROOT, "bridge networking needs root");
        return None;
    }
    let (mut env, img) = Env::fake_app();
    env.ran = Some(common::tier::ran(common::tier::ROOT));
    Some((env, img))
}

/// `create --backend fake --network bridge --size 64MB OPTS... IMG`.
fn bridged_create<'a>(opts: &[&'a str], img: &'a str) -> Vec<&'a str> {
    let mut args = vec![
        "create",
        "--backend",
        "fake",
        "--network",
        "bridge",
        "--size",
        "64MB",
    ];
    args.extend_from_slice(opts);
    args.push(img);
    args
}

/// Waits for the VM `vm`, being started by another process, to exist and
/// run.
fn wait_running(env: &Env, vm: &str) {
    wait::until(&format!("{vm} to run"), Duration::from_secs(10), || {
        env.run(&["inspect", vm]).status.success()
            && env.vm_json(vm)["status"]["state"] == "running"
    });
}

/// Spawns ignis `args` with `stdout`, its stdin a pipe, returned.
fn spawn_with_stdin(
    env: &Env,
    args: &[&str],
    stdout: std::process::Stdio,
) -> (std::process::Child, std::process::ChildStdin) {
    let mut child = env
        .cmd()
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(stdout)
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    (child, stdin)
}

/// Asserts that ignis `args` is refused as a conflict (exit 4); `why` is
/// the failure message.
fn assert_conflict(env: &Env, args: &[&str], why: &str) {
    assert_eq!(env.run(args).status.code(), Some(4), "{why}");
}

#[test]
fn run_rm_passes_the_exit_code_and_leaves_nothing() {
    let (env, img) = Env::fake_app();
    let out = env
        .cmd()
        .args([
            "run",
            "--rm",
            "--backend",
            "fake",
            "--kernel-args",
            "ignis.fake=exit:3",
            &img,
        ])
        .output()
        .unwrap();
    common::assert_exit(&out, 3);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "workload output\n");
    // As `docker run --rm`: once it returned, the VM is gone (its
    // supervisor removed it), and its directory follows.
    assert_eq!(env.ok(&["ps", "-a", "-Q"]), "");
    wait::until(
        "the --rm VM's directory to go",
        Duration::from_secs(10),
        || env.count("vms") == 0,
    );
}

/// `--stop-timeout`: kept in the spec and the manifest, checked, and what
/// a stop without `-t` waits for a guest that does not shut down before
/// killing it; `-t` still wins.
#[test]
fn stop_timeout_is_the_vms_own_default() {
    let (env, img) = Env::fake_app();
    let deaf = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "run",
            "-d",
            "--backend",
            "fake",
            "--kernel-args",
            "ignis.fake=deaf",
            "--name",
            name,
        ];
        args.extend(extra);
        args.push(&img);
        env.ok_id(&args)
    };
    deaf("d1", &["--stop-timeout", "1"]);
    assert_eq!(env.vm_json("d1")["spec"]["stopTimeout"], 1);
    let m = env.ok(&["get", "vm", "d1"]);
    assert!(m.contains("stopTimeout: 1"), "{m}");
    env.ok(&["stop", "d1"]);
    let v = env.vm_json("d1");
    assert_eq!(
        v["status"]["reason"], "stopped (killed after the timeout)",
        "{v}"
    );
    assert_eq!(v["status"]["exitCode"], 137);
    // A day's timeout, overridden by -t: the stop returns.
    deaf("d2", &["--stop-timeout", "86400"]);
    env.ok(&["stop", "-t", "0", "d2"]);
    assert_eq!(env.vm_json("d2")["status"]["exitCode"], 137);
    // Out of range: refused, naming the flag, nothing made.
    let out = env.run(&[
        "create",
        "--backend",
        "fake",
        "--stop-timeout",
        "86401",
        &img,
    ]);
    common::assert_exit(&out, 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--stop-timeout"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = env.run(&["stop", "-t", "86401", "d1"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert_eq!(env.ok(&["ps", "-a", "-q"]).lines().count(), 2);
    env.ok(&["rm", "-f", "d1", "d2"]);
}

#[test]
fn detached_run_ps_stop_rm() {
    let (env, img) = Env::fake_app();
    let id = env.ok_id(&[
        "run",
        "--backend",
        "fake",
        "--name",
        "web",
        "-l",
        "tier=front",
        &img,
    ]);
    assert_eq!(id.len(), 16);
    let ps = env.ok(&["ps"]);
    assert!(ps.contains("web") && ps.contains("Up"), "{ps}");
    assert_eq!(
        env.ok(&["ps", "--filter", "label=tier=front", "-Q"]).trim(),
        id
    );
    assert_eq!(
        env.ok(&["ps", "--filter", "label=tier=back", "-Q"]).trim(),
        ""
    );
    let v = env.vm_json("web");
    assert_eq!(v["status"]["state"], "running");
    // -o yaml: the same record as the JSON, times as RFC 3339 strings.
    let y: serde_json::Value =
        serde_yaml::from_str(&env.ok(&["inspect", "web", "-o", "yaml"])).unwrap();
    assert_eq!(y, v);
    let created = v["created"].as_str().expect("created is a string");
    assert!(
        time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339)
            .is_ok(),
        "{created}"
    );
    let sup = v["status"]["supervisorPid"].as_u64().unwrap();
    assert!(
        v["status"]["readyMs"].is_u64(),
        "run waits for the guest to report ready"
    );
    env.ok(&["stop", "web"]);
    let v = env.vm_json(&id[..6]);
    assert_eq!(v["status"]["state"], "exited");
    assert_eq!(v["status"]["exitCode"], 0);
    assert_eq!(v["status"]["reason"], "stopped");
    let logs = env.ok(&["logs", "web"]);
    assert!(logs.contains("IGNIS-INIT ready"), "{logs}");
    assert!(
        env.ok(&["ps"]).lines().count() == 1,
        "ps without -a hides exited VMs"
    );
    // Start again: same VM, new run.
    env.ok(&["start", "web"]);
    assert_eq!(env.vm_json("web")["status"]["state"], "running");
    assert_conflict(&env, &["rm", "web"], "rm of a running VM is a conflict");
    env.ok(&["rm", "-f", "web"]);
    assert_eq!(env.count("vms"), 0);
    assert!(env.processes_with(&id).is_empty(), "no VMM left");
    assert!(common::process_gone(sup), "the supervisor exited");
}

#[test]
fn killed_supervisor_is_reported_and_takes_its_vmm_along() {
    let (env, img) = Env::fake_app();
    let id = env.ok_id(&["run", "--backend", "fake", &img]);
    let v = env.vm_json(&id);
    let sup = v["status"]["supervisorPid"].as_u64().unwrap();
    let vmm = v["status"]["vmmPid"].as_u64().unwrap();
    assert!(common::kill9(sup));
    wait::until("the supervisor to die", Duration::from_secs(10), || {
        common::process_gone(sup)
    });
    let ps = env.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited"), "ps must not claim it runs: {ps}");
    let v = env.vm_json(&id);
    assert_eq!(v["status"]["state"], "exited");
    common::assert_supervisor_died(&v);
    assert!(
        common::process_gone(vmm),
        "the VMM died with its supervisor"
    );
    env.ok(&["rm", &id]);
}

#[test]
fn kill_reports_137() {
    let (env, img) = Env::fake_app();
    let id = env.ok_id(&["run", "--backend", "fake", &img]);
    env.ok(&["kill", &id]);
    let v = env.vm_json(&id);
    assert_eq!(v["status"]["exitCode"], 137);
    assert_eq!(v["status"]["reason"], "killed");
    assert_conflict(&env, &["kill", &id], "killing a stopped VM is a conflict");
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let (env, img) = Env::fake_app();
    env.ok(&["create", "--backend", "fake", "--name", "taken", &img]);
    let before = env.count("vms");
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["--name", "taken"], 4, "already used"),
        (vec!["--name", "bad name"], 1, "invalid name"),
        (vec!["--cpus", "0"], 1, "out of range"),
        (vec!["--memory", "1MB"], 1, "out of range"),
        (vec!["--size", "1MB"], 1, "too small"),
        (vec!["-e", "NOVALUE"], 1, "KEY=VALUE"),
        (
            vec!["--copy-files", "/nonexistent:/x"],
            1,
            "cannot read /nonexistent",
        ),
        (
            vec!["--copy-files", "/etc/hostname:relative"],
            1,
            "must be absolute",
        ),
        (vec!["--kernel", "nope"], 3, "no kernel named"),
        (vec!["--backend", "bogus"], 1, "unknown backend"),
    ];
    for (args, code, msg) in cases {
        let mut full = vec!["create"];
        if !args.contains(&"--backend") {
            full.extend(["--backend", "fake"]);
        }
        full.extend(args.iter());
        full.push(&img);
        let out = env.run(&full);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(msg), "{args:?}: {err}");
        assert_eq!(env.count("vms"), before, "{args:?} left a VM directory");
    }
    let out = env.run(&["run", "--backend", "fake", "--cpus", "0", &img]);
    assert_eq!(
        out.status.code(),
        Some(125),
        "run reports its own failures as 125"
    );
    assert_eq!(env.ok(&["ps", "-a", "-Q"]).lines().count(), 1);
}

#[test]
fn image_without_init_or_command_fails_fast() {
    let env = Env::new();
    env.fake_kernel();
    let img = env.busybox_image("nocmd:1", false, &[], &[]);
    let out = env.run(&["create", "--backend", "fake", &img]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("neither /sbin/init nor an Entrypoint/Cmd") && err.contains("ignis run"),
        "{err}"
    );
    // With a command it is fine; a system image needs none.
    env.ok(&["create", "--backend", "fake", &img, "/bin/busybox", "true"]);
    let sys = env.busybox_image("sys:1", true, &[], &[]);
    let id = env.ok_id(&["create", "--backend", "fake", &sys]);
    assert_eq!(env.vm_json(&id)["spec"]["mode"], "system");
}

#[test]
fn no_default_kernel_says_how_to_get_one() {
    let env = Env::new();
    let img = env.busybox_image("k:1", false, &[], &["/bin/busybox", "true"]);
    let out = env.run(&["create", "--backend", "fake", &img]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("ignis kernel import apt:linux-image-amd64 --default"));
}

#[test]
fn images_and_kernels_in_use_are_protected() {
    let (env, img) = Env::fake_app();
    env.ok(&["create", "--backend", "fake", "--name", "user", &img]);
    let out = env.run(&["image", "rm", &img]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is used by vm"));
    let out = env.run(&["kernel", "rm", "default"]);
    assert_eq!(out.status.code(), Some(4));
    env.ok(&["rm", "user"]);
    env.ok(&["image", "rm", &img]);
    env.ok(&["kernel", "rm", "default"]);
    env.ok(&["system", "prune"]);
    assert!(env.blobs().is_empty(), "{:?}", env.blobs());
    assert_eq!(env.count("disks") + env.count("vms"), 0);
}

/// `-p` on CNI networks only goes to the first CNI NIC's network's plugins
/// with the portMappings capability: a network without one, and a port
/// portmap cannot publish ([::1]), are refused at create, before anything
/// is made (no VM, no attachment record, no namespace).
#[test]
fn ports_on_a_cni_network_without_portmap_are_refused_leaving_nothing() {
    let (env, img) = Env::fake_app();
    let conf = env.dir.path().join("cni-conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("10-plain.conflist"),
        r#"{"cniVersion":"1.0.0","name":"plain","plugins":[{"type":"bridge"}]}"#,
    )
    .unwrap();
    std::fs::write(
        conf.join("20-pm.conflist"),
        r#"{"cniVersion":"1.0.0","name":"pm","plugins":[{"type":"bridge"},
            {"type":"portmap","capabilities":{"portMappings":true}}]}"#,
    )
    .unwrap();
    let conf = conf.to_str().unwrap();
    let without = "-p: published ports (0.0.0.0:8080->80/tcp, 127.0.0.1:53->53/udp) need a plugin with the portMappings capability on the CNI network plain, and it has none: add the portmap plugin to its conflist";
    for (nets, ports, msg) in [
        (
            &["cni:plain"][..],
            &["8080:80", "127.0.0.1:53:53/udp"][..],
            without,
        ),
        // The default network is the first file's.
        (&["cni"], &["8080:80", "127.0.0.1:53:53/udp"], without),
        // The first CNI NIC's network is the one.
        (
            &["none", "cni:plain", "cni:pm"],
            &["8080:80", "127.0.0.1:53:53/udp"],
            without,
        ),
        (
            &["cni:pm"],
            &["[::1]:8080:80"],
            "-p: [::1]:8080->80/tcp: a CNI network's portmap plugin cannot publish on [::1]",
        ),
    ] {
        let mut args = vec!["create", "--backend", "fake", "--cni-conf-dir", conf];
        for n in nets {
            args.extend(["--network", n]);
        }
        for p in ports {
            args.extend(["-p", p]);
        }
        args.push(&img);
        let out = env.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(msg), "{args:?}: {err}");
        assert_eq!(env.count("vms"), 0, "{args:?} left a VM directory");
        assert_eq!(env.count("cni"), 0, "{args:?} left an attachment record");
    }
    assert!(env.ok(&["ps", "-a", "-q"]).trim().is_empty());
}

#[test]
fn a_killed_create_leaves_nothing_after_prune() {
    let (env, img) = Env::fake_app();
    let out = env.run_fault("vm:disk-made", &["create", "--backend", "fake", &img]);
    assert_eq!(out.status.signal(), Some(9));
    assert_eq!(env.ok(&["ps", "-a", "-Q"]), "");
    assert_eq!(env.count("vms"), 1, "the disk was made before the kill");
    env.ok(&["system", "prune"]);
    assert_eq!(env.count("vms"), 0);
}

#[test]
fn a_host_reboot_is_detected_and_reported() {
    let (env, img) = Env::fake_app();
    let id = env.ok_id(&["run", "--backend", "fake", &img]);
    // Simulate a reboot: the record's boot ID is not this boot's.
    let db = rusqlite::Connection::open(env.root().join("state.db")).unwrap();
    let rec: String = db
        .query_row(
            "SELECT record FROM objects WHERE kind = 'vm' AND id = ?1",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&rec).unwrap();
    v["status"]["bootId"] = serde_json::json!("00000000-0000-0000-0000-000000000000");
    db.execute(
        "UPDATE objects SET record = ?2 WHERE kind = 'vm' AND id = ?1",
        rusqlite::params![id, v.to_string()],
    )
    .unwrap();
    let ps = env.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited"), "{ps}");
    let v = env.vm_json(&id);
    assert_eq!(
        v["status"]["reason"],
        "host rebooted while the VM was running"
    );
    // Its (simulated) leftover VMM was stopped too.
    wait::until("the leftover VMM to go", Duration::from_secs(10), || {
        env.processes_with(&id).is_empty()
    });
    env.ok(&["rm", &id]);
}

#[test]
fn run_interactive_and_attach_forward_the_console_both_ways() {
    use std::io::Write;
    let (env, img) = Env::fake_app();
    let (child, mut stdin) = spawn_with_stdin(
        &env,
        &[
            "run",
            "-i",
            "--backend",
            "fake",
            "--kernel-args",
            "ignis.fake=cat",
            "--name",
            "talk",
            &img,
        ],
        std::process::Stdio::piped(),
    );
    wait_running(&env, "talk");
    stdin.write_all(b"hello\nquit\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("echo: hello") && text.contains("echo: quit"),
        "{text}"
    );
    assert!(
        !text.contains("IGNIS-INIT"),
        "init reports are not shown: {text}"
    );

    // attach to a running VM
    env.ok(&["start", "talk"]);
    // The console input is a pipe: what is written before attach
    // connects waits there.
    let (child, mut stdin) =
        spawn_with_stdin(&env, &["attach", "talk"], std::process::Stdio::piped());
    stdin.write_all(b"again\nquit\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("echo: again"));
    assert_eq!(env.vm_json("talk")["status"]["state"], "exited");
    assert_conflict(
        &env,
        &["attach", "talk"],
        "attaching to a stopped VM is a conflict",
    );
}

#[test]
fn concurrent_creates_from_several_processes_get_distinct_addresses() {
    // `create` records leases only; the host network is touched at start.
    let Some((env, img)) = bridge_env() else {
        return;
    };
    let children: Vec<_> = (0..12)
        .map(|i| {
            env.cmd()
                .env("IGNIS_NETWORK", "bridge")
                .args(common::fake_vm_args("create", &format!("n{i}"), &img))
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let vms: serde_json::Value =
        serde_json::from_str(&env.ok(&["ps", "-a", "-o", "json"])).unwrap();
    let mut ips: Vec<String> = vms
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["spec"]["network"]["ip"].as_str().unwrap().to_string())
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 12, "distinct leases: {ips:?}");
    // A fixed address that is taken is a conflict; removal frees it.
    let taken = ips[0].clone();
    let out = env
        .cmd()
        .env("IGNIS_NETWORK", "bridge")
        .args(["create", "--backend", "fake", "--ip", &taken, &img])
        .output()
        .unwrap();
    common::assert_exit(&out, 4);
    for v in vms.as_array().unwrap() {
        if v["spec"]["network"]["ip"] == taken.as_str() {
            env.ok(&["rm", v["id"].as_str().unwrap()]);
        }
    }
    env.ok(&bridged_create(&["--ip", &taken], &img));
    // --mac, and `network ls` / `network inspect -o yaml` of the leases.
    env.ok(&bridged_create(
        &["--mac", "02:42:0a:3d:00:77", "--name", "m"],
        &img,
    ));
    assert_eq!(
        env.vm_json("m")["spec"]["network"]["mac"],
        "02:42:0a:3d:00:77"
    );
    let ls = env.ok(&["network", "ls"]);
    let bridge = ls
        .lines()
        .find(|l| l.starts_with("bridge"))
        .expect("bridge row");
    let cols: Vec<&str> = bridge.split_whitespace().collect();
    assert_eq!(
        cols,
        ["bridge", "ignis0", "10.61.0.0/16", "10.61.0.1", "13"],
        "{ls}"
    );
    assert!(ls.lines().any(|l| l.trim() == "none"), "{ls}");
    let y: serde_json::Value =
        serde_yaml::from_str(&env.ok(&["network", "inspect", "-o", "yaml"])).unwrap();
    assert_eq!(y["leases"].as_array().unwrap().len(), 13, "{y}");
}

/// `--subnet` on the command line (not IGNIS_SUBNET): leases come from it.
#[test]
fn subnet_on_the_command_line_gives_the_addresses() {
    let Some((env, img)) = bridge_env() else {
        return;
    };
    let create = |name: &str| {
        env.cmd()
            .env_remove("IGNIS_SUBNET")
            .args(["--subnet", "10.77.5.0/24"])
            .args(bridged_create(&["--name", name], &img))
            .output()
            .unwrap()
    };
    assert!(create("s1").status.success());
    assert!(create("s2").status.success());
    assert_eq!(env.vm_json("s1")["spec"]["network"]["ip"], "10.77.5.2");
    assert_eq!(env.vm_json("s2")["spec"]["network"]["ip"], "10.77.5.3");
    let out = env
        .cmd()
        .args([
            "--subnet",
            "10.77.5.0/33",
            "create",
            "--backend",
            "fake",
            &img,
        ])
        .output()
        .unwrap();
    common::assert_exit(&out, 1);
}

#[test]
fn pause_and_unpause_freeze_the_vmm() {
    let (env, img) = Env::fake_app();
    let id = env.ok_id(&["run", "--backend", "fake", &img]);
    let vmm = env.vm_json(&id)["status"]["vmmPid"].as_u64().unwrap();
    let state = || {
        let stat = std::fs::read_to_string(format!("/proc/{vmm}/stat")).unwrap();
        stat.rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    env.ok(&["pause", &id]);
    assert!(env.ok(&["ps"]).contains("(Paused)"));
    assert_eq!(state(), "T", "the fake VMM is stopped");
    env.ok(&["unpause", &id]);
    assert_ne!(state(), "T");
    assert!(!env.ok(&["ps"]).contains("(Paused)"));
    env.ok(&["pause", &id]);
    // Stop thaws a paused VM first, so its guest can shut down cleanly.
    env.ok(&["stop", &id]);
    let v = env.vm_json(&id);
    assert_eq!(v["status"]["reason"], "stopped");
    assert!(v["status"].get("paused").is_none());
    assert_eq!(env.run(&["pause", &id]).status.code(), Some(4));
}

#[test]
fn a_vm_run_with_rm_stops_and_is_force_removed_cleanly() {
    let (env, img) = Env::fake_app();
    for verb in [&["stop"][..], &["kill"][..], &["rm", "-f"][..]] {
        let id = env.ok_id(&["run", "-d", "--rm", "--backend", "fake", &img]);
        // Docker's -q on a list: IDs only.
        let ids = env.ok(&["ps", "-a", "-q"]);
        assert_eq!(
            ids.trim(),
            env.ok(&["ps", "-a", "-Q"]).trim(),
            "ps -q lists IDs only"
        );
        assert!(id.starts_with(ids.trim()), "{ids}");
        let mut args = verb.to_vec();
        args.push(&id);
        // The VM removes itself as it ends; the verb still succeeds.
        let out = env.run(&args);
        assert!(
            out.status.success(),
            "{verb:?} of an --rm VM: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(env.processes_with(&id).is_empty(), "{verb:?}: nothing left");
        assert!(
            env.ok(&["ps", "-a", "-q"]).trim().is_empty(),
            "{verb:?}: the record went"
        );
    }
}

#[test]
fn version_flag_and_command_agree() {
    let env = Env::new();
    let flag = env.ok(&["--version"]);
    assert!(flag.starts_with("ignis "), "{flag}");
    assert_eq!(flag, env.ok(&["version"]));
}

/// `run -it`: the console on a terminal (a PTY from `script`), input
/// echoed back by the guest, and Ctrl-P Ctrl-Q detaches with the VM left
/// running.
#[test]
fn run_it_on_a_terminal_detaches_with_ctrl_p_ctrl_q() {
    use std::io::{Read, Write};
    let (env, img) = Env::fake_app();
    let ignis = env!("CARGO_BIN_EXE_ignis");
    // script(1) gives the command a PTY as its terminal.
    let mut child = std::process::Command::new("script")
        .args(["-q", "-e", "-f", "-c"])
        .arg(format!(
            "{ignis} run -it --backend fake --kernel-args ignis.fake=cat --name tty {img}"
        ))
        .arg("/dev/null")
        .env("IGNIS_ROOT", env.root())
        .env("IGNIS_NETWORK", "none")
        .env("IGNIS_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script (bsdutils)");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let text = || String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    wait_running(&env, "tty");
    stdin.write_all(b"hello\n").unwrap();
    assert!(
        wait::within(Duration::from_secs(10), || text().contains("echo: hello")),
        "no echo of the guest on the terminal: {:?}",
        text()
    );
    // Detach: Ctrl-P Ctrl-Q.
    stdin.write_all(b"\x10\x11").unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert!(status.success(), "{status}: {}", text());
    assert_eq!(
        env.vm_json("tty")["status"]["state"],
        "running",
        "detached, not stopped"
    );
    env.ok(&["rm", "-f", "tty"]);
}

/// `logs -f` follows the console while the VM runs and returns once it
/// stopped.
#[test]
fn logs_follow_streams_until_the_vm_stops() {
    use std::io::{BufRead, Write};
    let (env, img) = Env::fake_app();
    env.ok(&[
        "run",
        "--backend",
        "fake",
        "--kernel-args",
        "ignis.fake=cat",
        "--name",
        "f",
        &img,
    ]);
    let mut follow = env
        .cmd()
        .args(["logs", "-f", "f"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = follow.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let next_with = |needle: &str| loop {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("logs -f never showed {needle}"));
        if line.contains(needle) {
            break;
        }
    };
    next_with("IGNIS-INIT ready");
    let (mut attach, mut stdin) =
        spawn_with_stdin(&env, &["attach", "f"], std::process::Stdio::null());
    stdin.write_all(b"written later\n").unwrap();
    next_with("echo: written later");
    assert!(
        follow.try_wait().unwrap().is_none(),
        "logs -f still follows"
    );
    stdin.write_all(b"quit\n").unwrap();
    drop(stdin);
    attach.wait().unwrap();
    let status = wait::for_value(
        "logs -f to end with the VM",
        Duration::from_secs(10),
        || follow.try_wait().unwrap(),
    );
    assert!(status.success());
    reader.join().unwrap();
}

/// `--ssh=PUBKEY`: the key given (a line or a file) is recorded as is; no
/// key pair is generated.
#[test]
fn a_user_supplied_ssh_key_is_used_as_given() {
    let (env, img) = Env::fake_app();
    let key =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFake me@host";
    let id = env.ok_id(&[
        "create",
        "--backend",
        "fake",
        "--name",
        "k1",
        &format!("--ssh={key}"),
        &img,
    ]);
    let v = env.vm_json("k1");
    assert_eq!(v["spec"]["ssh"]["generated"], false, "{v}");
    assert_eq!(v["spec"]["ssh"]["authorizedKey"], key, "{v}");
    let dir = env.root().join("vms").join(&id);
    assert!(!dir.join("id_ed25519").exists(), "no key pair generated");
    let file = env.dir.path().join("me.pub");
    std::fs::write(&file, format!("{key}\n")).unwrap();
    env.ok(&[
        "create",
        "--backend",
        "fake",
        "--name",
        "k2",
        &format!("--ssh={}", file.display()),
        &img,
    ]);
    assert_eq!(env.vm_json("k2")["spec"]["ssh"]["authorizedKey"], key);
    let out = env.run(&["create", "--backend", "fake", "--ssh=not-a-key", &img]);
    common::assert_exit(&out, 1);
}

/// `run -d --backend fake --restart POLICY [--kernel-args ignis.fake=MODE] IMG`.
fn run_restarting(env: &Env, img: &str, policy: &str, mode: Option<&str>) -> String {
    let mut args = vec!["run", "-d", "--backend", "fake", "--restart", policy];
    let arg;
    if let Some(m) = mode {
        arg = format!("ignis.fake={m}");
        args.extend(["--kernel-args", &arg]);
    }
    args.push(img);
    env.ok_id(&args)
}

#[test]
fn on_failure_restarts_up_to_its_count_and_a_success_does_not_restart() {
    let (env, img) = Env::fake_app();
    let id = run_restarting(&env, &img, "on-failure:2", Some("exit:3"));
    let v = wait::for_value(
        "two restarts, then the end",
        Duration::from_secs(30),
        || {
            let v = env.vm_json(&id);
            (v["status"]["state"] == "exited" && v["status"]["restarting"].is_null()).then_some(v)
        },
    );
    assert_eq!(v["status"]["restartCount"], 2, "{v}");
    assert_eq!(v["status"]["exitCode"], 3);
    assert_eq!(v["spec"]["restart"], "on-failure:2");
    // Three runs wrote to the console.
    let logs = env.ok(&["logs", &id]);
    assert_eq!(logs.matches("workload output").count(), 3, "{logs}");
    let ok = run_restarting(&env, &img, "on-failure", Some("exit:0"));
    let v = common::wait_state(&env, &ok, "exited");
    assert!(v["status"]["restartCount"].is_null(), "{v}");
}

#[test]
fn always_restarts_a_killed_vmm_and_a_stop_keeps_it_down() {
    let (env, img) = Env::fake_app();
    let id = run_restarting(&env, &img, "always", None);
    let pid = |v: &serde_json::Value| v["status"]["vmmPid"].as_u64();
    let first = pid(&env.vm_json(&id)).expect("a VMM pid");
    assert!(common::kill9(first));
    let v = wait::for_value("the VMM to be restarted", Duration::from_secs(30), || {
        let v = env.vm_json(&id);
        (v["status"]["state"] == "running" && pid(&v).is_some_and(|p| p != first)).then_some(v)
    });
    assert_eq!(v["status"]["restartCount"], 1, "{v}");
    let ps: serde_json::Value = serde_json::from_str(&env.ok(&["ps", "-o", "json"])).unwrap();
    assert_eq!(ps[0]["status"]["restartCount"], 1, "{ps}");
    let table = env.ok(&["ps"]);
    assert!(table.contains("restarts: 1"), "{table}");
    // A stop is the user's: no restart, and it is remembered.
    env.ok(&["stop", &id]);
    let v = env.vm_json(&id);
    assert_eq!(v["status"]["state"], "exited");
    assert_eq!(v["status"]["stoppedByUser"], true);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(env.vm_json(&id)["status"]["state"], "exited", "stays down");
    env.ok(&["rm", &id]);
}

#[test]
fn a_guest_reboot_restarts_the_vm_whatever_its_policy() {
    let (env, img) = Env::fake_app();
    let id = run_restarting(&env, &img, "no", Some("reboot"));
    let v = wait::for_value("the rebooted VM to run", Duration::from_secs(30), || {
        let v = env.vm_json(&id);
        (v["status"]["state"] == "running" && v["status"]["restartCount"] == 1).then_some(v)
    });
    assert!(v["status"]["readyMs"].is_u64(), "{v}");
    env.ok(&["stop", &id]);
    assert_eq!(env.vm_json(&id)["status"]["restartCount"], 1);
}

#[test]
fn restart_policies_are_checked() {
    let (env, img) = Env::fake_app();
    let out = env.run(&[
        "create",
        "--backend",
        "fake",
        "--restart",
        "sometimes",
        &img,
    ]);
    common::assert_exit(&out, 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--restart") && err.contains("on-failure[:N]"),
        "{err}"
    );
    let out = env.run(&[
        "run",
        "--rm",
        "--backend",
        "fake",
        "--restart",
        "always",
        &img,
    ]);
    common::assert_exit(&out, 125);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--restart: cannot be combined with removing"),
        "{err}"
    );
    assert_eq!(env.ok(&["ps", "-a", "-Q"]), "", "nothing was created");
}

/// A host reboot (a new boot ID) under `always` and `unless-stopped` VMs:
/// `ignis daemon` starts them again at start-up, but not an
/// `unless-stopped` one the user stopped, nor one without a policy.
#[test]
fn the_daemon_brings_restart_policy_vms_back_after_a_host_reboot() {
    let (env, img) = Env::fake_app();
    fn boot(id: &str) -> [(&'static str, &str); 1] {
        [("IGNIS_BOOT_ID", id)]
    }
    // Every command runs on the boot it is given (ignis checks a running
    // VM's boot ID against this one's).
    let json = |b: &str, name: &str| -> serde_json::Value {
        serde_json::from_str(&env.ok_with(&boot(b), &["inspect", name])).unwrap()
    };
    let run = |policy: &str, name: &str| {
        env.ok_with(
            &boot("boot-1"),
            &[
                "run",
                "-d",
                "--backend",
                "fake",
                "--restart",
                policy,
                "--name",
                name,
                &img,
            ],
        );
    };
    run("always", "a");
    run("unless-stopped", "u");
    run("unless-stopped", "s");
    run("no", "n");
    env.ok_with(&boot("boot-1"), &["stop", "s"]);
    // One that restarted before (its supervisor forked a new watcher).
    let vmm = json("boot-1", "a")["status"]["vmmPid"].as_u64().unwrap();
    assert!(common::kill9(vmm));
    wait::until("a to restart", Duration::from_secs(30), || {
        let v = json("boot-1", "a");
        v["status"]["state"] == "running" && v["status"]["restartCount"] == 1
    });
    // The host goes down: every supervisor and VMM with it.
    for name in ["a", "u", "n"] {
        let v = json("boot-1", name);
        assert!(common::kill9(
            v["status"]["supervisorPid"].as_u64().unwrap()
        ));
    }
    let sock = env.root().join("daemon.sock");
    let mut daemon = env
        .cmd()
        .env("IGNIS_BOOT_ID", "boot-2")
        .args(["daemon", "--socket", sock.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let up = |name: &str| {
        wait::for_value(
            &format!("{name} to run again"),
            Duration::from_secs(30),
            || {
                let v = json("boot-2", name);
                (v["status"]["state"] == "running").then_some(v)
            },
        )
    };
    for name in ["a", "u"] {
        assert_eq!(up(name)["status"]["bootId"], "boot-2");
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    for name in ["s", "n"] {
        assert_eq!(json("boot-2", name)["status"]["state"], "exited", "{name}");
    }
    for name in ["a", "u"] {
        env.ok_with(&boot("boot-2"), &["rm", "-f", name]);
    }
}
