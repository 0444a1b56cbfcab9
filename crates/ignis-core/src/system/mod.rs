//! System-wide operations.

mod prune;
