//! Evil tars against the safe unpacker: nothing may be written outside the layer
//! root, and every refusal names the entry. Runs as root (whiteouts are device
//! nodes and opaque markers are trusted xattrs); as another user it says so and
//! passes nothing off as tested.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use berth_images::digest::Digest;
use berth_images::oci::LayerCompression;
use berth_images::unpack::{unpack_layer, unpack_tar, Limits, Rejection, UnpackError};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

macro_rules! require_root {
    () => {
        if !is_root() {
            berth_testkit::skip!("the unpacker's whiteouts and ownership need root");
            return;
        }
    };
}

/// A tar built entry by entry with raw names, so hostile names survive as written.
struct Evil {
    builder: tar::Builder<Vec<u8>>,
}

impl Evil {
    fn new() -> Self {
        Evil {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(name: &[u8], kind: tar::EntryType, size: u64, link: &[u8]) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        let gnu = header.as_gnu_mut().expect("gnu header");
        gnu.name[..name.len()].copy_from_slice(name);
        gnu.linkname[..link.len()].copy_from_slice(link);
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        header
    }

    fn file(mut self, name: &str, content: &[u8]) -> Self {
        let header = Self::header(
            name.as_bytes(),
            tar::EntryType::Regular,
            content.len() as u64,
            b"",
        );
        self.builder.append(&header, content).expect("append");
        self
    }

    fn dir(mut self, name: &str) -> Self {
        let header = Self::header(name.as_bytes(), tar::EntryType::Directory, 0, b"");
        self.builder.append(&header, &[][..]).expect("append");
        self
    }

    fn symlink(mut self, name: &str, target: &str) -> Self {
        let header = Self::header(
            name.as_bytes(),
            tar::EntryType::Symlink,
            0,
            target.as_bytes(),
        );
        self.builder.append(&header, &[][..]).expect("append");
        self
    }

    fn hardlink(mut self, name: &str, target: &str) -> Self {
        let header = Self::header(name.as_bytes(), tar::EntryType::Link, 0, target.as_bytes());
        self.builder.append(&header, &[][..]).expect("append");
        self
    }

    fn device(mut self, name: &str) -> Self {
        let mut header = Self::header(name.as_bytes(), tar::EntryType::Char, 0, b"");
        header.set_device_major(1).expect("major");
        header.set_device_minor(3).expect("minor");
        header.set_cksum();
        self.builder.append(&header, &[][..]).expect("append");
        self
    }

    fn bytes(self) -> Vec<u8> {
        self.builder.into_inner().expect("finish")
    }
}

/// A layer root inside a sandbox whose other entries must stay untouched.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("root")).expect("root");
        std::fs::create_dir(dir.path().join("outside")).expect("outside");
        std::fs::write(dir.path().join("outside/target"), b"original").expect("target");
        Sandbox { dir }
    }

    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("root")
    }

    fn outside(&self) -> std::path::PathBuf {
        self.dir.path().join("outside")
    }

    fn unpack(&self, tar: &[u8]) -> Result<berth_images::unpack::UnpackReport, UnpackError> {
        unpack_tar(tar, &self.root(), &Limits::default())
    }

    /// Everything outside the root is as the sandbox made it.
    fn assert_outside_untouched(&self) {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["outside", "root"]);
        let outside: Vec<_> = std::fs::read_dir(self.outside()).expect("list").collect();
        assert_eq!(outside.len(), 1, "something was written next to the target");
        assert_eq!(
            std::fs::read(self.outside().join("target")).expect("read"),
            b"original"
        );
    }
}

fn rejected(result: Result<impl std::fmt::Debug, UnpackError>) -> (String, Rejection, String) {
    match result {
        Err(error @ UnpackError::Rejected { .. }) => {
            let message = error.to_string();
            let UnpackError::Rejected { entry, reason } = error else {
                unreachable!()
            };
            (entry, reason, message)
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn path_traversal_is_rejected_and_named() {
    require_root!();
    for name in [
        "../outside/target",
        "a/../../outside/target",
        "./../x",
        "ok/../..",
    ] {
        let sandbox = Sandbox::new();
        let tar = Evil::new().file("fine", b"x").file(name, b"pwned").bytes();
        let (entry, reason, message) = rejected(sandbox.unpack(&tar));
        assert_eq!(entry, name);
        assert_eq!(reason, Rejection::DotDot);
        assert!(message.contains(name), "{message}");
        sandbox.assert_outside_untouched();
    }
}

#[test]
fn absolute_names_are_rejected() {
    require_root!();
    let sandbox = Sandbox::new();
    let target = sandbox.outside().join("target");
    let name = target.to_str().expect("utf-8");
    let tar = Evil::new().file(name, b"pwned").bytes();
    let (entry, reason, _) = rejected(sandbox.unpack(&tar));
    assert_eq!((entry.as_str(), reason), (name, Rejection::Absolute));
    sandbox.assert_outside_untouched();

    let tar = Evil::new().hardlink("h", name).bytes();
    let (_, reason, _) = rejected(sandbox.unpack(&tar));
    assert_eq!(reason, Rejection::Absolute);
    sandbox.assert_outside_untouched();
}

#[test]
fn writing_through_a_symlink_from_the_same_layer_is_rejected() {
    require_root!();
    let sandbox = Sandbox::new();
    let outside = sandbox.outside();
    let tar = Evil::new()
        .symlink("link", outside.to_str().expect("utf-8"))
        .file("link/target", b"pwned")
        .bytes();
    let (entry, reason, message) = rejected(sandbox.unpack(&tar));
    assert_eq!(entry, "link/target");
    assert_eq!(reason, Rejection::SymlinkInPath("link".into()));
    assert!(message.contains("symlink"), "{message}");
    sandbox.assert_outside_untouched();

    // A relative symlink that climbs out, behind a real directory.
    let sandbox = Sandbox::new();
    let tar = Evil::new()
        .dir("etc")
        .symlink("etc/up", "../../outside")
        .file("etc/up/new", b"pwned")
        .bytes();
    let (_, reason, _) = rejected(sandbox.unpack(&tar));
    assert_eq!(reason, Rejection::SymlinkInPath("etc/up".into()));
    sandbox.assert_outside_untouched();
}

#[test]
fn symlink_chains_are_never_followed() {
    require_root!();
    let sandbox = Sandbox::new();
    let tar = Evil::new()
        .symlink("a", "b")
        .symlink("b", "c")
        .symlink("c", sandbox.outside().to_str().expect("utf-8"))
        .file("a/target", b"pwned")
        .bytes();
    let (entry, reason, _) = rejected(sandbox.unpack(&tar));
    assert_eq!(
        (entry.as_str(), reason),
        ("a/target", Rejection::SymlinkInPath("a".into()))
    );
    sandbox.assert_outside_untouched();
}

#[test]
fn a_file_replaces_a_symlink_instead_of_writing_through_it() {
    require_root!();
    let sandbox = Sandbox::new();
    let target = sandbox.outside().join("target");
    let tar = Evil::new()
        .symlink("f", target.to_str().expect("utf-8"))
        .file("f", b"inside")
        .bytes();
    sandbox.unpack(&tar).expect("unpack");
    let f = sandbox.root().join("f");
    assert!(std::fs::symlink_metadata(&f).expect("stat").is_file());
    assert_eq!(std::fs::read(f).expect("read"), b"inside");
    sandbox.assert_outside_untouched();
}

#[test]
fn hardlinks_must_name_a_regular_file_inside_the_layer() {
    require_root!();
    let sandbox = Sandbox::new();
    let outside = sandbox.outside().join("target");
    let cases: Vec<(Vec<u8>, Rejection)> = vec![
        (
            Evil::new().hardlink("h", "../outside/target").bytes(),
            Rejection::DotDot,
        ),
        (
            Evil::new()
                .symlink("s", outside.to_str().expect("utf-8"))
                .hardlink("h", "s")
                .bytes(),
            Rejection::BadHardlink("s".into()),
        ),
        (
            Evil::new().dir("d").hardlink("h", "d").bytes(),
            Rejection::BadHardlink("d".into()),
        ),
        (
            Evil::new().hardlink("h", "missing").bytes(),
            Rejection::BadHardlink("missing".into()),
        ),
        (
            Evil::new()
                .symlink("dir", sandbox.outside().to_str().expect("utf-8"))
                .hardlink("h", "dir/target")
                .bytes(),
            Rejection::BadHardlink("dir/target".into()),
        ),
    ];
    for (tar, expected) in cases {
        let sandbox = Sandbox::new();
        let (entry, reason, _) = rejected(sandbox.unpack(&tar));
        assert_eq!((entry.as_str(), reason), ("h", expected));
        sandbox.assert_outside_untouched();
    }

    let sandbox = Sandbox::new();
    let tar = Evil::new()
        .file("bin/a", b"same")
        .hardlink("bin/b", "bin/a")
        .bytes();
    sandbox.unpack(&tar).expect("unpack");
    let a = std::fs::metadata(sandbox.root().join("bin/a")).expect("a");
    let b = std::fs::metadata(sandbox.root().join("bin/b")).expect("b");
    assert_eq!(a.ino(), b.ino());
}

#[test]
fn whiteouts_take_the_overlay_form_and_cannot_name_dot_dot() {
    require_root!();
    let sandbox = Sandbox::new();
    let tar = Evil::new()
        .dir("etc")
        .file("etc/.wh.motd", b"")
        .file(".wh.gone", b"")
        .bytes();
    let report = sandbox.unpack(&tar).expect("unpack");
    assert_eq!(report.whiteouts, 2);
    for path in ["etc/motd", "gone"] {
        let meta = std::fs::symlink_metadata(sandbox.root().join(path)).expect("whiteout");
        assert!(meta.file_type().is_char_device(), "{path}");
        assert_eq!(meta.rdev(), 0, "{path}");
    }

    for (name, target) in [(".wh...", ".."), ("etc/.wh..", "."), ("etc/.wh.", "")] {
        let sandbox = Sandbox::new();
        let tar = Evil::new().dir("etc").file(name, b"").bytes();
        let (entry, reason, _) = rejected(sandbox.unpack(&tar));
        assert_eq!(
            (entry.as_str(), reason),
            (name, Rejection::BadWhiteout(target.into()))
        );
        sandbox.assert_outside_untouched();
    }
}

#[test]
fn an_opaque_marker_becomes_the_overlay_xattr() {
    require_root!();
    let sandbox = Sandbox::new();
    let tar = Evil::new()
        .dir("var/cache")
        .file("var/cache/.wh..wh..opq", b"")
        .file("var/cache/new", b"n")
        .bytes();
    let report = sandbox.unpack(&tar).expect("unpack");
    assert_eq!(report.opaque_dirs, 1);
    let mut value = [0u8; 8];
    let n = rustix::fs::getxattr(
        sandbox.root().join("var/cache"),
        "trusted.overlay.opaque",
        &mut value,
    )
    .expect("opaque xattr");
    assert_eq!(&value[..n], b"y");
    assert!(!sandbox.root().join("var/cache/.wh..wh..opq").exists());
}

#[test]
fn device_nodes_are_skipped_with_a_note() {
    require_root!();
    let sandbox = Sandbox::new();
    let tar = Evil::new()
        .dir("dev")
        .device("dev/null")
        .file("ok", b"x")
        .bytes();
    let report = sandbox.unpack(&tar).expect("unpack");
    assert_eq!(report.devices_skipped, ["dev/null"]);
    assert_eq!(report.devices_skipped_count, 1);
    assert!(!sandbox.root().join("dev/null").exists());
    assert!(sandbox.root().join("ok").exists());
}

#[test]
fn trusted_and_security_xattrs_from_the_tar_are_dropped() {
    require_root!();
    let sandbox = Sandbox::new();
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_pax_extensions([
            ("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..]),
            ("SCHILY.xattr.security.capability", &b"\x01\x00\x00\x02"[..]),
            ("SCHILY.xattr.user.note", &b"kept"[..]),
        ])
        .expect("pax");
    builder
        .append(
            &Evil::header(b"f", tar::EntryType::Regular, 1, b""),
            &b"x"[..],
        )
        .expect("append");
    let report = sandbox
        .unpack(&builder.into_inner().expect("tar"))
        .expect("unpack");
    assert_eq!(report.xattrs_dropped, 2);
    let f = sandbox.root().join("f");
    let mut buf = [0u8; 16];
    assert!(rustix::fs::getxattr(&f, "trusted.overlay.opaque", &mut buf).is_err());
    assert!(rustix::fs::getxattr(&f, "security.capability", &mut buf).is_err());
    let n = rustix::fs::getxattr(&f, "user.note", &mut buf).expect("user xattr");
    assert_eq!(&buf[..n], b"kept");
}

#[test]
fn a_non_empty_directory_is_not_replaced_and_files_are_not_parents() {
    require_root!();
    let sandbox = Sandbox::new();
    let tar = Evil::new().file("d/keep", b"x").file("d", b"file").bytes();
    let (entry, reason, _) = rejected(sandbox.unpack(&tar));
    assert_eq!(
        (entry.as_str(), reason),
        ("d", Rejection::ReplacesDirectory("d".into()))
    );

    let sandbox = Sandbox::new();
    let tar = Evil::new().file("f", b"x").file("f/child", b"y").bytes();
    let (_, reason, _) = rejected(sandbox.unpack(&tar));
    assert_eq!(reason, Rejection::NotADirectory("f".into()));
}

#[test]
fn a_sparse_ten_gigabyte_bomb_is_refused_before_writing() {
    require_root!();
    let sandbox = Sandbox::new();
    let work = tempfile::tempdir().expect("tempdir");
    let bomb = work.path().join("bomb");
    let file = std::fs::File::create(&bomb).expect("create");
    file.set_len(10 << 30).expect("sparse 10 GiB");
    drop(file);
    let tar_path = work.path().join("bomb.tar");
    let status = std::process::Command::new("tar")
        .args(["--sparse", "--format=gnu", "-cf"])
        .arg(&tar_path)
        .arg("-C")
        .arg(work.path())
        .arg("bomb")
        .status()
        .expect("GNU tar");
    assert!(status.success());
    let archive = std::fs::read(&tar_path).expect("read tar");
    assert!(
        archive.len() < 1 << 20,
        "the bomb is small: {} bytes",
        archive.len()
    );
    let (entry, reason, message) = rejected(sandbox.unpack(&archive));
    assert_eq!(entry, "bomb");
    assert!(
        matches!(reason, Rejection::TooLarge { size, .. } if size == 10 << 30),
        "{reason:?}"
    );
    assert!(message.contains("bomb"), "{message}");
    assert!(!sandbox.root().join("bomb").exists());
}

/// Generates a tar of `count` empty files on the fly (a 1M-entry tar is 512 MB).
struct ManyEntries {
    count: u64,
    next: u64,
    block: Vec<u8>,
    offset: usize,
}

impl Read for ManyEntries {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.offset == self.block.len() {
            if self.next > self.count {
                return Ok(0);
            }
            self.block = if self.next == self.count {
                vec![0; 1024]
            } else {
                let name = format!("d{}/f{}", self.next % 100, self.next);
                Evil::header(name.as_bytes(), tar::EntryType::Regular, 0, b"")
                    .as_bytes()
                    .to_vec()
            };
            self.next += 1;
            self.offset = 0;
        }
        let n = buf.len().min(self.block.len() - self.offset);
        buf[..n].copy_from_slice(&self.block[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}

#[test]
fn a_million_tiny_entries_hit_the_entry_limit() {
    require_root!();
    assert!(Limits::default().max_entries < 1_000_000);
    let sandbox = Sandbox::new();
    let limits = Limits {
        max_entries: 20_000,
        ..Limits::default()
    };
    let stream = ManyEntries {
        count: 1_000_000,
        next: 0,
        block: Vec::new(),
        offset: 0,
    };
    let result = unpack_tar(stream, &sandbox.root(), &limits);
    let (entry, reason, _) = rejected(result);
    assert_eq!(reason, Rejection::TooManyEntries { limit: 20_000 });
    assert_eq!(entry, "d0/f20000");
}

fn zstd_layer(tar: &[u8]) -> (Vec<u8>, Digest) {
    let compressed = zstd::encode_all(tar, 3).expect("zstd");
    (compressed, Digest::of(tar))
}

fn staging_left(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_verified_layer_is_renamed_into_place_with_its_metadata() {
    require_root!();
    let layers = tempfile::tempdir().expect("tempdir");
    let mut header = Evil::header(b"usr/bin/tool", tar::EntryType::Regular, 4, b"");
    header.set_mode(0o4755);
    header.set_uid(1234);
    header.set_gid(5678);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, &b"tool"[..]).expect("append");
    let mut fifo = Evil::header(b"run/pipe", tar::EntryType::Fifo, 0, b"");
    fifo.set_cksum();
    builder.append(&fifo, &[][..]).expect("append");
    builder
        .append(
            &Evil::header(
                b"usr/lib/libc.so",
                tar::EntryType::Symlink,
                0,
                b"/lib/libc.so.6",
            ),
            &[][..],
        )
        .expect("append");
    let tar = builder.into_inner().expect("tar");
    let (blob, diff_id) = zstd_layer(&tar);
    let dest = layers.path().join(diff_id.hex());
    let report = unpack_layer(
        &blob[..],
        LayerCompression::Zstd,
        &diff_id,
        &dest,
        &Limits::default(),
    )
    .expect("unpack");
    assert_eq!(report.entries, 3);
    let tool = std::fs::metadata(dest.join("usr/bin/tool")).expect("tool");
    assert_eq!(tool.permissions().mode() & 0o7777, 0o4755);
    assert_eq!((tool.uid(), tool.gid()), (1234, 5678));
    assert_eq!(tool.mtime(), 1_700_000_000);
    assert!(std::fs::symlink_metadata(dest.join("run/pipe"))
        .expect("fifo")
        .file_type()
        .is_fifo());
    assert_eq!(
        std::fs::read_link(dest.join("usr/lib/libc.so")).expect("link"),
        Path::new("/lib/libc.so.6")
    );
    assert_eq!(staging_left(layers.path()), [diff_id.hex()]);

    // A gzip layer of the same tar unpacks to the same diff_id.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let gz_dest = layers.path().join("gz");
    unpack_layer(
        &gz[..],
        LayerCompression::Gzip,
        &diff_id,
        &gz_dest,
        &Limits::default(),
    )
    .expect("gzip layer");
    assert!(gz_dest.join("usr/bin/tool").is_file());
}

#[test]
fn a_rejected_or_mismatched_layer_leaves_nothing_behind() {
    require_root!();
    let layers = tempfile::tempdir().expect("tempdir");
    let evil = Evil::new().file("a", b"x").file("../b", b"y").bytes();
    let (blob, diff_id) = zstd_layer(&evil);
    let dest = layers.path().join("layer");
    let err = unpack_layer(
        &blob[..],
        LayerCompression::Zstd,
        &diff_id,
        &dest,
        &Limits::default(),
    )
    .expect_err("evil layer");
    assert!(err.to_string().contains("`../b`"), "{err}");
    assert!(
        staging_left(layers.path()).is_empty(),
        "{:?}",
        staging_left(layers.path())
    );

    let good = Evil::new().file("a", b"x").bytes();
    let (blob, diff_id) = zstd_layer(&good);
    let wrong = Digest::of(b"something else");
    let err = unpack_layer(
        &blob[..],
        LayerCompression::Zstd,
        &wrong,
        &dest,
        &Limits::default(),
    )
    .expect_err("wrong diff_id");
    assert!(
        matches!(
            err,
            UnpackError::DigestMismatch {
                what: "diff_id",
                ..
            }
        ),
        "{err}"
    );
    let mut corrupt = blob.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let err = unpack_layer(
        &corrupt[..],
        LayerCompression::Zstd,
        &diff_id,
        &dest,
        &Limits::default(),
    )
    .expect_err("corrupt blob");
    assert!(
        matches!(
            err,
            UnpackError::DigestMismatch {
                what: "diff_id",
                ..
            } | UnpackError::Read(_)
        ),
        "{err}"
    );
    assert!(
        staging_left(layers.path()).is_empty(),
        "{:?}",
        staging_left(layers.path())
    );
}
