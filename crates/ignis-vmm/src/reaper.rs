//! A VMM must not outlive its supervisor. PR_SET_PDEATHSIG on the VMM does
//! that only until it changes credentials (the kernel clears it on setuid),
//! and a confined VMM does: QEMU's `-runas`, Firecracker's jailer. So the
//! supervisor forks a tiny watcher that keeps root's credentials and waits
//! on a pipe whose only write end the supervisor holds: end of file means
//! the supervisor died (however: SIGKILL, OOM, crash), and the watcher
//! SIGKILLs the VMM; a byte means "dismissed" (the VMM already exited).
//! A pipe, not a parent-death signal: that signal fires when the forking
//! *thread* dies, and under load the main thread of a SIGKILLed
//! multi-threaded supervisor can die first, leaving the watcher with a
//! still-living parent process id that looks like a dismissal.
//! Hand-written: a pipe, a fork and a few syscalls; no crate does this.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A running watcher; [`Reaper::dismiss`] it once the VMM has exited.
#[derive(Debug)]
pub struct Reaper {
    pid: libc::pid_t,
    tell: OwnedFd,
}

/// A watcher forked before the VMM exists (see [`Watcher::fork`]), armed
/// with the VMM's pid once it runs.
#[derive(Debug)]
pub struct Watcher(Reaper);

impl Watcher {
    /// Forks the watcher now, while the calling process is still small: a
    /// fork shares the parent's pages copy-on-write, and the watcher keeps
    /// the ones the parent changes later, so the earlier it forks, the
    /// less memory it holds (tens of KiB at a supervisor's start, against
    /// its whole heap after setup). It waits for [`Watcher::arm`]; if the
    /// calling process dies before, it exits without killing anything.
    pub fn fork() -> std::io::Result<Self> {
        fork_watcher().map(Watcher)
    }

    /// Tells the watcher which process to kill if the caller dies.
    #[allow(unsafe_code)]
    pub fn arm(self, vmm: u32) -> std::io::Result<Reaper> {
        let pid = i32::try_from(vmm).map_err(|_| std::io::Error::other("VMM pid out of range"))?;
        let bytes = pid.to_le_bytes();
        // SAFETY: a 4-byte write from a live buffer on our own pipe.
        let n = unsafe { libc::write(self.0.tell.as_raw_fd(), bytes.as_ptr().cast(), 4) };
        if n != 4 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(self.0)
    }
}

/// Forks the watcher of `vmm` (a pid), for the calling process.
pub fn spawn(vmm: u32) -> std::io::Result<Reaper> {
    Watcher::fork()?.arm(vmm)
}

#[allow(unsafe_code)]
fn fork_watcher() -> std::io::Result<Reaper> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills the two descriptors we pass; the child below only
    // calls async-signal-safe functions (dup2, close_range, signal, read,
    // kill, _exit): no allocation, no locks, which matters after fork in a
    // threaded process.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let (read_end, write_end) = (fds[0], fds[1]);
        match libc::fork() {
            -1 => {
                let e = std::io::Error::last_os_error();
                libc::close(read_end);
                libc::close(write_end);
                Err(e)
            }
            0 => {
                // Only the read end stays open (as fd 3): a copy of any other
                // descriptor would keep the supervisor's pipes and sockets
                // alive after it died.
                if read_end != 3 {
                    libc::dup2(read_end, 3);
                }
                libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
                for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                    libc::signal(sig, libc::SIG_IGN);
                }
                // Read what the pipe brings: the VMM's pid (4 bytes), then
                // either a dismissal (1 byte) or end of file.
                let mut buf = [0u8; 4];
                let mut got = 0usize;
                let mut vmm: libc::pid_t = 0;
                loop {
                    let n = libc::read(3, buf.as_mut_ptr().add(got).cast(), 4 - got);
                    if n < 0 && *libc::__errno_location() == libc::EINTR {
                        continue;
                    }
                    if n <= 0 {
                        // The supervisor is gone: so goes its VMM (if any).
                        if vmm > 0 {
                            libc::kill(vmm, libc::SIGKILL);
                        }
                        break;
                    }
                    if vmm > 0 {
                        break; // dismissed
                    }
                    got += usize::try_from(n).unwrap_or(0);
                    if got == 4 {
                        vmm = libc::pid_t::from_le_bytes(buf);
                        got = 0;
                    }
                }
                libc::_exit(0)
            }
            pid => {
                libc::close(read_end);
                Ok(Reaper {
                    pid,
                    tell: OwnedFd::from_raw_fd(write_end),
                })
            }
        }
    }
}

impl Reaper {
    /// Stops the watcher without touching the VMM, and reaps it.
    #[allow(unsafe_code)]
    pub fn dismiss(self) {
        // SAFETY: a write on our own pipe and a wait for our own child.
        unsafe {
            libc::write(self.tell.as_raw_fd(), b"x".as_ptr().cast(), 1);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

impl Watcher {
    /// Ends an unarmed watcher (the VMM never started).
    pub fn dismiss(self) {
        let Reaper { pid, tell } = self.0;
        drop(tell);
        #[allow(unsafe_code)]
        // SAFETY: a wait for our own child, which exits on end of file.
        unsafe {
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
}

#[cfg(test)]
mod tests {
    /// A process standing in for the supervisor forks the watcher of a
    /// sleeping "VMM", then is SIGKILLed: the VMM dies too. Dismissed, the
    /// watcher leaves the VMM alone.
    #[test]
    fn the_vmm_dies_with_the_watched_process_and_not_when_dismissed() {
        let mut vmm = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let r = super::spawn(vmm.id()).unwrap();
        r.dismiss();
        // Forked early and never armed: ends on dismissal, kills nothing.
        super::Watcher::fork().unwrap().dismiss();
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(vmm.try_wait().unwrap().is_none(), "dismissed: VMM alive");
        // Now from a child process that is killed.
        let pid = vmm.id();
        #[allow(unsafe_code)]
        // SAFETY: the child calls only spawn (pipe, fork) and pause/_exit.
        let sup = unsafe {
            match libc::fork() {
                0 => {
                    let _ = super::spawn(pid);
                    libc::pause();
                    libc::_exit(0)
                }
                p => p,
            }
        };
        std::thread::sleep(std::time::Duration::from_millis(200));
        #[allow(unsafe_code)]
        // SAFETY: our child.
        unsafe {
            libc::kill(sup, libc::SIGKILL);
            libc::waitpid(sup, std::ptr::null_mut(), 0);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            if vmm.try_wait().unwrap().is_some() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "VMM outlived its supervisor"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
