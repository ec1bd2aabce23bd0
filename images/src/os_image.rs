//! Berth's OS image (ARCHITECTURE.md §7): an ordinary OCI image (linux/amd64)
//! whose one layer holds `vmlinuz`, `initrd` and `rootfs.squashfs` at the root
//! of its tar, and whose config carries the label `io.berth.os.version` (and,
//! since images began to carry them, `io.berth.os.kernel_args`) — so
//! any registry, `skopeo` and `docker` can store and copy it. Built into a
//! store like any image (and exported as an `oci-archive` by
//! [`crate::archive::export`]); read back from a store after a pull or an
//! import, with the layer uncompressed, gzip or zstd.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::archive::single_layer_config;
use crate::archive::ArchiveError;
use crate::oci::{self, ImageConfig, LayerCompression, RunConfig};
use crate::store::{Store, StoreError};
use crate::Digest;

/// The label naming the OS version.
pub const VERSION_LABEL: &str = "io.berth.os.version";
/// The label naming the kernel arguments the OS boots with (Berth's own,
/// `berth_iso::grub::os_args`): an upgrade boots the new slot with the new
/// version's arguments. An image without it boots with those of the grub.cfg
/// the machine was installed with.
pub const KERNEL_ARGS_LABEL: &str = "io.berth.os.kernel_args";
/// The files of the payload, as named in the layer.
pub const KERNEL: &str = "vmlinuz";
pub const INITRD: &str = "initrd";
pub const ROOTFS: &str = "rootfs.squashfs";
pub const FILES: [&str; 3] = [KERNEL, INITRD, ROOTFS];

#[derive(Debug, thiserror::Error)]
pub enum OsImageError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: io::Error,
    },
    #[error("the layer {layer}: {source}")]
    Layer {
        layer: Digest,
        #[source]
        source: io::Error,
    },
    #[error("{reference} is not a Berth OS image: {reason}")]
    NotOs { reference: String, reason: String },
}

/// What an OS image says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsImage {
    pub reference: String,
    pub version: String,
    /// Its own kernel arguments ([`KERNEL_ARGS_LABEL`]), checked.
    pub kernel_args: Option<String>,
    pub architecture: String,
    pub layer: Digest,
    /// The layer's size as stored (compressed or not).
    pub layer_size: u64,
}

/// Stores an OS image of `version`, booting with `kernel_args`, made of
/// `files` ([`FILES`], in order) as `reference`, with an uncompressed layer
/// (the squashfs is compressed already).
pub fn build(
    store: &Store,
    reference: &str,
    version: &str,
    kernel_args: &str,
    files: [&Path; 3],
) -> Result<OsImage, OsImageError> {
    check_kernel_args(reference, kernel_args)?;
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| OsImageError::Io { path, source }
    };
    let dir = tempfile::tempdir().map_err(io_err(Path::new("<tempdir>")))?;
    let tar_path = dir.path().join("layer.tar");
    let tar_file = File::create(&tar_path).map_err(io_err(&tar_path))?;
    let mut builder = tar::Builder::new(io::BufWriter::new(tar_file));
    for (name, path) in FILES.iter().zip(files) {
        let mut f = File::open(path).map_err(io_err(path))?;
        let size = f.metadata().map_err(io_err(path))?.len();
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(size);
        header.set_mode(0o644);
        header.set_mtime(0);
        builder
            .append_data(&mut header, name, &mut f)
            .map_err(io_err(path))?;
    }
    builder
        .into_inner()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .map_err(io_err(&tar_path))?;
    let (diff_id, size) = store.put_blob(
        File::open(&tar_path).map_err(io_err(&tar_path))?,
        None,
        None,
    )?;
    let layer = oci::Descriptor::new(oci::OCI_LAYER, diff_id.clone(), size);
    let mut labels = BTreeMap::new();
    labels.insert(VERSION_LABEL.to_string(), version.to_string());
    labels.insert(KERNEL_ARGS_LABEL.to_string(), kernel_args.to_string());
    labels.insert(
        "org.opencontainers.image.title".into(),
        "Berth OS".to_string(),
    );
    labels.insert("org.opencontainers.image.version".into(), version.into());
    let config = ImageConfig {
        config: RunConfig {
            labels: Some(labels),
            ..RunConfig::default()
        },
        ..single_layer_config(diff_id)
    };
    store.put_image(reference, &config, vec![layer])?;
    inspect(store, reference)
}

/// The arguments go into a GRUB script for the slot: each must be a plain
/// argument, never something GRUB would run.
fn check_kernel_args(reference: &str, args: &str) -> Result<(), OsImageError> {
    berth_configs::kernel_args::check_os_args(args).map_err(|reason| OsImageError::NotOs {
        reference: reference.to_string(),
        reason: format!("its `{KERNEL_ARGS_LABEL}` label ({args:?}) cannot be booted: {reason}"),
    })
}

/// Checks that `reference` in `store` is an OS image for this machine.
pub fn inspect(store: &Store, reference: &str) -> Result<OsImage, OsImageError> {
    describe(&store.resolve(reference)?)
}

/// Checks that `image` (from a store, or a registry's
/// [`crate::pull::Remote::image`]) is an OS image for this machine.
pub fn describe(image: &crate::Image) -> Result<OsImage, OsImageError> {
    let reference = image.reference.as_str();
    let not_os = |reason: String| OsImageError::NotOs {
        reference: reference.to_string(),
        reason,
    };
    let labels = image.config.config.labels.as_ref();
    let version = labels
        .and_then(|l| l.get(VERSION_LABEL))
        .cloned()
        .ok_or_else(|| not_os(format!("its config has no `{VERSION_LABEL}` label")))?;
    let kernel_args = labels.and_then(|l| l.get(KERNEL_ARGS_LABEL)).cloned();
    if let Some(args) = &kernel_args {
        check_kernel_args(reference, args)?;
    }
    if image.config.os != "linux" || image.config.architecture != "amd64" {
        return Err(not_os(format!(
            "it is for {}/{}, this machine is linux/amd64",
            image.config.os, image.config.architecture
        )));
    }
    let [layer] = image.manifest.layers.as_slice() else {
        return Err(not_os(format!(
            "it has {} layers, not one",
            image.manifest.layers.len()
        )));
    };
    Ok(OsImage {
        reference: image.reference.clone(),
        version,
        kernel_args,
        architecture: image.config.architecture.clone(),
        layer: layer.digest.clone(),
        layer_size: layer.size,
    })
}

/// Streams the payload of `image`, its layer in `store`: `visit(name, size,
/// reader)` for each of [`FILES`] in the layer; anything else in it is
/// refused, and every file must be there.
pub fn extract(
    store: &Store,
    image: &OsImage,
    visit: impl FnMut(&str, u64, &mut dyn Read) -> io::Result<()>,
) -> Result<(), OsImageError> {
    extract_from(store.open_blob(&image.layer)?, image, visit)
}

/// [`extract`] from the layer's blob as `blob` reads it (gzip, zstd or
/// plain tar, told by its first bytes). It does not check the blob's
/// digest: the store did, or the caller does ([`crate::pull::BlobReader`]).
pub fn extract_from(
    mut blob: impl Read,
    image: &OsImage,
    mut visit: impl FnMut(&str, u64, &mut dyn Read) -> io::Result<()>,
) -> Result<(), OsImageError> {
    let io_err = |source| OsImageError::Layer {
        layer: image.layer.clone(),
        source,
    };
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < magic.len() {
        match blob.read(&mut magic[got..]).map_err(io_err)? {
            0 => break,
            n => got += n,
        }
    }
    let blob = io::Cursor::new(magic[..got].to_vec()).chain(blob);
    let reader: Box<dyn Read + '_> = match crate::archive::compression_of(&magic[..got]) {
        LayerCompression::Gzip => Box::new(flate2::read::GzDecoder::new(blob)),
        LayerCompression::Zstd => Box::new(zstd::stream::read::Decoder::new(blob).map_err(io_err)?),
        LayerCompression::None => Box::new(blob),
    };
    let mut archive = tar::Archive::new(reader);
    let mut seen = Vec::new();
    for entry in archive.entries().map_err(io_err)? {
        let mut entry = entry.map_err(io_err)?;
        let name = entry
            .path()
            .map_err(io_err)?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if name.is_empty() || entry.header().entry_type().is_dir() {
            continue;
        }
        let Some(known) = FILES.iter().find(|f| **f == name) else {
            return Err(OsImageError::NotOs {
                reference: image.reference.clone(),
                reason: format!("its layer holds `{name}`, not only {}", FILES.join(", ")),
            });
        };
        if seen.contains(known) {
            return Err(OsImageError::NotOs {
                reference: image.reference.clone(),
                reason: format!("its layer holds `{name}` twice"),
            });
        }
        seen.push(*known);
        let size = entry.size();
        visit(known, size, &mut entry).map_err(io_err)?;
    }
    if let Some(missing) = FILES.iter().find(|f| !seen.contains(f)) {
        return Err(OsImageError::NotOs {
            reference: image.reference.clone(),
            reason: format!("its layer has no `{missing}`"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_exports_imports_and_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("vmlinuz"), b"kernel").expect("write");
        std::fs::write(p("initrd"), b"initrd").expect("write");
        std::fs::write(p("rootfs"), vec![7u8; 100_000]).expect("write");
        let store = Store::open(p("store")).expect("store");
        let built = build(
            &store,
            "berth/os:2.0",
            "2.0",
            "console=ttyS0 panic=10",
            [&p("vmlinuz"), &p("initrd"), &p("rootfs")],
        )
        .expect("build");
        assert_eq!(built.version, "2.0");
        assert_eq!(built.kernel_args.as_deref(), Some("console=ttyS0 panic=10"));
        let archive = p("berth-os.tar");
        crate::archive::export(&store, "berth/os:2.0", &archive).expect("export");
        let other = Store::open(p("other")).expect("store");
        let imported = crate::archive::import(&other, &archive, None).expect("import");
        let reference = imported.references[0].clone();
        let image = inspect(&other, &reference).expect("inspect");
        assert_eq!(image.version, "2.0");
        let mut got = BTreeMap::new();
        extract(&other, &image, |name, size, r| {
            let mut data = Vec::new();
            r.read_to_end(&mut data)?;
            assert_eq!(data.len() as u64, size);
            got.insert(name.to_string(), data);
            Ok(())
        })
        .expect("extract");
        assert_eq!(got["vmlinuz"], b"kernel");
        assert_eq!(got["rootfs.squashfs"].len(), 100_000);
    }

    #[test]
    fn an_ordinary_image_is_not_an_os_image() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("store")).expect("store");
        let (digest, size) = store.put_blob(&b"not a tar"[..], None, None).expect("blob");
        let layer = oci::Descriptor::new(oci::OCI_LAYER, digest.clone(), size);
        store
            .put_image("app:1", &single_layer_config(digest), vec![layer])
            .expect("image");
        let e = inspect(&store, "app:1").expect_err("not os");
        assert!(e.to_string().contains(VERSION_LABEL), "{e}");
    }

    /// The arguments go into a GRUB script: an image whose label would
    /// inject a command, or set Berth's boot counting, is refused before
    /// anything of it is written.
    #[test]
    fn kernel_arguments_grub_could_run_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |n: &str| dir.path().join(n);
        for n in ["vmlinuz", "initrd", "rootfs"] {
            std::fs::write(p(n), n).expect("write");
        }
        let store = Store::open(p("store")).expect("store");
        let (k, i, r) = (p("vmlinuz"), p("initrd"), p("rootfs"));
        let files = [k.as_path(), i.as_path(), r.as_path()];
        for bad in ["panic=10\"\nnormal", "x=$(y)", "berth.slot=A", ""] {
            let e = build(&store, "berth/os:bad", "2.0", bad, files).expect_err(bad);
            assert!(e.to_string().contains(KERNEL_ARGS_LABEL), "{e}");
        }
    }
}
