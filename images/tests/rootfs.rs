//! Mounting a container root from layer directories in the overlay form, as root.

use std::path::Path;

use berth_images::rootfs::RootfsPlan;
use rustix::fs::{FileType, Mode};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// A base layer and a top layer that deletes a file (whiteout) and replaces a
/// directory's contents (opaque), written the way the unpacker writes them.
fn layers(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let base = dir.join("layers/base");
    let top = dir.join("layers/top");
    write(&base.join("etc/kept"), "kept");
    write(&base.join("etc/deleted"), "deleted");
    write(&base.join("data/old"), "old");
    write(&top.join("data/new"), "new");
    std::fs::create_dir_all(top.join("etc")).expect("mkdir");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        top.join("etc/deleted"),
        FileType::CharacterDevice,
        Mode::empty(),
        0,
    )
    .expect("whiteout");
    rustix::fs::setxattr(
        top.join("data"),
        "trusted.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .expect("opaque");
    (base, top)
}

struct Mounted<'a>(&'a Path);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

#[test]
fn overlay_root_applies_whiteouts_and_keeps_layers_untouched() {
    if !is_root() {
        berth_testkit::skip!("mounting overlayfs needs root (cargo xtask test runs as root)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, top) = layers(dir.path());
    let root = dir.path().join("containers/web/rootfs");
    let plan = RootfsPlan::new(
        &[base.clone(), top.clone()],
        &dir.path().join("containers/web"),
        false,
    )
    .expect("plan");
    plan.mount(&root).expect("mount");
    let _guard = Mounted(&root);

    assert_eq!(
        std::fs::read_to_string(root.join("etc/kept")).expect("kept"),
        "kept"
    );
    assert!(
        !root.join("etc/deleted").exists(),
        "the whiteout hides the base file"
    );
    let mut data: Vec<String> = std::fs::read_dir(root.join("data"))
        .expect("data")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    data.sort();
    assert_eq!(
        data,
        ["new"],
        "the opaque directory hides the base layer's entries"
    );

    std::fs::write(root.join("etc/kept"), "changed").expect("write through overlay");
    std::fs::write(root.join("created"), "x").expect("create");
    assert_eq!(
        std::fs::read_to_string(base.join("etc/kept")).expect("base"),
        "kept"
    );
    assert!(!base.join("created").exists() && !top.join("created").exists());
    assert!(dir.path().join("containers/web/upper/created").exists());
}

#[test]
fn read_only_root_refuses_writes() {
    if !is_root() {
        berth_testkit::skip!("mounting overlayfs needs root (cargo xtask test runs as root)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, top) = layers(dir.path());
    let root = dir.path().join("ro/rootfs");
    let plan = RootfsPlan::new(&[base, top], &dir.path().join("ro"), true).expect("plan");
    assert!(plan.upper.is_none());
    plan.mount(&root).expect("mount");
    let _guard = Mounted(&root);
    assert_eq!(
        std::fs::read_to_string(root.join("etc/kept")).expect("kept"),
        "kept"
    );
    let err = std::fs::write(root.join("x"), "x").expect_err("read-only");
    assert_eq!(err.raw_os_error(), Some(30), "EROFS, got {err}");
}

#[test]
fn a_one_layer_image_mounts_read_only() {
    if !is_root() {
        berth_testkit::skip!("mounting overlayfs needs root (cargo xtask test runs as root)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, _) = layers(dir.path());
    let root = dir.path().join("one/rootfs");
    let plan =
        RootfsPlan::new(std::slice::from_ref(&base), &dir.path().join("one"), true).expect("plan");
    plan.mount(&root).expect("mount");
    let _guard = Mounted(&root);
    assert_eq!(
        std::fs::read_to_string(root.join("etc/kept")).expect("kept"),
        "kept"
    );
    let err = std::fs::write(root.join("x"), "x").expect_err("read-only");
    assert_eq!(err.raw_os_error(), Some(30), "EROFS, got {err}");
}

#[test]
fn a_missing_layer_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("layers/gone");
    let plan = RootfsPlan::new(std::slice::from_ref(&missing), dir.path(), false).expect("plan");
    let err = plan.mount(&dir.path().join("rootfs")).expect_err("missing");
    assert!(err.to_string().contains("layers/gone"), "{err}");
}
