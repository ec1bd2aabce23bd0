//! Kernel modules for PID 1: the shared loader ([`berth_sys::modules`])
//! driven through [`Sys`], so stage tests record what would be loaded.

use std::io;
use std::path::Path;

pub use berth_sys::modules::*;

use crate::sys::Sys;

/// Loads `wanted` (or every module `modules.dep` lists, when `None`) from
/// `dir` (`/lib/modules/<release>`). Nothing here is fatal: a module that is
/// missing or fails is reported, and boot goes on to see whether it mattered.
pub fn load(sys: &mut dyn Sys, dir: &Path, wanted: Option<&[String]>) -> io::Result<Report> {
    load_with(dir, wanted, &[], |path, compressed, _| {
        sys.load_module(path, compressed)
    })
}
