//! `ignis daemon` run by a test (the real binary, its state root the
//! test's), killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::Env;

pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
}

impl Daemon {
    pub fn start(env: &Env, args: &[&str]) -> Self {
        Self::start_with(env, args, &[])
    }

    /// Starts the daemon with extra arguments and environment; returns
    /// once its socket exists, or once it has ended (a fault point may end
    /// it first). Its stderr goes to `daemon.log` in the test's directory.
    pub fn start_with(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Self {
        let mut c = env.cmd();
        c.envs(vars.iter().copied());
        Self::start_from(env, c, args)
    }

    /// As [`Daemon::start_with`], from `base`: `ignis` (or a wrapper such
    /// as `ip netns exec NS ignis`) with its environment.
    pub fn start_from(env: &Env, mut base: Command, args: &[&str]) -> Self {
        let socket = env.dir.path().join(format!("d{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        let mut child = base
            .arg("daemon")
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(env.dir.path().join("daemon.log")).unwrap())
            .spawn()
            .unwrap();
        super::wait::until("the daemon socket", Duration::from_secs(20), || {
            socket.exists() || child.try_wait().unwrap().is_some()
        });
        Self { child, socket }
    }

    /// The `--host` value of its unix socket.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
