//! One file per command group; each function is glue from parsed
//! arguments to one service-layer call and its output.

mod image;
mod kernel;
mod system;

use crate::cli::Command;
use ignis_core::Ignis;

pub fn dispatch(ignis: &Ignis, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Image(c) => image::run(ignis, c),
        Command::Kernel(c) => kernel::run(ignis, c),
        Command::System(c) => system::run(ignis, c),
        Command::Version => unreachable!("handled before opening the state"),
    }
}
