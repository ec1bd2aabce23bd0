//! berthd's API (`docs/api.md`): the types it speaks, in [`types`], and the
//! one client over its unix socket, [`Client`]. berthd serves these types; the
//! CLI, PID 1, the tests and the benches read them through the client, so a
//! field renamed on one side is a compile error on the other.
//!
//! Small in dependencies (serde, serde_json, thiserror, httparse): PID 1 links
//! it and is a static binary.

pub mod client;
pub mod testing;
pub mod types;

pub use client::{Client, ClientError, Response, Timeouts};
pub use types::*;

/// berthd's API socket on a running system.
pub const SOCKET: &str = "/run/berth/berth.sock";

/// The environment variable through which PID 1 gives berthd the write end of
/// a pipe: berthd writes a byte to it whenever its API would answer
/// `GET /v1/services` differently in a service's phase, readiness or error,
/// so PID 1 asks again at once instead of at its next poll.
pub const NOTIFY_FD_ENV: &str = "BERTH_NOTIFY_FD";
