//! The release `berth` for the OS (static, musl) is linked with lld, its
//! functions in the order the boot first runs them (`boot-symbol-order.txt`,
//! made by `tools/probe/boot-order.sh`). The root is a squashfs of 64 KiB
//! blocks and each page fault in a program's code reads 128 KiB around it:
//! with the boot's 2,300 functions spread over `berth`'s 7 MB of code, berthd
//! alone waited for 116-122 blocks before the ready line; packed into the
//! first 2.2 MB, 48 (docs/benchmarks.md, "The boot's code together").
//!
//! A symbol the file names that the code no longer has is skipped, and a new
//! one goes after the listed ones: a stale file costs locality, never a build.

use std::path::{Path, PathBuf};
use std::process::Command;

const ORDER: &str = "boot-symbol-order.txt";

fn main() {
    println!("cargo:rerun-if-changed={ORDER}");
    println!("cargo:rerun-if-changed=build.rs");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    if var("TARGET") != "x86_64-unknown-linux-musl" || var("PROFILE") != "release" {
        return;
    }
    let Some(gcc_ld) = lld_wrapper(&var("RUSTC"), &var("HOST")) else {
        println!(
            "cargo:warning=the toolchain has no rust-lld (lib/rustlib/HOST/bin/gcc-ld): berth is linked without the boot's symbol order"
        );
        return;
    };
    let order = Path::new(&var("CARGO_MANIFEST_DIR")).join(ORDER);
    for arg in [
        format!("-B{}", gcc_ld.display()),
        "-fuse-ld=lld".to_string(),
        format!("-Wl,--symbol-ordering-file={}", order.display()),
        "-Wl,--no-warn-symbol-ordering".to_string(),
    ] {
        println!("cargo:rustc-link-arg-bin=berth={arg}");
    }
}

/// The toolchain's `gcc-ld` directory: an `ld.lld` that runs its `rust-lld`,
/// for a C compiler driver to find with `-B`.
fn lld_wrapper(rustc: &str, host: &str) -> Option<PathBuf> {
    let rustc = if rustc.is_empty() { "rustc" } else { rustc };
    let out = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    let sysroot = String::from_utf8(out.stdout).ok()?;
    let dir = Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(host)
        .join("bin/gcc-ld");
    dir.join("ld.lld").exists().then_some(dir)
}
