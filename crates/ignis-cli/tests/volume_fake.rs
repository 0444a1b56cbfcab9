//! Volumes on the fake VMM: `-v` parsing and its errors (nothing made),
//! `ignis volume` create/ls/inspect/rm, named volumes kept across VMs,
//! `rm -v` for anonymous ones, the in-use refusal, the snapshot refusal,
//! Ignite `spec.storage`, and the same through the daemon. Needs
//! `--features fake-vmm`.

#![cfg(feature = "fake-vmm")]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::Env;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The volume files in the state root.
fn volume_files(env: &Env) -> usize {
    std::fs::read_dir(env.root().join("volumes"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn bad_volume_flags_are_refused_naming_the_flag_and_make_nothing() {
    let (env, img) = Env::fake_app();
    let missing = env.dir.path().join("missing.ext4");
    let missing = format!("{}:/data", missing.display());
    let dir = format!("{}:/data", env.dir.path().display());
    for (args, why) in [
        (vec!["-v", "a:/b:ro:x"], "four parts"),
        (vec!["-v", "data:relative"], "a relative VM path"),
        (vec!["-v", "data:/d:rx"], "an unknown mode"),
        (vec!["-v", "data:/"], "the root"),
        (vec!["-v", "bad name!:/d"], "neither a path nor a name"),
        (vec!["-v", &missing], "a missing file"),
        (vec!["-v", &dir], "a directory"),
        (vec!["-v", "a:/d", "-v", "b:/d"], "two volumes at one path"),
        (vec!["-v", "a:/d", "-v", "a:/e"], "one volume twice"),
        (
            vec!["-v", "data:/d", "--volume-size", "lots"],
            "an unparsable size",
        ),
        (
            vec!["-v", "data:/d", "--volume-size", "1MB"],
            "a size too small",
        ),
    ] {
        let mut a = vec!["create", "--backend", "fake", "--network", "none"];
        a.extend(&args);
        a.push(&img);
        let out = env.run(&a);
        assert_eq!(out.status.code(), Some(1), "{why}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("--volume"),
            "{why}: the error names the flag: {err}"
        );
    }
    assert_eq!(env.ok(&["ps", "-a", "-Q"]), "", "no VM was recorded");
    assert_eq!(env.ok(&["volume", "ls", "-Q"]), "", "no volume was made");
    assert_eq!(volume_files(&env), 0);
    assert_eq!(env.count("vms"), 0);
}

#[test]
fn volume_verbs_and_a_named_volume_outlives_its_vms() {
    let (env, img) = Env::fake_app();
    assert_eq!(
        env.ok(&["volume", "create", "--size", "32MB", "-l", "app=db", "data"])
            .trim(),
        "data"
    );
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["volume", "inspect", "data"])).unwrap();
    assert_eq!(v["size"], 32 << 20);
    assert_eq!(v["labels"]["app"], "db");
    let path = v["path"].as_str().unwrap().to_string();
    // A real ext4 file, labelled.
    let out = std::process::Command::new("dumpe2fs")
        .args(["-h", &path])
        .output();
    if let Ok(out) = out {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("ignis-volume"), "{text}");
    }
    assert_eq!(
        env.run(&["volume", "create", "data"]).status.code(),
        Some(4),
        "a second volume of the same name is a conflict"
    );

    // Mounted by a VM: in its spec, in inspect, in use.
    env.ok(&[
        "create",
        "--backend",
        "fake",
        "--network",
        "none",
        "--name",
        "one",
        "-v",
        "data:/var/lib/db",
        &img,
    ]);
    let vm = env.vm_json("one");
    let m = &vm["spec"]["volumes"][0];
    assert_eq!(m["kind"], "volume");
    assert_eq!(m["source"], "data");
    assert_eq!(m["target"], "/var/lib/db");
    assert_eq!(m["path"], path.as_str());
    let ls = env.ok(&["volume", "ls"]);
    assert!(ls.contains("data") && ls.contains("one"), "{ls}");
    let rm = env.run(&["volume", "rm", "data"]);
    assert_eq!(rm.status.code(), Some(4), "in use: {}", stderr(&rm));
    assert!(stderr(&rm).contains("one"), "names the VM: {}", stderr(&rm));

    // The VM goes, even with -v: a named volume stays.
    env.ok(&["rm", "-v", "one"]);
    assert!(std::path::Path::new(&path).is_file());
    env.ok(&[
        "create",
        "--backend",
        "fake",
        "--network",
        "none",
        "--name",
        "two",
        "-v",
        "data:/d:ro",
        &img,
    ]);
    assert_eq!(env.vm_json("two")["spec"]["volumes"][0]["readOnly"], true);
    assert_eq!(
        env.vm_json("two")["spec"]["volumes"][0]["path"],
        path.as_str()
    );
    env.ok(&["rm", "two"]);
    assert_eq!(env.ok(&["volume", "rm", "data"]).trim(), "data");
    assert!(!std::path::Path::new(&path).exists());
    assert_eq!(
        env.run(&["volume", "inspect", "data"]).status.code(),
        Some(3)
    );
}

#[test]
fn named_volumes_are_made_on_first_use_and_anonymous_ones_go_with_rm_v() {
    let (env, img) = Env::fake_app();
    env.ok(&[
        "create",
        "--backend",
        "fake",
        "--network",
        "none",
        "--name",
        "a",
        "-v",
        "cache:/cache",
        "--volume-size",
        "20MB",
        "-v",
        "/scratch",
        &img,
    ]);
    let vols: serde_json::Value =
        serde_json::from_str(&env.ok(&["volume", "ls", "-o", "json"])).unwrap();
    let vols = vols.as_array().unwrap();
    assert_eq!(vols.len(), 2, "{vols:?}");
    let cache = vols.iter().find(|v| v["name"] == "cache").unwrap();
    assert_eq!(cache["size"], 20 << 20);
    assert_eq!(cache["anonymous"], false);
    let anon = vols.iter().find(|v| v["name"] != "cache").unwrap();
    assert_eq!(anon["anonymous"], true);
    // Without -v both stay.
    env.ok(&[
        "create",
        "--backend",
        "fake",
        "--network",
        "none",
        "--name",
        "b",
        "-v",
        "/tmp2",
        &img,
    ]);
    env.ok(&["rm", "b"]);
    assert_eq!(env.ok(&["volume", "ls", "-Q"]).lines().count(), 3);
    // With -v the VM's anonymous volume goes, the named one stays.
    env.ok(&["rm", "-v", "a"]);
    let left = env.ok(&["volume", "ls", "-Q"]);
    assert_eq!(left.lines().count(), 2, "{left}");
    assert!(left.contains("cache"));
    assert!(!left.contains(anon["name"].as_str().unwrap()));
    assert_eq!(volume_files(&env), 2);
}

#[test]
fn a_volume_mounted_read_write_by_a_running_vm_is_refused_to_another() {
    let (env, img) = Env::fake_app();
    let disk = env.dir.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let file_rw = format!("{}:/f", disk.display());
    let file_ro = format!("{}:/f:ro", disk.display());
    let run = |name: &str, vol: &str| {
        env.run(&[
            "run",
            "--backend",
            "fake",
            "--network",
            "none",
            "--name",
            name,
            "-v",
            vol,
            &img,
        ])
    };
    assert!(run("first", "shared:/s").status.success());
    // `run` reports its own failures as 125 (Docker); `start` as a conflict.
    let second = run("second", "shared:/s");
    assert_eq!(second.status.code(), Some(125), "{}", stderr(&second));
    let err = stderr(&second);
    assert!(
        err.contains("--volume") && err.contains("first") && err.contains("shared"),
        "names the flag, the VM and the volume: {err}"
    );
    let again = env.run(&["start", "second"]);
    assert_eq!(again.status.code(), Some(4), "{}", stderr(&again));
    assert_eq!(env.vm_json("second")["status"]["state"], "created");
    let ro = run("third", "shared:/s:ro");
    assert_eq!(ro.status.code(), Some(125), "read-only next to read-write");
    assert_eq!(env.run(&["start", "third"]).status.code(), Some(4));
    env.ok(&["stop", "first"]);
    env.ok(&["start", "second"]);
    assert_eq!(env.vm_json("second")["status"]["state"], "running");
    env.ok(&["rm", "-f", "second", "third", "first"]);

    // Read-only in both: shared. A host file works the same way.
    assert!(run("r1", &file_ro).status.success());
    assert!(run("r2", &file_ro).status.success());
    let rw = run("w", &file_rw);
    assert_eq!(rw.status.code(), Some(125), "{}", stderr(&rw));
    assert_eq!(env.run(&["start", "w"]).status.code(), Some(4));
    env.ok(&["rm", "-f", "r1", "r2", "w"]);
    assert!(disk.is_file(), "a host file is never removed");
}

#[test]
fn a_vm_with_volumes_cannot_be_snapshotted_or_forked() {
    let (env, img) = Env::fake_app();
    env.ok(&[
        "run",
        "--backend",
        "fake",
        "--network",
        "none",
        "--name",
        "v",
        "-v",
        "d:/d",
        &img,
    ]);
    for args in [vec!["snapshot", "v"], vec!["fork", "v"]] {
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("volumes"), "{}", stderr(&out));
    }
    assert_eq!(env.ok(&["snapshot", "ls", "-Q"]), "");
    env.ok(&["rm", "-f", "-v", "v"]);
}

#[test]
fn ignite_storage_becomes_volumes_and_manifests_carry_them() {
    let (env, img) = Env::fake_app();
    let disk = env.dir.path().join("dev.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let ignite = format!(
        "apiVersion: ignite.weave.works/v1alpha4\nkind: VM\nmetadata:\n  name: old\nspec:\n  image:\n    oci: {img}\n  storage:\n    volumes:\n    - name: data\n      blockDevice:\n        path: {}\n    volumeMounts:\n    - name: data\n      mountPath: /mnt/data\n",
        disk.display()
    );
    let f = env.dir.path().join("ignite.yaml");
    std::fs::write(&f, ignite).unwrap();
    env.ok(&[
        "create",
        "--backend",
        "fake",
        "--network",
        "none",
        "--config",
        f.to_str().unwrap(),
    ]);
    let m = &env.vm_json("old")["spec"]["volumes"][0];
    assert_eq!(m["kind"], "file");
    assert_eq!(m["target"], "/mnt/data");
    assert_eq!(m["source"], disk.display().to_string());
    // A mount of a volume that is not there is an error naming it.
    let bad = env.dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        format!("apiVersion: ignite.weave.works/v1alpha4\nkind: VM\nmetadata:\n  name: bad\nspec:\n  image:\n    oci: {img}\n  storage:\n    volumeMounts:\n    - name: nope\n      mountPath: /x\n"),
    )
    .unwrap();
    let out = env.run(&[
        "create",
        "--backend",
        "fake",
        "--config",
        bad.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("spec.storage.volumeMounts[0]"),
        "{}",
        stderr(&out)
    );

    // Our manifests: spec.volumes and spec.volumeSize, and `get` shows them.
    let ours = env.dir.path().join("vm.yaml");
    std::fs::write(
        &ours,
        format!("apiVersion: ignis.dev/v1alpha1\nkind: VM\nmetadata:\n  name: m\nspec:\n  image: {img}\n  backend: fake\n  network:\n    mode: none\n  volumes: [\"logs:/var/log/app\", \"{}:/raw:ro\"]\n  volumeSize: 24MB\n", disk.display()),
    )
    .unwrap();
    env.ok(&["apply", "-f", ours.to_str().unwrap()]);
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["volume", "inspect", "logs"])).unwrap();
    assert_eq!(v["size"], 24 << 20);
    let got: serde_json::Value = serde_yaml::from_str(&env.ok(&["get", "vm", "m"])).unwrap();
    assert_eq!(
        got["spec"]["volumes"],
        serde_json::json!(["logs:/var/log/app", format!("{}:/raw:ro", disk.display())])
    );
}

#[test]
fn volumes_through_the_daemon() {
    let (env, img) = Env::fake_app();
    let socket = env.dir.path().join("v.sock");
    /// Killed however the test ends (a daemon left running would hold
    /// whatever its test held).
    struct Daemon(std::process::Child);
    impl Drop for Daemon {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _daemon = Daemon(
        env.cmd()
            .arg("daemon")
            .arg("--socket")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    common::wait::until("the daemon socket", Duration::from_secs(20), || {
        socket.exists()
    });
    let host = format!("unix://{}", socket.display());
    let remote = |args: &[&str]| {
        env.cmd()
            .env("IGNIS_HOST", &host)
            .args(args)
            .output()
            .unwrap()
    };
    let out = remote(&["volume", "create", "--size", "20MB", "r"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = remote(&[
        "run",
        "--backend",
        "fake",
        "--network",
        "none",
        "--name",
        "x",
        "-v",
        "r:/r",
        "-v",
        "/anon",
        &img,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ls = remote(&["volume", "ls", "-o", "json"]);
    let vols: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    assert_eq!(vols.as_array().unwrap().len(), 2);
    let busy = remote(&[
        "run",
        "--backend",
        "fake",
        "--network",
        "none",
        "-v",
        "r:/r",
        &img,
    ]);
    assert_eq!(busy.status.code(), Some(125), "{}", stderr(&busy));
    assert!(stderr(&busy).contains("--volume"), "{}", stderr(&busy));
    let rm = remote(&["volume", "rm", "r"]);
    assert_eq!(rm.status.code(), Some(4));
    let bad = remote(&["volume", "inspect", "nope"]);
    assert_eq!(bad.status.code(), Some(3));
    assert!(remote(&["rm", "-f", "-v", "x"]).status.success());
    // The VM refused for the busy volume was recorded before its start
    // failed: remove it too.
    for id in env.ok(&["ps", "-a", "-Q"]).lines() {
        env.ok(&["rm", "-f", id]);
    }
    assert!(remote(&["volume", "rm", "r"]).status.success());
    assert_eq!(env.ok(&["volume", "ls", "-Q"]), "");
    // volume prune through the daemon: the same report as in-process.
    let out = remote(&[
        "create",
        "--backend",
        "fake",
        "--network",
        "none",
        "--name",
        "y",
        "-v",
        "/a",
        &img,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(remote(&["rm", "y"]).status.success());
    let out = remote(&["volume", "prune", "-f", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["volumesDeleted"].as_array().unwrap().len(),
        1,
        "{report}"
    );
    assert_eq!(env.ok(&["volume", "ls", "-Q"]), "");
}

/// `volume prune`: the anonymous volumes no VM mounts go (those `rm`
/// left without -v), named and mounted ones stay; `-a` takes the unused
/// named ones too; without `-f` it asks, and anything but `y` keeps all.
#[test]
fn volume_prune_removes_dangling_anonymous_volumes_and_with_a_unused_named_ones() {
    let (env, img) = Env::fake_app();
    let create = |name: &str, vols: &[&str]| {
        let mut a = vec![
            "create",
            "--backend",
            "fake",
            "--network",
            "none",
            "--name",
            name,
        ];
        for v in vols {
            a.extend(["-v", v]);
        }
        a.push(&img);
        env.ok(&a);
    };
    env.ok(&["volume", "create", "--size", "20MB", "named"]);
    create("gone", &["/scratch", "named:/n"]);
    create("kept", &["/inuse"]);
    env.ok(&["rm", "gone"]);
    assert_eq!(env.ok(&["volume", "ls", "-q"]).lines().count(), 3);
    let prune = |args: &[&str], input: &str| {
        let mut c = env.cmd();
        c.arg("volume").arg("prune").args(args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    // Asked, and declined (no answer at all is a no too).
    for answer in ["n\n", ""] {
        let out = prune(&[], answer);
        assert!(out.status.success());
        assert!(stderr(&out).contains("Are you sure"), "{}", stderr(&out));
        assert_eq!(env.ok(&["volume", "ls", "-q"]).lines().count(), 3);
    }
    // Accepted: the dangling anonymous one goes.
    let gone_vol = env
        .ok(&["volume", "ls", "-q"])
        .lines()
        .find(|n| *n != "named" && !env.vm_json("kept").to_string().contains(*n))
        .unwrap()
        .to_string();
    let out = prune(&[], "y\n");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.starts_with(&format!(
            "Deleted Volumes:\n{gone_vol}\n\nTotal reclaimed space: "
        )),
        "{text}"
    );
    let left = env.ok(&["volume", "ls", "-q"]);
    assert_eq!(left.lines().count(), 2, "{left}");
    assert!(left.contains("named") && !left.contains(&gone_vol));
    // Nothing more to prune without -a; with it the unused named one goes,
    // the mounted anonymous one stays.
    let out = prune(&["-f", "-o", "json"], "");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["volumesDeleted"], serde_json::json!([]));
    let out = prune(&["-a", "-f", "-o", "json"], "");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["volumesDeleted"], serde_json::json!(["named"]));
    assert_eq!(env.ok(&["volume", "ls", "-q"]).lines().count(), 1);
    assert_eq!(volume_files(&env), 1);
    env.ok(&["rm", "-v", "kept"]);
    assert_eq!(volume_files(&env), 0);
}
