//! Kernel modules for PID 1: the shared loader ([`berth_sys::modules`]); stage 1
//! and stage 2 call it through [`crate::sys::Sys`], so their tests record what
//! would be loaded.

pub use berth_sys::modules::*;
