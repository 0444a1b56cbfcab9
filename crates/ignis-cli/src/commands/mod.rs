//! One file per command group; each function is glue from parsed
//! arguments to one service-layer call and its output.

mod attach;
mod events;
mod exec;
pub mod fleet;
mod image;
mod kernel;
pub mod manifest;
mod network;
mod snapshot;
mod system;
mod vm;
mod volume;

use crate::cli::Command;
use crate::engine::Engine;

/// Runs a command; the result is the process exit code.
pub fn dispatch(ignis: &dyn Engine, cmd: Command) -> anyhow::Result<i32> {
    match cmd {
        Command::Image(c) => image::run(ignis, c).map(|()| 0),
        Command::Kernel(c) => kernel::run(ignis, c).map(|()| 0),
        Command::System(c) => system::run(ignis, c).map(|()| 0),
        Command::Network(c) => network::run(ignis, c).map(|()| 0),
        Command::Volume(c) => volume::run(ignis, c),
        Command::Version => unreachable!("handled before opening the state"),
        Command::Exec(a) => exec::exec(ignis, a),
        Command::Events(a) => events::run(ignis, a).map(|()| 0),
        Command::Daemon(_) => unreachable!("handled before dispatch"),
        Command::Fleet(_) => unreachable!("handled before opening the state"),
        Command::Apply { file, output } => manifest::apply(ignis, &file, output),
        Command::Delete { file } => manifest::delete(ignis, &file),
        Command::Get { kind, name, output } => {
            manifest::get(ignis, &kind, &name, output).map(|()| 0)
        }
        Command::Snapshot(a) => snapshot::snapshot(ignis, a).map(|()| 0),
        Command::Fork {
            source,
            count,
            name_prefix,
            rm,
            timings,
        } => snapshot::fork(ignis, &source, count, name_prefix, None, rm, timings).map(|()| 0),
        Command::Restore {
            snapshot: s,
            name,
            rm,
            timings,
        } => snapshot::fork(ignis, &s, 1, None, name, rm, timings).map(|()| 0),
        Command::Ssh { user, vm, command } => exec::ssh(ignis, &user, &vm, &command),
        Command::Cp { src, dest } => exec::cp(ignis, &src, &dest).map(|()| 0),
        Command::Configure {
            vm,
            hostname,
            ip,
            gateway,
            mac,
            entropy,
            sync_clock,
        } => {
            exec::configure(ignis, &vm, hostname, ip, gateway, mac, entropy, sync_clock).map(|()| 0)
        }
        other => vm::run(ignis, other),
    }
}
