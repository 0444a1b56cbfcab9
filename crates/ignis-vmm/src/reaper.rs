//! A VMM must not outlive its supervisor. PR_SET_PDEATHSIG on the VMM does
//! that only until it changes credentials (the kernel clears it on setuid),
//! and a confined VMM does: QEMU's `-runas`, Firecracker's jailer. So the
//! supervisor forks a tiny watcher that keeps root's credentials and its
//! own parent-death signal: when the supervisor dies, it SIGKILLs the VMM.
//! Hand-written: a fork and four syscalls; no crate does this.

/// A running watcher; [`Reaper::dismiss`] it once the VMM has exited.
#[derive(Debug)]
pub struct Reaper {
    pid: libc::pid_t,
}

/// Forks the watcher of `vmm` (a pid), for the calling process.
#[allow(unsafe_code)]
pub fn spawn(vmm: u32) -> std::io::Result<Reaper> {
    let vmm =
        libc::pid_t::try_from(vmm).map_err(|_| std::io::Error::other("VMM pid out of range"))?;
    // SAFETY: the child only calls async-signal-safe functions (signal
    // masks, prctl, getppid, sigwait, kill, _exit) before it exits: no
    // allocation, no locks, which matters after fork in a threaded process.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let parent = libc::getpid();
        match libc::fork() {
            -1 => Err(std::io::Error::last_os_error()),
            0 => {
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                if libc::getppid() == parent {
                    let mut sig = 0;
                    libc::sigwait(&set, &mut sig);
                }
                // Woken by the parent's death (or dismissed: then the
                // parent is still there and the VMM already gone).
                if libc::getppid() != parent {
                    libc::kill(vmm, libc::SIGKILL);
                }
                libc::_exit(0)
            }
            pid => Ok(Reaper { pid }),
        }
    }
}

impl Reaper {
    /// Stops the watcher without touching the VMM, and reaps it.
    #[allow(unsafe_code)]
    pub fn dismiss(self) {
        // SAFETY: plain syscalls on our own child.
        unsafe {
            libc::kill(self.pid, libc::SIGTERM);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
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
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(vmm.try_wait().unwrap().is_none(), "dismissed: VMM alive");
        // Now from a child process that is killed.
        let pid = vmm.id();
        #[allow(unsafe_code)]
        // SAFETY: the child calls only spawn (fork + prctl/sigwait/kill)
        // and pause/_exit.
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
