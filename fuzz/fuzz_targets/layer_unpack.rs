//! Fuzzes the layer unpacker: any tar stream (paths with `..` and absolute
//! parts, symlinks and hard links that point out, whiteouts and opaque
//! markers, device nodes, huge sizes) is unpacked into a fresh directory.
//! It may be refused, but must not panic, hang, or write outside the
//! directory: after each run the directory's parent holds only it.
//! Run as root (whiteouts are device nodes), as `cargo xtask fuzz` is.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(outer) = tempfile::tempdir() else {
        return;
    };
    let root = outer.path().join("layer");
    if std::fs::create_dir(&root).is_err() {
        return;
    }
    let limits = berth_images::unpack::Limits {
        max_bytes: 64 << 20,
        max_entries: 10_000,
    };
    let _ = berth_images::unpack::unpack_tar(data, &root, &limits);
    let beside: Vec<_> = std::fs::read_dir(outer.path())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(beside, vec![std::ffi::OsString::from("layer")], "wrote outside the layer");
});
