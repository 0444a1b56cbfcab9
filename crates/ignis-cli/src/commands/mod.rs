//! One file per command group; each function is glue from parsed
//! arguments to one service-layer call and its output.

mod attach;
mod image;
mod kernel;
mod network;
mod system;
mod vm;

use crate::cli::Command;
use ignis_core::Ignis;

/// Runs a command; the result is the process exit code.
pub fn dispatch(ignis: &Ignis, cmd: Command) -> anyhow::Result<i32> {
    match cmd {
        Command::Image(c) => image::run(ignis, c).map(|()| 0),
        Command::Kernel(c) => kernel::run(ignis, c).map(|()| 0),
        Command::System(c) => system::run(ignis, c).map(|()| 0),
        Command::Network(c) => network::run(ignis, c).map(|()| 0),
        Command::Version => unreachable!("handled before opening the state"),
        other => vm::run(ignis, other),
    }
}
