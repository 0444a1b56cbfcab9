//! The ignis agent protocol (version 1).
//!
//! One byte stream (a virtio-serial port on QEMU, a vsock connection on
//! Firecracker, a unix socket between the CLI and the VM's supervisor)
//! carries frames of many concurrent *sessions*. Every frame is
//!
//! ```text
//! 0     2        3      4          8          12
//! +-----+--------+------+----------+----------+----------------+
//! | "IG"| version| kind | session  | length   | payload        |
//! +-----+--------+------+----------+----------+----------------+
//!          u8       u8    u32 BE     u32 BE     length bytes
//! ```
//!
//! A session starts with [`Kind::Open`] carrying a JSON [`Request`] and ends
//! with [`Kind::Exit`] or [`Kind::Error`]. Data frames (stdin, stdout,
//! stderr) are bounded by [`MAX_DATA`] and by a per-session credit window
//! ([`WINDOW`]): a sender never has more than `WINDOW` unacknowledged bytes
//! in flight; the receiver returns [`Kind::Credit`] as it consumes them. So
//! one slow reader never stalls the other sessions of the stream, and
//! neither side buffers more than a window per session.
//!
//! The decoder ([`Decoder`]) never trusts its input: oversized frames are
//! skipped without being buffered, unknown kinds and versions are reported
//! and skipped, garbage is resynchronised on the next magic.

pub mod client;
mod copy;
mod credit;
mod frame;
mod msg;

pub use client::ClientError;
pub use copy::{pack, pack_with, unpack_at, CopyError};
pub use credit::Credit;
pub use frame::{
    encode, encode_into, DecodeError, Decoder, Frame, FrameReader, Kind, PayloadError, HEADER_LEN,
};
pub use msg::{CopyRequest, ErrorMsg, ExecRequest, ExitMsg, Hello, NetConfig, Request};

/// Protocol version carried in every frame header.
pub const VERSION: u8 = 1;
/// Frame magic.
pub const MAGIC: [u8; 2] = *b"IG";
/// Largest payload accepted (control messages; data frames are smaller).
pub const MAX_PAYLOAD: u32 = 1 << 20;
/// Largest data frame a sender produces.
pub const MAX_DATA: usize = 64 << 10;
/// Per-session, per-direction flow-control window in bytes.
pub const WINDOW: u64 = 1 << 20;
/// Agent vsock port (Firecracker: `CONNECT 1024`).
pub const VSOCK_PORT: u32 = 1024;
/// Name of the QEMU virtio-serial port the agent opens.
pub const SERIAL_PORT_NAME: &str = "ignis.agent";

/// `e` and each of its causes once, joined by `": "`: how an error becomes
/// text where it is reported (an [`ErrorMsg`] to the host, `ignis-init`'s
/// console report).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
