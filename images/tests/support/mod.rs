//! Fixtures shared by the integration tests and benchmarks (of this crate and
//! the CLI's); each user takes what it needs.
#![allow(dead_code)]

pub mod proxy;
pub mod push;
