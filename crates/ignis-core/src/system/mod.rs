//! System-wide operations.

mod check;
mod prune;

pub use check::Problem;
