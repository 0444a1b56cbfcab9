//! Where the agent listens: the virtio-serial port named `ignis.agent`
//! (QEMU) and vsock port 1024 (Firecracker's hybrid vsock). Both are opened
//! before the agent chroots into the VM's root.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use ignis_agent_proto::{SERIAL_PORT_NAME, VSOCK_PORT};

use crate::Context;

/// The `/dev/vportNpM` whose name is `ignis.agent`, waiting up to 3 s for
/// virtio_console to probe.
fn open_serial() -> Option<std::fs::File> {
    for _ in 0..60 {
        if let Ok(rd) = std::fs::read_dir("/sys/class/virtio-ports") {
            for e in rd.flatten() {
                let name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
                if name.trim() == SERIAL_PORT_NAME {
                    let dev = format!("/dev/{}", e.file_name().to_string_lossy());
                    return std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(dev)
                        .ok();
                }
            }
        }
        if !std::path::Path::new("/sys/bus/virtio").exists() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// A listening AF_VSOCK socket on [`VSOCK_PORT`], if the guest has vsock.
fn vsock_listener() -> Option<OwnedFd> {
    // SAFETY: plain socket creation; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is a fresh descriptor we own.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_vm is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_port = VSOCK_PORT;
    addr.svm_cid = libc::VMADDR_CID_ANY;
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: addr is a valid sockaddr_vm of `len` bytes.
    let ok = unsafe {
        libc::bind(fd, (&addr as *const libc::sockaddr_vm).cast(), len) == 0
            && libc::listen(fd, 16) == 0
    };
    ok.then_some(owned)
}

/// A virtio-serial port reads 0 while no host is connected: wait instead
/// of treating it as the end of the stream. Briefly: the host is away only
/// between a snapshot and its restore or while its supervisor reconnects,
/// and a restored clone's first request waits on this.
struct Port(std::fs::File);

impl Read for Port {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Ok(0) => std::thread::sleep(Duration::from_millis(5)),
                other => return other,
            }
        }
    }
}

fn unblock_signals() {
    // SAFETY: emptying a local sigset and installing it as our mask; setting
    // SIGPIPE to ignored (writes to a gone reader return EPIPE instead).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::prctl(libc::PR_SET_NAME, c"ignis-agent".as_ptr(), 0, 0, 0);
    }
}

/// The forked agent's main: never returns while a transport is open.
pub fn run(ctx: Context) {
    unblock_signals();
    let serial = open_serial();
    let vsock = vsock_listener();
    if let Some(root) = &ctx.chroot {
        if std::os::unix::fs::chroot(root).is_err() || std::env::set_current_dir("/").is_err() {
            eprintln!("ignis-agent: cannot enter {root}");
            return;
        }
    }
    let ctx = std::sync::Arc::new(ctx);
    let mut threads = vec![];
    if let Some(port) = serial {
        let ctx = ctx.clone();
        threads.push(std::thread::spawn(move || {
            let Ok(w) = port.try_clone() else { return };
            crate::serve(Port(port), w, ctx);
        }));
    }
    if let Some(l) = vsock {
        let ctx = ctx.clone();
        threads.push(std::thread::spawn(move || {
            let listener = std::os::unix::net::UnixListener::from(l);
            // accept(2) works the same on any stream socket; UnixListener
            // is only the owner of the fd here.
            loop {
                // SAFETY: accept on our listening socket; the new fd is owned.
                let fd = unsafe {
                    libc::accept4(
                        std::os::fd::AsRawFd::as_raw_fd(&listener),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        libc::SOCK_CLOEXEC,
                    )
                };
                if fd < 0 {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                // SAFETY: fd is a fresh descriptor we own.
                let conn = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
                let ctx = ctx.clone();
                std::thread::spawn(move || {
                    if let Ok(w) = conn.try_clone() {
                        crate::serve(conn, w, ctx);
                    }
                });
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
}
