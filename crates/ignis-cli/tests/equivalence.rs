//! One client path: every verb run in-process and through `ignis daemon`
//! (`--host unix://...`) against the same state root prints the same bytes
//! (stdout; stderr's shape) and exits with the same code. Fake VMM for the
//! list of verbs; a real Linux guest on QEMU for the streams: `exec -it`
//! through a pseudo-terminal, `exec` exit codes, `cp` of a directory both
//! ways, `logs`.

#![cfg(feature = "fake-vmm")]

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use common::daemon::Daemon;
use common::Env;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Local,
    Remote,
}

impl Mode {
    fn tag(self) -> &'static str {
        match self {
            Mode::Local => "local",
            Mode::Remote => "remote",
        }
    }
}

struct Both<'a> {
    env: &'a Env,
    host: String,
}

impl Both<'_> {
    fn cmd(&self, mode: Mode, args: &[String]) -> std::process::Command {
        let mut c = self.env.cmd();
        c.env_remove("IGNIS_HOST");
        if mode == Mode::Remote {
            c.env("IGNIS_HOST", &self.host);
        }
        c.args(args);
        c
    }

    fn run(&self, mode: Mode, args: &[String]) -> Output {
        self.cmd(mode, args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs `args` (with `{m}` replaced by the mode's tag) both ways; the
    /// outputs, normalized (IDs, numbers, the tag), must be equal.
    fn same(&self, args: &[&str]) -> (Output, Output) {
        let a =
            |m: Mode| -> Vec<String> { args.iter().map(|s| s.replace("{m}", m.tag())).collect() };
        let l = self.run(Mode::Local, &a(Mode::Local));
        let r = self.run(Mode::Remote, &a(Mode::Remote));
        let show = |o: &Output| {
            format!(
                "exit {:?}\nstdout: {}\nstderr: {}",
                o.status.code(),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        };
        assert_eq!(
            l.status.code(),
            r.status.code(),
            "{args:?}: exit codes differ\nlocal {}\nremote {}",
            show(&l),
            show(&r)
        );
        assert_eq!(
            norm(&l.stdout, "local"),
            norm(&r.stdout, "remote"),
            "{args:?}: stdout differs\nlocal {}\nremote {}",
            show(&l),
            show(&r)
        );
        assert_eq!(
            norm(&l.stderr, "local"),
            norm(&r.stderr, "remote"),
            "{args:?}: stderr differs\nlocal {}\nremote {}",
            show(&l),
            show(&r)
        );
        (l, r)
    }

    /// A read-only command: both ways, byte for byte.
    fn exact(&self, args: &[&str]) -> Output {
        let a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let l = self.run(Mode::Local, &a);
        let r = self.run(Mode::Remote, &a);
        assert_eq!(l.status.code(), r.status.code(), "{args:?}: {l:?} / {r:?}");
        assert_eq!(
            String::from_utf8_lossy(&l.stdout),
            String::from_utf8_lossy(&r.stdout),
            "{args:?}: stdout differs"
        );
        assert_eq!(
            String::from_utf8_lossy(&l.stderr),
            String::from_utf8_lossy(&r.stderr),
            "{args:?}: stderr differs"
        );
        l
    }
}

/// IDs (hex runs of 12 or more) and numbers replaced, the mode's tag
/// removed: what must not differ between two runs of one command.
fn norm(b: &[u8], tag: &str) -> String {
    let s = String::from_utf8_lossy(b).replace(tag, "{m}");
    let mut out = String::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_hexdigit() {
            let mut j = i;
            while j < chars.len() && chars[j].is_ascii_hexdigit() {
                j += 1;
            }
            let word_edge = i == 0 || !chars[i - 1].is_ascii_alphanumeric();
            if j - i >= 12 && word_edge {
                out.push_str("<id>");
                i = j;
                continue;
            }
            if chars[i..j].iter().all(|c| c.is_ascii_digit()) {
                out.push('N');
                i = j;
                continue;
            }
            out.extend(&chars[i..j]);
            i = j;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

fn fake(verb: &str, name: &str) -> Vec<String> {
    common::fake_vm_args(verb, name, "app:1")
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn every_verb_prints_the_same_in_process_and_through_the_daemon() {
    let (env, _) = Env::fake_app();
    // A long-running fake workload, and an ambiguous pair of names.
    env.busybox_image("long:1", false, &[], &["/bin/busybox", "sleep", "1000"]);
    let d = Daemon::start(&env, &[]);
    let b = Both {
        env: &env,
        host: d.host(),
    };
    let fk = |verb: &str, name: &str, img: &str| -> Vec<String> {
        let mut a = fake(verb, name);
        *a.last_mut().unwrap() = img.to_string();
        a
    };
    let strs = |v: &[String]| {
        v.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\u{1}")
    };
    let same_v = |v: Vec<String>| {
        let joined = strs(&v);
        let args: Vec<&str> = joined.split('\u{1}').collect();
        b.same(&args)
    };

    // Create, run -d, start, stop, pause, unpause, kill, rm.
    same_v(fk("create", "c-{m}", "app:1"));
    same_v(fk("run", "r-{m}", "long:1"));
    same_v(vec!["start".into(), "c-{m}".into()]);
    same_v(vec!["pause".into(), "r-{m}".into()]);
    b.exact(&["inspect", "r-local"]);
    same_v(vec!["unpause".into(), "r-{m}".into()]);
    same_v(vec!["stop".into(), "-t".into(), "1".into(), "r-{m}".into()]);
    same_v(vec!["start".into(), "r-{m}".into()]);
    same_v(vec!["kill".into(), "r-{m}".into()]);
    // run --rm in the foreground: the workload's exit code is ours.
    same_v(
        fk("run", "fg-{m}", "app:1")
            .into_iter()
            .chain([])
            .collect::<Vec<_>>(),
    );
    let mut rm_run = fk("run", "rm-{m}", "app:1");
    // The fake guest's workload prints a line and exits with 3.
    for (i, a) in ["--rm", "--kernel-args", "ignis.fake=exit:3"]
        .iter()
        .enumerate()
    {
        rm_run.insert(1 + i, a.to_string());
    }
    let (l, _) = same_v(rm_run);
    assert_eq!(l.status.code(), Some(3), "{l:?}");
    assert_eq!(l.stdout, b"workload output\n", "{l:?}");
    // Read-only views, byte for byte.
    b.exact(&["ps", "-a", "--format", "{{.ID}} {{.Name}} {{.Image}}"]);
    b.exact(&["ps", "-a", "-q"]);
    b.exact(&["ps", "-aq"]);
    b.exact(&["vm", "ls", "-a", "--format", "{{.Name}} {{.Status}}"]);
    b.exact(&["version", "-o", "json"]);
    b.exact(&["inspect", "-f", "{{.Name}} {{.Status.State}}", "c-local"]);
    b.exact(&["logs", "--tail", "2", "c-local"]);
    b.exact(&["logs", "--since", "2000-01-01T00:00:00Z", "-t", "c-local"]);
    b.exact(&["logs", "--tail", "many", "c-local"]);
    b.exact(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.Running}}",
        "c-local",
    ]);
    b.exact(&["images", "-q"]);
    b.exact(&["kernels"]);
    b.exact(&["inspect", "c-local"]);
    b.exact(&["inspect", "-o", "yaml", "c-remote"]);
    b.exact(&["logs", "c-local"]);
    b.exact(&["get", "vm", "c-local"]);
    b.exact(&["image", "ls"]);
    b.exact(&["image", "inspect", "app:1"]);
    b.exact(&["kernel", "ls"]);
    b.exact(&["network", "ls"]);
    b.exact(&["network", "inspect", "bridge"]);
    b.exact(&["info", "-o", "json"]);
    b.exact(&["__boot-plan", "c-local"]);
    b.exact(&["snapshot", "ls"]);

    // Volumes: create (and its conflict), a VM mounting one, inspect, the
    // in-use refusal of rm, rm -v, rm.
    same_v(
        ["volume", "create", "--size", "20MB", "vol-{m}"]
            .map(String::from)
            .to_vec(),
    );
    same_v(["volume", "create", "vol-{m}"].map(String::from).to_vec());
    let mut with_vol = fk("create", "v-{m}", "app:1");
    with_vol.splice(
        1..1,
        [
            "-v".to_string(),
            "vol-{m}:/d".into(),
            "-v".into(),
            "/anon".into(),
        ],
    );
    same_v(with_vol);
    b.exact(&["volume", "inspect", "vol-local"]);
    b.exact(&["volume", "ls", "-Q"]);
    same_v(["volume", "rm", "vol-{m}"].map(String::from).to_vec());
    same_v(["rm", "-v", "v-{m}"].map(String::from).to_vec());
    same_v(
        ["volume", "rm", "vol-{m}", "nope-{m}"]
            .map(String::from)
            .to_vec(),
    );
    assert_eq!(
        env.ok(&["volume", "ls", "-Q"]),
        "",
        "rm -v took the anonymous ones"
    );

    // Snapshots: take, list, inspect, fork, restore, export, import, rm.
    same_v(fk("run", "s-{m}", "long:1"));
    same_v(vec![
        "snapshot".into(),
        "s-{m}".into(),
        "--name".into(),
        "snap-{m}".into(),
    ]);
    b.exact(&["snapshot", "inspect", "snap-local"]);
    b.exact(&["snapshot", "ls", "--tree"]);
    same_v(vec![
        "fork".into(),
        "-n".into(),
        "2".into(),
        "--name-prefix".into(),
        "f-{m}".into(),
        "snap-{m}".into(),
    ]);
    same_v(vec![
        "restore".into(),
        "--name".into(),
        "re-{m}".into(),
        "snap-{m}".into(),
    ]);
    let exp = |m: &str| {
        env.dir
            .path()
            .join(format!("snap-{m}.ignis"))
            .display()
            .to_string()
    };
    same_v(vec![
        "snapshot".into(),
        "export".into(),
        "snap-{m}".into(),
        "-o".into(),
        exp("{m}"),
    ]);
    assert!(Path::new(&exp("local")).exists() && Path::new(&exp("remote")).exists());
    assert_eq!(
        std::fs::metadata(exp("local")).unwrap().len() > 0,
        std::fs::metadata(exp("remote")).unwrap().len() > 0
    );
    // Import needs the exported name gone first (as with docker load).
    for m in ["local", "remote"] {
        for f in ["f-{m}-1", "f-{m}-2", "re-{m}"] {
            env.ok(&["rm", "-f", &f.replace("{m}", m)]);
        }
    }
    same_v(vec!["snapshot".into(), "rm".into(), "snap-{m}".into()]);
    same_v(vec!["snapshot".into(), "import".into(), exp("{m}")]);
    same_v(vec!["snapshot".into(), "rm".into(), "snap-{m}".into()]);

    // Images: import (uploaded to the daemon), inspect, rm.
    for m in ["local", "remote"] {
        let p = env.small_image(&format!("up-{m}:1"), m);
        std::fs::rename(&p, env.dir.path().join(format!("up-{m}.tar"))).unwrap();
    }
    let tar = |m: &str| {
        env.dir
            .path()
            .join(format!("up-{m}.tar"))
            .display()
            .to_string()
    };
    same_v(vec!["image".into(), "import".into(), tar("{m}")]);
    same_v(vec!["image".into(), "rm".into(), "up-{m}:1".into()]);

    // Manifests.
    for m in ["local", "remote"] {
        std::fs::write(
            env.dir.path().join(format!("m-{m}.yaml")),
            format!("apiVersion: ignis.dev/v1alpha1\nkind: VM\nmetadata:\n  name: m-{m}\nspec:\n  image: app:1\n  backend: fake\n  diskSize: 64MB\n  network: {{mode: none}}\n  running: false\n"),
        )
        .unwrap();
    }
    let mf = |m: &str| {
        env.dir
            .path()
            .join(format!("m-{m}.yaml"))
            .display()
            .to_string()
    };
    same_v(vec!["apply".into(), "-f".into(), mf("{m}")]);
    same_v(vec!["delete".into(), "-f".into(), mf("{m}")]);

    // Errors: the same message and exit code.
    b.same(&["inspect", "nope-{m}"]);
    b.same(&["start", "nope-{m}"]);
    b.same(&["stop", "nope-{m}", "c-{m}"]);
    // An ambiguous prefix is "not found" (3) both ways.
    // (`z` is no hex digit: only the names zz-local and zz-remote match.)
    same_v(fk("create", "zz-{m}", "app:1"));
    let (l, _) = b.same(&["inspect", "zz"]);
    assert_eq!(l.status.code(), Some(3), "{l:?}");
    let mut bad = fk("create", "bad-{m}", "app:1");
    bad.insert(1, "--memory".into());
    bad.insert(2, "lots".into());
    let (l, _) = same_v(bad);
    assert!(
        String::from_utf8_lossy(&l.stderr).contains("--memory"),
        "{l:?}"
    );
    // In use: rm of a running VM is a conflict (4).
    let (l, _) = b.same(&["rm", "s-{m}"]);
    assert_eq!(l.status.code(), Some(4), "{l:?}");
    // A fake VM has no agent: exec is unavailable (exit 125 as `run`).
    b.same(&["exec", "s-{m}", "true"]);
    // ssh: the same refusal (no agent to read host keys from, no
    // address) whether the keys come from the daemon or from here; its
    // proxy's stream too.
    b.same(&["ssh", "s-{m}", "true"]);
    b.same(&["ssh", "nope-{m}"]);
    b.same(&["system", "ssh-proxy", "s-{m}"]);
    b.same(&["__boot-plan", "nope-{m}"]);
    b.same(&["image", "inspect", "nope:{m}"]);
    b.same(&["snapshot", "inspect", "nope-{m}"]);
    b.same(&["kernel", "inspect", "nope-{m}"]);
    b.same(&["image", "import", "/nonexistent/{m}.tar"]);
    b.same(&["cp", "/nonexistent/{m}", "s-{m}:/tmp"]);

    // Cleanup both ways, the Docker idiom included.
    same_v(vec![
        "rm".into(),
        "-f".into(),
        "s-{m}".into(),
        "r-{m}".into(),
        "c-{m}".into(),
        "fg-{m}".into(),
    ]);
    b.exact(&["ps", "-a", "-q"]);
    b.exact(&["system", "check"]);
}

/// A pseudo-terminal pair: (master, slave).
fn pty() -> (OwnedFd, OwnedFd) {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let slave = rustix::fs::open(
        name.as_c_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    (master, slave)
}

/// `ignis exec -it VM sh` on a terminal: types a few lines, reads what the
/// terminal shows, returns it and the exit code.
fn exec_it(both: &Both, mode: Mode, vm: &str) -> (String, Option<i32>) {
    let (master, slave) = pty();
    let mut child = both
        .cmd(mode, &["exec".into(), "-it".into(), vm.into(), "sh".into()])
        .stdin(Stdio::from(slave.as_fd().try_clone_to_owned().unwrap()))
        .stdout(Stdio::from(slave.as_fd().try_clone_to_owned().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    let mut m = std::fs::File::from(master);
    let mut reader = m.try_clone().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            let _ = tx.send(all.clone());
        }
    });
    let wait_for = |needle: &str| -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut last = Vec::new();
        while std::time::Instant::now() < deadline {
            if let Ok(b) = rx.recv_timeout(Duration::from_millis(200)) {
                last = b;
            }
            if String::from_utf8_lossy(&last).contains(needle) {
                return String::from_utf8_lossy(&last).into_owned();
            }
        }
        panic!(
            "{mode:?}: no {needle:?} on the terminal: {}",
            String::from_utf8_lossy(&last)
        );
    };
    // The guest's shell is on a terminal of its own; arithmetic proves the
    // keystrokes reached it.
    m.write_all(b"tty; echo $((6*7))-ok\r").unwrap();
    wait_for("42-ok");
    m.write_all(b"exit 5\r").unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let shown = wait_for("42-ok");
    (shown, status.code())
}

#[test]
fn streams_are_the_same_through_the_daemon_on_qemu() {
    let Some(env) = common::linux_env() else {
        return;
    };
    let app = env.busybox_image(
        "eq-app:1",
        false,
        &[("root/.keep", "", 0o644)],
        &["/bin/busybox", "sleep", "100000"],
    );
    env.ok_id(&["run", "--name", "box", &app]);
    let d = Daemon::start(&env, &[]);
    let b = Both {
        env: &env,
        host: d.host(),
    };
    // exec: stdout, stderr and the exit code kept apart, both ways.
    let (l, _) = b.same(&[
        "exec",
        "box",
        "sh",
        "-c",
        "echo out-{m}; echo err >&2; exit 3",
    ]);
    assert_eq!(l.status.code(), Some(3));
    assert_eq!(l.stdout, b"out-local\n");
    // stdin with -i.
    for mode in [Mode::Local, Mode::Remote] {
        let mut c = b
            .cmd(
                mode,
                &[
                    "exec".into(),
                    "-i".into(),
                    "box".into(),
                    "sh".into(),
                    "-c".into(),
                    "tr a-z A-Z".into(),
                ],
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(b"hello\n").unwrap();
        let out = c.wait_with_output().unwrap();
        assert_eq!(out.stdout, b"HELLO\n", "{mode:?}");
    }
    // An interactive shell on a terminal, both ways.
    for mode in [Mode::Local, Mode::Remote] {
        let (shown, code) = exec_it(&b, mode, "box");
        assert_eq!(code, Some(5), "{mode:?}: {shown}");
        assert!(
            shown.contains("/dev/pts/"),
            "{mode:?}: the guest side is a PTY: {shown}"
        );
    }
    // cp of a directory into the VM and back, both ways.
    for m in ["local", "remote"] {
        let src = env.dir.path().join(format!("tree-{m}"));
        std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
        std::fs::write(src.join("a.txt"), format!("a {m}\n")).unwrap();
        std::fs::write(src.join("sub/deeper/b.bin"), vec![7u8; 300_000]).unwrap();
        std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    }
    let path = |m: &str| {
        env.dir
            .path()
            .join(format!("tree-{m}"))
            .display()
            .to_string()
    };
    b.same(&["cp", &path("{m}"), "box:/root/"]);
    let (l, _) = b.same(&["exec", "box", "sh", "-c", "cat /root/tree-{m}/a.txt; wc -c < /root/tree-{m}/sub/deeper/b.bin; readlink /root/tree-{m}/link"]);
    assert_eq!(
        String::from_utf8_lossy(&l.stdout),
        "a local\n300000\na.txt\n"
    );
    let back = |m: &str| {
        env.dir
            .path()
            .join(format!("back-{m}"))
            .display()
            .to_string()
    };
    b.same(&["cp", "box:/root/tree-{m}", &back("{m}")]);
    for m in ["local", "remote"] {
        let d = PathBuf::from(back(m));
        assert_eq!(
            std::fs::read_to_string(d.join("a.txt")).unwrap(),
            format!("a {m}\n")
        );
        assert_eq!(
            std::fs::read(d.join("sub/deeper/b.bin")).unwrap(),
            vec![7u8; 300_000]
        );
        assert_eq!(
            std::fs::read_link(d.join("link")).unwrap(),
            PathBuf::from("a.txt")
        );
    }
    // Errors inside the guest: the same message both ways.
    b.same(&["cp", "box:/no/such/{m}", &back("x")]);
    b.same(&["exec", "box", "no-such-program-{m}"]);
    // Logs and inspect, byte for byte.
    b.exact(&["logs", "box"]);
    b.exact(&["inspect", "box"]);
    env.ok(&["stop", "box"]);
}
