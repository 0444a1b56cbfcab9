//! The ignis guest agent. `ignis-init` forks it inside every VM (app and
//! system images alike) once the root filesystem is ready; it serves the
//! protocol of `ignis-agent-proto` on the QEMU virtio-serial port
//! `ignis.agent` and on vsock port 1024 (Firecracker), one connection per
//! stream, any number of concurrent sessions per connection.

pub mod net;
pub mod policy;
pub mod user;

mod exec;
mod hooks;
mod serve;
mod transport;

pub use serve::serve;

/// What the agent needs to know about its VM.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Root to chroot into before serving (app mode: the overlay root the
    /// workload runs in); `None` when already there (system mode).
    pub chroot: Option<String>,
    /// Signal to PID 1 that powers the VM off cleanly.
    pub shutdown_signal: i32,
    /// The image's environment (exec inherits it, as `docker exec`).
    pub env: Vec<String>,
    /// The image's working directory (exec's default).
    pub workdir: Option<String>,
}

/// Forks the agent; returns its pid in the parent (`None` when the fork
/// failed). Call while the caller is single-threaded.
pub fn spawn(ctx: Context) -> Option<i32> {
    // SAFETY: the caller is single-threaded (documented contract), so the
    // child may keep running Rust code after fork.
    let pid = unsafe { libc::fork() };
    match pid {
        0 => {
            transport::run(ctx);
            std::process::exit(0)
        }
        p if p > 0 => Some(p),
        _ => None,
    }
}
