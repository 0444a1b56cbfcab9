//! Docker/Ignite command-line parity on the fake VMM: `-q` lists IDs
//! (`rm -f $(ps -aq)`), the shortcuts (`images`, `rmi`, `kernels`, `rmk`,
//! `vm ls`), `-n`/`--ports`, `version -o`, `inspect -f`, `ps --format`
//! fields as the table shows them, completions and man pages. Needs
//! `--features fake-vmm`.

#![cfg(feature = "fake-vmm")]

mod common;

use common::Env;

/// `ignis rm -f $(ignis ps -aq)`, as in Docker: `-q` lists IDs only (and
/// combines with `-a`), whatever the VMs' states.
#[test]
fn rm_f_of_ps_aq_removes_every_vm() {
    let (env, img) = Env::fake_app();
    let created = env.fake_vm("create", "one", &img);
    let ran = env.fake_vm("run", "two", &img);
    let ids = env.ok(&["ps", "-aq"]);
    let mut listed: Vec<&str> = ids.lines().collect();
    listed.sort_unstable();
    let mut want = vec![created.as_str(), ran.as_str()];
    want.sort_unstable();
    assert_eq!(listed, want, "IDs only, one a line");
    assert_eq!(ids, env.ok(&["ps", "-a", "--quiet"]));
    // The shell's $(...) splits on whitespace.
    let mut args = vec!["rm", "-f"];
    args.extend(ids.split_whitespace());
    env.ok(&args);
    assert_eq!(env.ok(&["ps", "-aq"]), "");
    // The old global -q (no progress) moved to --no-progress.
    env.ok(&["--no-progress", "ps"]);
    assert_eq!(env.run(&["--quiet", "version"]).status.code(), Some(2));
}

/// `images`, `rmi`, `kernels`, `rmk` and Ignite's `vm` group spell the same
/// commands as `image ls`, `image rm`, `kernel ls`, `kernel rm`, `ps`, `rm`.
#[test]
fn shortcuts_and_the_vm_group_are_the_same_commands() {
    let (env, img) = Env::fake_app();
    assert_eq!(env.ok(&["images"]), env.ok(&["image", "ls"]));
    assert_eq!(env.ok(&["images", "-q"]), env.ok(&["image", "ls", "-q"]));
    assert_eq!(env.ok(&["kernels"]), env.ok(&["kernel", "ls"]));
    assert!(env.ok(&["kernels", "-o", "json"]).contains("6.6.6-fake"));
    let id = env.fake_vm("create", "grouped", &img);
    for ls in [
        &["vm", "ls", "-a"][..],
        &["vm", "list", "-a"],
        &["vm", "ps", "-a"],
    ] {
        assert_eq!(env.ok(ls), env.ok(&["ps", "-a"]), "{ls:?}");
    }
    // Global flags before the group still apply.
    let root = env.root();
    let out = env
        .cmd()
        .env_remove("IGNIS_ROOT")
        .args(["--root", root.to_str().unwrap(), "vm", "ls", "-aq"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), id);
    assert_eq!(env.vm_json("grouped")["id"], id.as_str());
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&env.ok(&["vm", "inspect", "grouped"])).unwrap()
            ["id"],
        id.as_str()
    );
    env.ok(&["vm", "rm", "grouped"]);
    assert_eq!(env.ok(&["ps", "-aq"]), "");
    // rmi and rmk remove (an image nothing uses; a kernel by name).
    let other = env.small_image("other:1", "o");
    env.ok(&["image", "import", other.to_str().unwrap()]);
    env.ok(&["rmi", "other:1"]);
    assert!(!env.ok(&["images"]).contains("other"));
    let kernel = env.ok(&["kernels", "-q"]).trim().to_string();
    let out = env.run(&["rmk", "-f", &kernel]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.ok(&["kernels", "-q"]), "");
    // The group's help lists its verbs.
    let help = env.ok(&["vm", "--help"]);
    assert!(
        help.contains("ps") && help.contains("ls") && help.contains("rm"),
        "{help}"
    );
    assert_eq!(env.run(&["vm"]).status.code(), Some(2));
}

/// `-n` is `--name`; `--ports` is Ignite's spelling of `-p` (tests run
/// without the bridge, so both are refused the same way; a bad value names
/// the flag).
#[test]
fn short_name_and_ignite_ports_flags() {
    let (env, img) = Env::fake_app();
    env.ok(&[
        "create",
        "--backend",
        "fake",
        "--size",
        "64MB",
        "-n",
        "short",
        &img,
    ]);
    assert_eq!(env.vm_json("short")["name"], "short");
    let p = env.run(&["create", "--backend", "fake", "-p", "8080:80", &img]);
    let ports = env.run(&["create", "--backend", "fake", "--ports", "8080:80", &img]);
    assert_eq!(p.status.code(), Some(1));
    assert_eq!(ports.status.code(), p.status.code());
    assert_eq!(ports.stderr, p.stderr);
    assert!(String::from_utf8_lossy(&p.stderr).contains("published ports need the bridge"));
    assert!(
        env.ok(&["run", "--help"]).contains("--ports"),
        "shown as an alias"
    );
    assert_eq!(
        env.ok(&["ps", "-aq"]).lines().count(),
        1,
        "nothing else created"
    );
}

/// `version -o json|yaml|short`, and the plain form as `--version`.
#[test]
fn version_outputs() {
    let env = Env::new();
    let plain = env.ok(&["version"]);
    assert_eq!(plain, env.ok(&["--version"]));
    let short = env.ok(&["version", "-o", "short"]);
    assert_eq!(plain.trim(), format!("ignis {}", short.trim()));
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["version", "-o", "json"])).unwrap();
    assert_eq!(json["version"], short.trim());
    assert!(json["platform"].as_str().unwrap().starts_with("linux/"));
    let yaml: serde_json::Value =
        serde_yaml::from_str(&env.ok(&["version", "-o", "yaml"])).unwrap();
    assert_eq!(yaml, json);
    assert_eq!(env.run(&["version", "-o", "xml"]).status.code(), Some(2));
}

/// `inspect -f` is a template over the record (as Docker's); `ps --format`
/// fields print what the table shows (`{{.Status}}` is `Exited (0) ...`,
/// not the status object).
#[test]
fn inspect_format_and_ps_format_status() {
    let (env, img) = Env::fake_app();
    let created = env.fake_vm("create", "fresh", &img);
    let ran = env.ok_id(&[
        "run",
        "--backend",
        "fake",
        "--size",
        "64MB",
        "-n",
        "done",
        "--kernel-args",
        "ignis.fake=exit:0",
        &img,
    ]);
    common::wait::until(
        "the run VM exits",
        std::time::Duration::from_secs(20),
        || env.vm_json(&ran)["status"]["state"] == "exited",
    );
    assert_eq!(
        env.ok(&[
            "inspect",
            "-f",
            "{{.Name}} {{.Status.State}} {{.Spec.Cpus}}",
            "fresh"
        ]),
        "fresh created 1\n"
    );
    assert_eq!(
        env.ok(&["inspect", "--format", "{{.ID}}", "done"]).trim(),
        ran
    );
    let ps = env.ok(&["ps", "-a", "--format", "{{.Name}}|{{.Status}}|{{.State}}"]);
    let mut lines: Vec<&str> = ps.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines[0], "done|Exited (0) Less than a minute ago|exited",
        "{ps}"
    );
    assert_eq!(lines[1], "fresh|Created|created", "{ps}");
    // The table's STATUS column is the same text.
    let table = env.ok(&["ps", "-a"]);
    assert!(
        table.contains("Exited (0) Less than a minute ago"),
        "{table}"
    );
    // The record's other fields stay reachable, and -o json is the record.
    assert_eq!(
        env.ok(&[
            "ps",
            "-a",
            "--filter",
            "name=fresh",
            "--format",
            "{{.ID}} {{.Spec.Cpus}}"
        ]),
        format!("{created} 1\n")
    );
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["ps", "-a", "-o", "json"])).unwrap();
    assert!(json[0]["status"].is_object(), "{json}");
}

/// `completion bash|zsh|fish` print scripts that know the commands
/// (shortcuts and the `vm` group too); `system man DIR` writes a page per
/// command.
#[test]
fn completions_for_three_shells_and_man_pages() {
    let env = Env::new();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef ignis"),
        ("fish", "complete -c ignis"),
    ] {
        let script = env.ok(&["completion", shell]);
        assert!(script.contains(marker), "{shell}: {script:.200}");
        for word in ["images", "rmi", "ps", "inspect", "completion"] {
            assert!(script.contains(word), "{shell} completes {word}");
        }
    }
    if std::process::Command::new("bash")
        .arg("--version")
        .output()
        .is_ok()
    {
        let script = env.dir.path().join("ignis.bash");
        std::fs::write(&script, env.ok(&["completion", "bash"])).unwrap();
        let out = std::process::Command::new("bash")
            .arg("-n")
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(env.run(&["completion", "tcsh"]).status.code(), Some(2));
    let dir = env.dir.path().join("man");
    env.ok(&["system", "man", dir.to_str().unwrap()]);
    for page in [
        "ignis.1",
        "ignis-run.1",
        "ignis-image-ls.1",
        "ignis-vm-ps.1",
        "ignis-ps.1",
    ] {
        let p = dir.join(page);
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page} is roff");
    }
    let run = std::fs::read_to_string(dir.join("ignis-run.1")).unwrap();
    assert!(run.contains("publish"), "the run page lists its flags");
    assert!(
        !dir.join("ignis-__configure.1").exists(),
        "hidden commands have no page"
    );
}

/// `logs --tail N`, `--since T` and `-t`: lines chosen and stamped from the
/// index the supervisor writes beside the console log.
#[test]
fn logs_tail_since_and_timestamps() {
    let (env, img) = Env::fake_app();
    let id = env.ok_id(&[
        "run",
        "-d",
        "--backend",
        "fake",
        "--size",
        "64MB",
        "-n",
        "talk",
        "--kernel-args",
        "ignis.fake=exit:0",
        &img,
    ]);
    common::wait::until("the VM exits", std::time::Duration::from_secs(20), || {
        env.vm_json(&id)["status"]["state"] == "exited"
    });
    let all = env.ok(&["logs", "talk"]);
    let lines: Vec<&str> = all.lines().collect();
    assert!(lines.len() >= 4 && all.contains("workload output"), "{all}");
    assert_eq!(env.ok(&["logs", "--tail", "all", "talk"]), all);
    assert_eq!(env.ok(&["logs", "--tail", "0", "talk"]), "");
    let two = env.ok(&["logs", "-n", "2", "talk"]);
    assert_eq!(two.lines().collect::<Vec<_>>(), lines[lines.len() - 2..]);
    // -t: each line with when it was written, in order, the line unchanged.
    let stamped = env.ok(&["logs", "-t", "talk"]);
    let mut last = String::new();
    for (s, l) in stamped.lines().zip(&lines) {
        let (ts, rest) = s.split_once(' ').unwrap();
        assert_eq!(rest, *l);
        assert!(ts.len() == 30 && ts.ends_with('Z'), "{ts}");
        time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{ts}: {e}"));
        assert!(ts >= last.as_str(), "{ts} after {last}");
        last = ts.to_string();
    }
    assert_eq!(stamped.lines().count(), lines.len());
    // --since: a duration, a time, Unix seconds.
    assert_eq!(env.ok(&["logs", "--since", "1h", "talk"]), all);
    assert_eq!(
        env.ok(&["logs", "--since", "2000-01-01T00:00:00Z", "talk"]),
        all
    );
    assert_eq!(
        env.ok(&["logs", "--since", "4102444800", "talk"]),
        "",
        "2100"
    );
    // The first line's own time keeps it and what follows.
    let first = stamped.lines().next().unwrap().split_once(' ').unwrap().0;
    assert_eq!(env.ok(&["logs", "--since", first, "talk"]), all);
    for (bad, flag) in [("--since=yesterday", "--since"), ("--tail=-3", "--tail")] {
        let out = env.run(&["logs", bad, "talk"]);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(flag), "{bad}");
    }
}
