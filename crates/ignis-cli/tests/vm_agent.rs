//! Live tier (b), guest agent: `ignis exec`, `cp`, readiness/health, fork
//! hooks and the clean stop through the agent, on a real Linux guest
//! (QEMU: the agent's channel is a virtio-serial port). Skips with one line
//! naming the missing piece.

mod common;

use std::io::Write;

fn sha256(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn exec_cp_health_hooks_and_clean_stop_through_the_agent() {
    let Some(env) = common::linux_env() else {
        return;
    };
    let app = env.busybox_image(
        "agent-app:1",
        false,
        &[
            (
                "etc/passwd",
                "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/sh\n",
                0o644,
            ),
            ("root/.keep", "", 0o644),
        ],
        &["/bin/busybox", "sleep", "100000"],
    );
    let id = env.ok_id(&["run", "--name", "box", &app]);
    // `run` returned once the agent answered.
    let v = env.vm_json("box");
    assert_eq!(v["status"]["health"], "healthy", "{v}");
    assert!(v["status"]["agentMs"].as_u64().is_some(), "{v}");
    assert!(env.ok(&["ps"]).contains("(healthy)"));

    // stdout, stderr and the exit code, kept apart.
    let out = env.run(&["exec", "box", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    common::assert_exit(&out, 3);
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    // -e, -w, -u; the image's PATH; a missing program is 127.
    let out = env.ok(&[
        "exec",
        "-e",
        "A=b",
        "-w",
        "/tmp",
        "-u",
        "www",
        "box",
        "sh",
        "-c",
        "echo $A $(pwd) $(id -u)",
    ]);
    assert_eq!(out, "b /tmp 33\n");
    let out = env.run(&["exec", "box", "no-such-program"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-program"));
    // stdin with -i.
    let mut child = env
        .cmd()
        .args(["exec", "-i", "box", "sh", "-c", "tr a-z A-Z"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"piped through\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.stdout, b"PIPED THROUGH\n");
    // (The image has busybox and sh only: applets run through `sh -c`.)
    // A PTY with -t.
    let out = env.ok(&["exec", "-t", "box", "sh", "-c", "tty"]);
    assert!(out.starts_with("/dev/pts/"), "{out:?}");

    // 20 concurrent execs each get their own output and code.
    let threads: Vec<_> = (0..20)
        .map(|i| {
            let mut c = env.cmd();
            c.args(["exec", "box", "sh", "-c", &format!("echo n{i}; exit {i}")]);
            std::thread::spawn(move || c.output().unwrap())
        })
        .collect();
    for (i, t) in (0i32..).zip(threads) {
        let out = t.join().unwrap();
        assert_eq!(out.status.code(), Some(i));
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("n{i}\n"));
    }

    // A 200 MB cp round trip keeps the sha256.
    let big = env.dir.path().join("big.bin");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..200 {
            for chunk in block.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&block).unwrap();
        }
    }
    let want = sha256(&big);
    env.ok(&["cp", big.to_str().unwrap(), "box:/root/big.bin"]);
    let inside = env.ok(&["exec", "box", "sh", "-c", "sha256sum /root/big.bin"]);
    assert!(inside.starts_with(&want), "{inside} vs {want}");
    let back = env.dir.path().join("back");
    std::fs::create_dir(&back).unwrap();
    env.ok(&["cp", "box:/root/big.bin", back.to_str().unwrap()]);
    assert_eq!(sha256(&back.join("big.bin")), want);
    std::fs::remove_file(&big).unwrap();
    // Directories and modes; a missing source is a clear error.
    let tree = env.dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(
        tree.join("sub/run.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .unwrap();
    env.ok(&["cp", tree.to_str().unwrap(), "box:/opt"]);
    assert_eq!(env.ok(&["exec", "box", "/opt/sub/run.sh"]), "ran\n");
    assert_eq!(
        env.ok(&["exec", "box", "sh", "-c", "stat -c %a /opt/sub/run.sh"]),
        "750\n"
    );
    let out = env.run(&["cp", "box:/no/such", back.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such"));

    // Fork-time hooks: hostname, entropy (RNG reseed), clock.
    env.ok(&[
        "__configure",
        "box",
        "--hostname",
        "forked-1",
        "--entropy",
        "00112233445566778899aabbccddeeff",
        "--sync-clock",
    ]);
    assert_eq!(
        env.ok(&["exec", "box", "sh", "-c", "hostname"]),
        "forked-1\n"
    );
    // The entropy reaches the agent, which feeds it to the kernel
    // (RNDADDENTROPY, RNDRESEEDCRNG: either failing fails __configure):
    // bytes that are not hex are refused by the agent, not dropped.
    let out = env.run(&["__configure", "box", "--entropy", "zz"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("entropy is not hex"), "{err}");
    let guest_now: i64 = env
        .ok(&["exec", "box", "sh", "-c", "date +%s"])
        .trim()
        .parse()
        .unwrap();
    let host_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (guest_now - host_now).abs() < 30,
        "{guest_now} vs {host_now}"
    );

    // Stop goes through the agent; the writable disk is clean afterwards.
    env.ok(&["stop", "box"]);
    let v = env.vm_json("box");
    assert_eq!(v["status"]["reason"], "stopped", "{v}");
    let data = env.root().join("vms").join(&id).join("data.ext4");
    common::assert_fsck_clean(&data, "not clean");
    // The copy survived on the writable disk.
    let ls = common::debugfs(&data, "ls -l /upper/root");
    assert!(ls.contains("big.bin"), "{ls}");
    // exec on a stopped VM: a clear error, not a hang.
    let out = env.run(&["exec", "box", "sh", "-c", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not running"));

    // A system image (busybox init as PID 1) gets the agent too, and the
    // agent's shutdown goes through its init.
    let sys = env.busybox_image(
        "agent-sys:1",
        true,
        &[("etc/inittab", "::sysinit:/bin/busybox echo SYS-UP\n::shutdown:/bin/busybox echo SYS-DOWN\n::shutdown:/bin/busybox umount -a -r\n", 0o644)],
        &[],
    );
    let sid = env.ok_id(&["run", "--name", "sys", &sys]);
    assert_eq!(
        env.ok(&["exec", "sys", "sh", "-c", "cat /proc/1/comm"]),
        "init\n"
    );
    env.ok(&["stop", "sys"]);
    assert!(env.ok(&["logs", "sys"]).contains("SYS-DOWN"));
    let v = env.vm_json("sys");
    assert_eq!(v["status"]["reason"], "stopped", "{v}");
    env.ok(&["rm", "box", "sys"]);
    assert!(env.processes_with(&id).is_empty() && env.processes_with(&sid).is_empty());
    assert_eq!(env.count("vms"), 0);
}
