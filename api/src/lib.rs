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
