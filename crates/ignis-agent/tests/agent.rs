//! The agent's protocol handling against real processes on this host (a
//! socket pair instead of a VM's virtio-serial port or vsock; no chroot).
//! The same agent runs in the live VM tests of ignis-cli.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use ignis_agent_proto::client::{Client, Event, Outcome};
use ignis_agent_proto::{encode, CopyRequest, ExecRequest, FrameReader, Kind, Request};

fn agent() -> (UnixStream, std::thread::JoinHandle<()>) {
    let (host, guest) = UnixStream::pair().unwrap();
    let ctx = Arc::new(ignis_agent::Context {
        chroot: None,
        shutdown_signal: 0,
        env: vec!["FROM_IMAGE=yes".into()],
        workdir: Some("/tmp".into()),
    });
    let w = guest.try_clone().unwrap();
    let t = std::thread::spawn(move || ignis_agent::serve(guest, w, ctx));
    (host, t)
}

fn client() -> Client {
    let (host, _t) = agent();
    Client::connect(host.try_clone().unwrap(), host).unwrap()
}

fn sh(script: &str) -> Request {
    Request::Exec(ExecRequest {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    })
}

fn run(c: &Client, req: &Request) -> (Vec<u8>, Vec<u8>, i32) {
    let s = c.open(req).unwrap();
    let (mut o, mut e) = (vec![], vec![]);
    let code = s.wait_output(&mut o, &mut e).code();
    (o, e, code)
}

#[test]
fn exec_keeps_stdout_stderr_and_exit_code_apart() {
    let c = client();
    let (o, e, code) = run(&c, &sh("echo out; echo err >&2; exit 3"));
    assert_eq!(
        (o.as_slice(), e.as_slice(), code),
        (&b"out\n"[..], &b"err\n"[..], 3)
    );
    // Environment from the image, cwd from the image's WorkingDir.
    let (o, _, _) = run(&c, &sh("echo $FROM_IMAGE $PWD"));
    assert_eq!(o, b"yes /tmp\n");
    let req = Request::Exec(ExecRequest {
        argv: vec!["sh".into(), "-c".into(), "echo $X; pwd".into()],
        env: vec!["X=1".into()],
        workdir: Some("/".into()),
        ..Default::default()
    });
    assert_eq!(run(&c, &req).0, b"1\n/\n");
}

#[test]
fn missing_program_is_127_and_bad_user_126() {
    let c = client();
    let s = c
        .open(&Request::Exec(ExecRequest {
            argv: vec!["no-such-program-xyz".into()],
            ..Default::default()
        }))
        .unwrap();
    match s.wait_output(std::io::sink(), std::io::sink()) {
        Outcome::Failed(e) => {
            assert_eq!(e.code, Some(127));
            assert!(e.message.contains("no-such-program-xyz"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    let s = c
        .open(&Request::Exec(ExecRequest {
            argv: vec!["true".into()],
            user: Some("no-such-user-xyz".into()),
            ..Default::default()
        }))
        .unwrap();
    assert_eq!(s.wait_output(std::io::sink(), std::io::sink()).code(), 126);
}

#[test]
fn twenty_concurrent_execs_each_get_their_own_output() {
    let c = Arc::new(client());
    let threads: Vec<_> = (0..20)
        .map(|i| {
            let c = c.clone();
            std::thread::spawn(move || {
                run(
                    &c,
                    // Staggered finishes (0, 0.1 or 0.2 s: the behaviour
                    // under test is output routed right whatever the
                    // order); `sh` is dash, which has no $RANDOM.
                    &sh(&format!(
                        "sleep 0.{}; echo {i}; echo e{i} >&2; exit {i}",
                        (i * 7) % 3
                    )),
                )
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let (o, e, code) = t.join().unwrap();
        assert_eq!(o, format!("{i}\n").into_bytes());
        assert_eq!(e, format!("e{i}\n").into_bytes());
        assert_eq!(code, i as i32);
    }
}

#[test]
fn large_binary_output_and_input_stream_through_the_window() {
    let c = client();
    // 64 MiB of output with a slow reader: flow control, not buffering.
    let s = c
        .open(&sh(
            "head -c 67108864 /dev/urandom | tee /dev/stderr | wc -c >/dev/null",
        ))
        .unwrap();
    struct Count(u64);
    impl Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len() as u64;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let (mut o, mut e) = (Count(0), Count(0));
    assert_eq!(s.wait_output(&mut o, &mut e).code(), 0);
    assert_eq!((o.0, e.0), (0, 67_108_864));
    // 8 MiB of binary stdin through `sha256sum`.
    let data: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let s = c
        .open(&Request::Exec(ExecRequest {
            argv: vec!["sha256sum".into()],
            stdin: true,
            ..Default::default()
        }))
        .unwrap();
    let input = s.input();
    let d2 = data.clone();
    let feeder = std::thread::spawn(move || input.copy_from(&d2[..]).unwrap());
    let mut out = vec![];
    assert_eq!(s.wait_output(&mut out, std::io::sink()).code(), 0);
    assert_eq!(feeder.join().unwrap(), data.len() as u64);
    let want = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut ch| {
            ch.stdin.take().unwrap().write_all(&data)?;
            ch.wait_with_output()
        })
        .unwrap()
        .stdout;
    assert_eq!(out, want);
}

#[test]
fn signals_reach_the_process_and_tty_gives_a_pts() {
    let c = client();
    let s = c
        .open(&sh("trap 'exit 42' TERM; echo trapped; sleep 30 & wait"))
        .unwrap();
    assert!(matches!(s.recv(), Event::Started(_)));
    // The signal goes once the trap is set.
    match s.recv() {
        Event::Stdout(o) => assert_eq!(o, b"trapped\n"),
        e => panic!("{e:?}"),
    }
    s.input().signal(libc_sigterm());
    assert_eq!(s.wait_output(std::io::sink(), std::io::sink()).code(), 42);
    let s = c
        .open(&Request::Exec(ExecRequest {
            argv: vec!["sh".into(), "-c".into(), "tty; stty size".into()],
            tty: true,
            rows: 33,
            cols: 111,
            ..Default::default()
        }))
        .unwrap();
    let mut o = vec![];
    assert_eq!(s.wait_output(&mut o, std::io::sink()).code(), 0);
    let text = String::from_utf8_lossy(&o);
    assert!(text.starts_with("/dev/pts/"), "{text}");
    assert!(text.contains("33 111"), "{text}");
}

fn libc_sigterm() -> i32 {
    15
}

#[test]
fn copy_in_and_out_round_trip_a_tree() {
    let c = client();
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("src/deep")).unwrap();
    std::fs::write(d.path().join("src/deep/f"), vec![9u8; 300_000]).unwrap();
    let mut tar = vec![];
    ignis_agent_proto::pack(&d.path().join("src"), &mut tar).unwrap();
    let dest = d.path().join("copied");
    let s = c
        .open(&Request::CopyIn(CopyRequest {
            path: dest.display().to_string(),
            follow_link: false,
        }))
        .unwrap();
    s.input().copy_from(&tar[..]).unwrap();
    assert_eq!(s.wait_output(std::io::sink(), std::io::sink()).code(), 0);
    assert_eq!(std::fs::read(dest.join("deep/f")).unwrap().len(), 300_000);
    let s = c
        .open(&Request::CopyOut(CopyRequest {
            path: dest.display().to_string(),
            follow_link: false,
        }))
        .unwrap();
    let back = d.path().join("back");
    s.unpack_to(&back).unwrap();
    assert_eq!(
        std::fs::read(back.join("deep/f")).unwrap(),
        vec![9u8; 300_000]
    );
    let s = c
        .open(&Request::CopyOut(CopyRequest {
            path: "/no/such/path".into(),
            follow_link: false,
        }))
        .unwrap();
    match s.wait_output(std::io::sink(), std::io::sink()) {
        Outcome::Failed(e) => assert!(e.message.contains("/no/such/path"), "{}", e.message),
        other => panic!("{other:?}"),
    }
}

/// Hostile bytes from the host side: each bad frame gets an error frame,
/// the agent keeps serving, and a dropped connection kills its sessions.
#[test]
fn malformed_frames_get_error_frames_and_the_agent_keeps_serving() {
    let (mut host, t) = agent();
    let mut r = FrameReader::new(host.try_clone().unwrap());
    let hello = r.read_frame().unwrap().unwrap().unwrap();
    assert_eq!(hello.kind, Kind::Hello);
    let mut bad = b"garbage!".to_vec();
    bad.extend(encode(Kind::Open, 5, b"{not json"));
    bad.extend(encode(
        Kind::Open,
        6,
        br#"{"op":"exec","argv":["true"],"evil":1}"#,
    ));
    bad.extend(encode(Kind::Stdout, 7, b"agent-only kind"));
    bad.extend(encode(Kind::Signal, 8, b"x"));
    let mut huge = b"IG\x01\x04\x00\x00\x00\x09".to_vec();
    huge.extend(u32::MAX.to_be_bytes());
    bad.extend(&huge);
    host.write_all(&bad).unwrap();
    let mut errors = vec![];
    while errors.len() < 6 {
        let f = r.read_frame().unwrap().unwrap().unwrap();
        assert_eq!(f.kind, Kind::Error, "{f:?}");
        errors.push(f.session);
    }
    assert_eq!(errors, vec![0, 5, 6, 7, 8, 9]);
    drop(host);
    drop(r);
    t.join().unwrap();
    // A connection that goes away kills what it started.
    let (host, t) = agent();
    let c = Client::connect(host.try_clone().unwrap(), host.try_clone().unwrap()).unwrap();
    let marker = format!("/tmp/ignis-agent-test-{}", std::process::id());
    let s = c
        .open(&sh(&format!("echo $$; sleep 2; touch {marker}")))
        .unwrap();
    assert!(matches!(s.recv(), Event::Started(_)));
    let pid = match s.recv() {
        Event::Stdout(o) => String::from_utf8(o).unwrap().trim().to_string(),
        e => panic!("{e:?}"),
    };
    host.shutdown(std::net::Shutdown::Both).unwrap();
    t.join().unwrap();
    // Once the shell is gone, nothing can touch the marker any more.
    let gone = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|st| st.contains(") Z"))
            .unwrap_or(true)
    };
    ignis_testkit::wait::until(
        &format!("the orphaned exec (pid {pid}) to be killed"),
        std::time::Duration::from_secs(10),
        gone,
    );
    assert!(
        !std::path::Path::new(&marker).exists(),
        "the orphaned exec kept running"
    );
}
