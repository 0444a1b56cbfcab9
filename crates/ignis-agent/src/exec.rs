//! `ignis exec`: a process in the VM's root, on pipes or on a PTY.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use ignis_agent_proto::{ExecRequest, Kind};

use crate::serve::{Conn, Input, Session, SessionOut};
use crate::user::{resolve_program, resolve_user, DEFAULT_PATH};

/// The environment of an exec: the image's, then PATH/HOME/HOSTNAME/TERM
/// defaults where missing, then the request's (which wins).
fn environment(image: &[String], req: &ExecRequest, home: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![];
    let mut set = |k: &str, v: &str| {
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v.to_string()));
    };
    set("PATH", DEFAULT_PATH);
    set("HOME", home);
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        set("HOSTNAME", h.trim());
    }
    if req.tty {
        set("TERM", "xterm");
    }
    for kv in image.iter().chain(&req.env) {
        if let Some((k, v)) = kv.split_once('=') {
            set(k, v);
        }
    }
    env
}

fn winsize(rows: u16, cols: u16) -> libc::winsize {
    libc::winsize {
        ws_row: if rows == 0 { 24 } else { rows },
        ws_col: if cols == 0 { 80 } else { cols },
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

pub(crate) fn resize(s: &Session, rows: u16, cols: u16) {
    let fd = s.pty.load(Ordering::SeqCst);
    if fd >= 0 {
        let ws = winsize(rows, cols);
        // SAFETY: TIOCSWINSZ on the session's PTY master with a valid winsize.
        unsafe {
            libc::ioctl(fd, libc::TIOCSWINSZ, &ws);
        }
    }
}

fn openpty(rows: u16, cols: u16) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (mut master, mut slave) = (-1, -1);
    let ws = winsize(rows, cols);
    // SAFETY: openpty writes two fds into the locals; name and termios are
    // null (defaults), ws is a valid winsize.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just returned to us by openpty.
    let (m, s) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [&m, &s] {
        // SAFETY: setting FD_CLOEXEC on our own descriptors.
        unsafe {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    Ok((m, s))
}

/// Copies a child's output to frames. After the child has exited
/// (`exited`), it stops once the output is idle for 100 ms, so a
/// background grandchild holding the pipe cannot keep the exec open.
fn pump(fd: OwnedFd, out: SessionOut, exited: Arc<AtomicBool>) {
    let mut file = std::fs::File::from(fd);
    let mut buf = vec![0u8; ignis_agent_proto::MAX_DATA];
    loop {
        let mut p = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, 100) };
        if r == 0 {
            if exited.load(Ordering::SeqCst) {
                return;
            }
            continue;
        }
        if r < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        // Read no more than the host will accept.
        let Some(allowed) = out.session.credit.take(buf.len()) else {
            return;
        };
        let n = match file.read(&mut buf[..allowed]) {
            Ok(0) | Err(_) => {
                out.session.credit.grant(allowed as u64);
                return; // EOF (pipes) or EIO (PTY with no slave left)
            }
            Ok(n) => n,
        };
        out.session.credit.grant((allowed - n) as u64);
        if out.conn.send(out.kind, out.session.id, &buf[..n]).is_err() {
            return;
        }
    }
}

/// Feeds input frames to the child's stdin, granting credit as written.
fn feed(conn: Arc<Conn>, id: u32, rx: mpsc::Receiver<Input>, fd: OwnedFd, tty: bool) {
    let mut w = std::fs::File::from(fd);
    loop {
        let d = match rx.recv() {
            Ok(Input::Data(d)) => d,
            Ok(Input::Eof) if tty => {
                // A terminal's end of input is ^D, not a closed fd.
                let _ = w.write_all(&[4]);
                return;
            }
            _ => return,
        };
        if w.write_all(&d).is_err() {
            // The child closed its stdin: keep granting so the host drains.
            let n = u32::try_from(d.len()).unwrap_or(u32::MAX);
            let _ = conn.send(Kind::Credit, id, &n.to_be_bytes());
            continue;
        }
        let n = u32::try_from(d.len()).unwrap_or(u32::MAX);
        let _ = conn.send(Kind::Credit, id, &n.to_be_bytes());
    }
}

pub(crate) fn exec(
    conn: &Arc<Conn>,
    s: &Arc<Session>,
    req: ExecRequest,
    rx: mpsc::Receiver<Input>,
) {
    let Some(argv0) = req.argv.first().cloned() else {
        return conn.fail(s, "exec needs a command", Some(125));
    };
    let user = match req.user.as_deref().filter(|u| !u.is_empty()) {
        Some(u) => match resolve_user("", u) {
            Ok(u) => u,
            Err(e) => return conn.fail(s, e.to_string(), Some(126)),
        },
        None => crate::user::User {
            uid: 0,
            gid: 0,
            home: resolve_user("", "0")
                .map(|u| u.home)
                .unwrap_or_else(|_| "/root".into()),
        },
    };
    let env = environment(&conn.ctx.env, &req, &user.home);
    let env_list: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let program = match resolve_program("", &argv0, &env_list) {
        Ok(p) => p,
        Err(e) => return conn.fail(s, e.to_string(), Some(127)),
    };
    let workdir = req
        .workdir
        .clone()
        .or_else(|| conn.ctx.workdir.clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    let mut cmd = Command::new(&program);
    cmd.arg0(&argv0)
        .args(&req.argv[1..])
        .env_clear()
        .envs(env)
        .current_dir(&workdir)
        .uid(user.uid)
        .gid(user.gid);
    let exited = Arc::new(AtomicBool::new(false));
    let mut pumps = vec![];
    let mut feeder: Option<(OwnedFd, mpsc::Receiver<Input>)> = None;
    let spawned = if req.tty {
        let (master, slave) = match openpty(req.rows, req.cols) {
            Ok(p) => p,
            Err(e) => return conn.fail(s, format!("cannot allocate a PTY: {e}"), Some(126)),
        };
        let dup = |fd: &OwnedFd| fd.try_clone().map(Stdio::from);
        let (i, o, e) = match (dup(&slave), dup(&slave), dup(&slave)) {
            (Ok(i), Ok(o), Ok(e)) => (i, o, e),
            _ => return conn.fail(s, "cannot duplicate the PTY", Some(126)),
        };
        cmd.stdin(i).stdout(o).stderr(e);
        // SAFETY: between fork and exec we only call setsid and ioctl,
        // both async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
        let r = cmd.spawn();
        drop(slave);
        if r.is_ok() {
            s.pty.store(master.as_raw_fd(), Ordering::SeqCst);
            if req.stdin {
                if let Ok(w) = master.try_clone() {
                    feeder = Some((w, rx));
                }
            }
            pumps.push((master, Kind::Stdout));
        }
        r
    } else {
        cmd.stdin(if req.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        // SAFETY: setsid is async-signal-safe; the exec gets its own session
        // so it is not part of the agent's process group.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let r = cmd.spawn();
        r.map(|mut child| {
            if let Some(i) = child.stdin.take() {
                feeder = Some((OwnedFd::from(i), rx));
            }
            if let Some(o) = child.stdout.take() {
                pumps.push((OwnedFd::from(o), Kind::Stdout));
            }
            if let Some(e) = child.stderr.take() {
                pumps.push((OwnedFd::from(e), Kind::Stderr));
            }
            child
        })
    };
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            return conn.fail(s, format!("cannot run {program}: {e}"), Some(code));
        }
    };
    let pid = i32::try_from(child.id()).unwrap_or(0);
    s.pid.store(pid, Ordering::SeqCst);
    conn.send_json(Kind::Started, s.id, &serde_json::json!({ "pid": pid }));
    if let Some((fd, rx)) = feeder {
        let c = conn.clone();
        let id = s.id;
        let tty = req.tty;
        std::thread::spawn(move || feed(c, id, rx, fd, tty));
    }
    let threads: Vec<_> = pumps
        .into_iter()
        .map(|(fd, kind)| {
            let out = SessionOut {
                conn: conn.clone(),
                session: s.clone(),
                kind,
            };
            let exited = exited.clone();
            std::thread::spawn(move || pump(fd, out, exited))
        })
        .collect();
    let status = child.wait();
    exited.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    s.pty.store(-1, Ordering::SeqCst);
    match status {
        Ok(st) => match (st.code(), st.signal()) {
            (Some(c), _) => conn.exit(s, c, None),
            (None, Some(sig)) => conn.exit(s, 128 + sig, Some(sig)),
            _ => conn.exit(s, 1, None),
        },
        Err(e) => conn.fail(s, format!("wait: {e}"), Some(1)),
    }
}
