//! Live tier (b), command-line parity on a real Linux guest (QEMU: TCG
//! here, KVM where usable): `cp` of procfs files (stat says 0 bytes),
//! `cp -L`, `--copy-files` of a directory, `stats --no-stream` numbers that move when the guest burns
//! CPU, `logs --tail/-t`. Skips with one line naming the missing piece.

mod common;

fn stats(env: &common::Env, vm: &str) -> serde_json::Value {
    let out = env.ok(&["stats", "--no-stream", "-o", "json", vm]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

#[test]
fn procfs_cp_follow_link_stats_and_logs_on_qemu() {
    let Some(env) = common::linux_env() else {
        return;
    };
    let app = env.busybox_image(
        "parity-app:1",
        false,
        &[("root/.keep", "", 0o644)],
        &["/bin/busybox", "sleep", "100000"],
    );
    // --copy-files of a directory: its files at their paths under the
    // destination, modes kept.
    let tree = env.dir.path().join("cfg");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("a.conf"), "a=1\n").unwrap();
    std::fs::write(tree.join("sub/run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(
        tree.join("sub/run.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let copy = format!("{}:/opt/cfg", tree.display());
    env.ok_id(&["run", "-n", "box", "--copy-files", &copy, &app]);
    assert_eq!(
        env.ok(&["exec", "box", "busybox", "cat", "/opt/cfg/a.conf"]),
        "a=1\n"
    );
    assert_eq!(env.ok(&["exec", "box", "/opt/cfg/sub/run.sh"]), "ran\n");

    // /proc/version: 0 bytes by stat, a line of text when read.
    let out = env.dir.path().join("version");
    env.ok(&["cp", "box:/proc/version", out.to_str().unwrap()]);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("Linux version "), "{text:?}");
    assert_eq!(
        text,
        env.ok(&["exec", "box", "busybox", "cat", "/proc/version"])
    );
    // sysfs says 4096 bytes: the file is what it reads, no padding.
    let mtu = env.dir.path().join("mtu");
    env.ok(&["cp", "box:/sys/class/net/lo/mtu", mtu.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&mtu).unwrap(), "65536\n");

    // cp -L: the file a link points to, under the link's name.
    env.ok(&[
        "exec",
        "box",
        "sh",
        "-c",
        "echo pointed > /root/t; busybox ln -s /root/t /root/l",
    ]);
    let link = env.dir.path().join("l-link");
    env.ok(&["cp", "box:/root/l", link.to_str().unwrap()]);
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    let followed = env.dir.path().join("l-file");
    env.ok(&["cp", "-L", "box:/root/l", followed.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&followed).unwrap(), "pointed\n");

    // stats: memory in use, the VM's limit, and CPU that rises when the
    // guest spins.
    let idle = stats(&env, "box");
    assert_eq!(idle["name"], "box");
    assert!(idle["running"].as_bool().unwrap(), "{idle}");
    assert!(idle["memoryBytes"].as_u64().unwrap() > 16 << 20, "{idle}");
    let mib = env.vm_json("box")["spec"]["memoryMib"].as_u64().unwrap();
    assert_eq!(idle["memoryLimitBytes"].as_u64().unwrap(), mib << 20);
    env.ok(&[
        "exec",
        "box",
        "sh",
        "-c",
        "busybox setsid sh -c 'echo $$ > /root/spin; while :; do :; done' </dev/null >/dev/null 2>&1 &",
    ]);
    // The loop starts when the guest schedules it, and the host is shared:
    // sampled until it shows (a guest that never spins fails).
    let i = idle["cpuPercent"].as_f64().unwrap();
    let mut busy = stats(&env, "box");
    for _ in 0..30 {
        if busy["cpuPercent"].as_f64().unwrap() > 20.0_f64.max(i) {
            break;
        }
        busy = stats(&env, "box");
    }
    let b = busy["cpuPercent"].as_f64().unwrap();
    assert!(b > 20.0 && b > i, "idle {i}%, busy {b}%");
    assert!(busy["cpuNs"].as_u64() > idle["cpuNs"].as_u64(), "{busy}");
    // The table shows the same.
    let table = env.ok(&["stats", "--no-stream", "box"]);
    assert!(
        table.starts_with("VM ID") && table.contains("box"),
        "{table}"
    );
    env.ok(&["exec", "box", "sh", "-c", "kill $(busybox cat /root/spin)"]);

    // logs: the tail, and every line stamped with when it was written.
    // (The kernel is quiet: the init's report and a blank line at least.)
    let all = env.ok(&["logs", "box"]);
    assert!(
        all.lines().count() >= 2 && all.contains("IGNIS-INIT ready"),
        "{all:?}"
    );
    let tail = env.ok(&["logs", "--tail", "3", "box"]);
    let last3: Vec<&str> = all
        .lines()
        .rev()
        .take(3)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    assert_eq!(tail.lines().collect::<Vec<_>>(), last3);
    let stamped = env.ok(&["logs", "-t", "--tail", "3", "box"]);
    assert_eq!(stamped.lines().count(), last3.len());
    for (s, l) in stamped.lines().zip(&last3) {
        let (ts, rest) = s.split_once(' ').unwrap();
        assert!(
            ts.len() == 30 && ts.ends_with('Z') && ts.starts_with("20"),
            "{s}"
        );
        assert_eq!(rest, *l);
    }
    env.ok(&["rm", "-f", "box"]);
}
