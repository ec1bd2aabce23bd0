//! The image store: an OCI image layout at `<root>/images` plus unpacked layers
//! at `<root>/layers/<diff_id>`.
//!
//! Crash safety comes from ordering: a blob is written to `images/tmp/`, fsynced,
//! checked against its digest and only then renamed into `blobs/`; `index.json`
//! is replaced (temp + rename) only after every blob it names is in place. So
//! whatever is interrupted, the index never names a missing or partial blob;
//! leftovers in `tmp/` and unreferenced blobs are removed by [`Store::prune`].
//!
//! Concurrent writers (two pulls, a pull beside `berth image rm`, in one
//! process or several) change `index.json` under an exclusive flock(2) on
//! `images/.index.lock`, held from reading the index to renaming the new one
//! into place, with uniquely named temporary files: no change is lost and the
//! index is never half-written. Whoever adds blobs that an index entry will
//! name only later (a pull, an import, a build) holds [`Store::adding`] (a
//! shared lock) meanwhile; [`Store::prune`] takes it exclusively, so it never
//! removes a blob or temporary file a writer is still going to name.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, HashingWriter};
use crate::oci::{self, Descriptor, ImageConfig, Index, Manifest};
use crate::reference::Reference;

/// Manifests, indexes and configs are small; anything bigger is refused unread.
pub const MAX_JSON_BLOB: u64 = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("blob {expected} does not match its digest: the data hashes to {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {digest} is {actual} bytes, not the {expected} its descriptor says")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("blob {digest} is not in the store")]
    MissingBlob { digest: Digest },
    #[error("blob {digest} is {size} bytes; JSON documents are limited to {MAX_JSON_BLOB}")]
    TooLarge { digest: Digest, size: u64 },
    #[error("blob {digest} is not a valid {what}: {source}")]
    BadJson {
        digest: Digest,
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("no image `{reference}` in the store")]
    NotFound { reference: String },
    #[error("`{reference}` has no linux/amd64 image (platforms: {platforms})")]
    NoPlatform {
        reference: String,
        platforms: String,
    },
    #[error("unsupported media type `{media_type}` for {what}")]
    MediaType {
        media_type: String,
        what: &'static str,
    },
    #[error("{0}")]
    Reference(#[from] crate::reference::ReferenceError),
    #[error("image config lists {diff_ids} diff_ids for {layers} layers")]
    LayerCount { layers: usize, diff_ids: usize },
    #[error("unpacking layer {digest}: {source}")]
    Unpack {
        digest: Digest,
        source: crate::unpack::UnpackError,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An image as the store knows it: resolved down to one platform's manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub reference: String,
    /// The descriptor the index holds for this reference (a manifest or an index).
    pub descriptor: Descriptor,
    pub manifest_digest: Digest,
    pub manifest: Manifest,
    pub config: ImageConfig,
}

impl Image {
    /// Compressed size of the manifest, config and layers.
    pub fn size(&self) -> u64 {
        self.manifest.config.size + self.manifest.layers.iter().map(|l| l.size).sum::<u64>()
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PruneReport {
    pub blobs_removed: usize,
    pub bytes_freed: u64,
    pub layers_removed: usize,
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A flock(2) on one of the store's lock files, released when dropped (or
/// when the process dies: a killed pull leaves no stale lock).
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

impl StoreLock {
    fn take(path: &Path, how: rustix::fs::FlockOperation) -> Result<StoreLock, StoreError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        loop {
            match rustix::fs::flock(&file, how) {
                Ok(()) => return Ok(StoreLock { _file: file }),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(io_err(path)(e.into())),
            }
        }
    }
}

impl Store {
    /// Opens (creating if needed) the store under `root` (`/var/lib/berth` on a system).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let store = Store { root: root.into() };
        for dir in [store.blobs_dir(), store.tmp_dir(), store.layers_dir()] {
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        let layout = store.layout_dir().join("oci-layout");
        if !layout.exists() {
            store.write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        if !store.index_path().exists() {
            let _lock = store.lock_index()?;
            if !store.index_path().exists() {
                store.write_index(&Index::default())?;
            }
        }
        Ok(store)
    }

    /// The lock every read-modify-write of `index.json` holds.
    fn lock_index(&self) -> Result<StoreLock, StoreError> {
        StoreLock::take(
            &self.layout_dir().join(".index.lock"),
            rustix::fs::FlockOperation::LockExclusive,
        )
    }

    /// Held while blobs are added that the index will name only at the end
    /// (a pull, an import, a build): [`Store::prune`] waits for every holder,
    /// so it never takes a blob or a temporary file from under a writer.
    /// Shared: writers do not wait for each other. Not to be held by a
    /// caller of [`Store::prune`] (it would wait for itself).
    pub fn adding(&self) -> Result<StoreLock, StoreError> {
        StoreLock::take(&self.prune_lock(), rustix::fs::FlockOperation::LockShared)
    }

    fn prune_lock(&self) -> PathBuf {
        self.layout_dir().join(".prune.lock")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The OCI image layout directory.
    pub fn layout_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    fn blobs_dir(&self) -> PathBuf {
        self.layout_dir().join("blobs/sha256")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.layout_dir().join("tmp")
    }

    fn index_path(&self) -> PathBuf {
        self.layout_dir().join("index.json")
    }

    pub fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    /// Where the layer with this diff_id is (or will be) unpacked.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.layers_dir().join(diff_id.hex())
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// A fresh temporary file on the store's filesystem (so renames are atomic).
    pub fn temp_file(&self) -> Result<tempfile::NamedTempFile, StoreError> {
        let dir = self.tmp_dir();
        tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&dir)
            .map_err(io_err(&dir))
    }

    /// Streams `reader` into the store. With `expected`, the data must hash to it
    /// (and have `expected_size` bytes), or nothing is stored.
    pub fn put_blob(
        &self,
        reader: impl Read,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<(Digest, u64), StoreError> {
        let tmp = self.temp_file()?;
        let tmp_path = tmp.path().to_path_buf();
        let mut writer = HashingWriter::new(io::BufWriter::new(tmp));
        let mut reader = reader;
        io::copy(&mut reader, &mut writer).map_err(io_err(&tmp_path))?;
        let (buffered, digest, size) = writer.finish();
        let tmp = buffered.into_inner().map_err(|e| StoreError::Io {
            path: tmp_path.clone(),
            source: e.into_error(),
        })?;
        self.commit_blob(tmp, digest, size, expected, expected_size)
    }

    /// Moves a fully written temp file into `blobs/` after checking it.
    pub fn commit_blob(
        &self,
        tmp: tempfile::NamedTempFile,
        digest: Digest,
        size: u64,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<(Digest, u64), StoreError> {
        if let Some(expected) = expected {
            if *expected != digest {
                return Err(StoreError::DigestMismatch {
                    expected: expected.clone(),
                    actual: digest,
                });
            }
        }
        if let Some(expected_size) = expected_size {
            if expected_size != size {
                return Err(StoreError::SizeMismatch {
                    digest,
                    expected: expected_size,
                    actual: size,
                });
            }
        }
        let target = self.blob_path(&digest);
        if target.is_file() {
            return Ok((digest, size));
        }
        tmp.as_file().sync_all().map_err(io_err(tmp.path()))?;
        tmp.persist(&target).map_err(|e| StoreError::Io {
            path: target.clone(),
            source: e.error,
        })?;
        let blobs = self.blobs_dir();
        berth_sys::atomic::sync_dir(&blobs).map_err(io_err(&blobs))?;
        Ok((digest, size))
    }

    /// Stores a JSON document and returns its descriptor.
    pub fn put_json<T: serde::Serialize>(
        &self,
        media_type: &str,
        value: &T,
    ) -> Result<Descriptor, StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Io {
            path: self.tmp_dir(),
            source: io::Error::other(e),
        })?;
        let (digest, size) = self.put_blob(&bytes[..], None, None)?;
        Ok(Descriptor::new(media_type, digest, size))
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File, StoreError> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::MissingBlob {
                digest: digest.clone(),
            },
            _ => StoreError::Io { path, source: e },
        })
    }

    /// Reads a small JSON blob, checking it still matches its digest.
    pub fn read_json_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let file = self.open_blob(digest)?;
        let size = file
            .metadata()
            .map_err(io_err(&self.blob_path(digest)))?
            .len();
        if size > MAX_JSON_BLOB {
            return Err(StoreError::TooLarge {
                digest: digest.clone(),
                size,
            });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        file.take(MAX_JSON_BLOB)
            .read_to_end(&mut bytes)
            .map_err(io_err(&self.blob_path(digest)))?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(StoreError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    fn parse_blob<T: serde::de::DeserializeOwned>(
        &self,
        digest: &Digest,
        what: &'static str,
    ) -> Result<T, StoreError> {
        let bytes = self.read_json_blob(digest)?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::BadJson {
            digest: digest.clone(),
            what,
            source,
        })
    }

    pub fn index(&self) -> Result<Index, StoreError> {
        let path = self.index_path();
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Io {
            path,
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })
    }

    fn write_index(&self, index: &Index) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(index).map_err(|e| StoreError::Io {
            path: self.index_path(),
            source: io::Error::other(e),
        })?;
        self.write_atomic(&self.index_path(), &bytes)
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        // The one atomic writer, 0600 as the store's temporary files are.
        berth_sys::atomic::write(path, bytes, &berth_sys::atomic::Options::private())
            .map_err(io_err(path))
    }

    /// Names `descriptor` (a manifest or index already in the store) `reference`,
    /// replacing whatever had that name.
    pub fn tag(&self, reference: &str, descriptor: &Descriptor) -> Result<(), StoreError> {
        let name = Reference::parse(reference)?.to_string();
        if !self.has_blob(&descriptor.digest) {
            return Err(StoreError::MissingBlob {
                digest: descriptor.digest.clone(),
            });
        }
        let _lock = self.lock_index()?;
        let mut index = self.index()?;
        index
            .manifests
            .retain(|d| d.ref_name() != Some(name.as_str()));
        let mut named = descriptor.clone();
        named.annotations.insert(oci::REF_NAME.to_string(), name);
        index.manifests.push(named);
        self.write_index(&index)
    }

    /// Stores `config` and a manifest naming it and `layers` (blobs already in
    /// the store, in order), and names the new image `reference`.
    pub fn put_image(
        &self,
        reference: &str,
        config: &ImageConfig,
        layers: Vec<Descriptor>,
    ) -> Result<Descriptor, StoreError> {
        let config = self.put_json(oci::OCI_CONFIG, config)?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(oci::OCI_MANIFEST.into()),
            config,
            layers,
            extra: BTreeMap::new(),
        };
        let descriptor = self.put_json(oci::OCI_MANIFEST, &manifest)?;
        self.tag(reference, &descriptor)?;
        Ok(descriptor)
    }

    /// The image named `reference`, resolved to its linux/amd64 manifest.
    pub fn resolve(&self, reference: &str) -> Result<Image, StoreError> {
        let name = Reference::parse(reference)?.to_string();
        let index = self.index()?;
        let descriptor = index
            .manifests
            .iter()
            .find(|d| d.ref_name() == Some(name.as_str()))
            .ok_or_else(|| StoreError::NotFound {
                reference: name.clone(),
            })?
            .clone();
        let manifest_descriptor = self.platform_manifest(&name, &descriptor)?;
        let manifest: Manifest = self.parse_blob(&manifest_descriptor.digest, "manifest")?;
        let config: ImageConfig = self.parse_blob(&manifest.config.digest, "image config")?;
        Ok(Image {
            reference: name,
            descriptor,
            manifest_digest: manifest_descriptor.digest,
            manifest,
            config,
        })
    }

    /// For an index, the linux/amd64 entry; for a manifest, itself.
    pub fn platform_manifest(
        &self,
        reference: &str,
        descriptor: &Descriptor,
    ) -> Result<Descriptor, StoreError> {
        if oci::is_manifest(&descriptor.media_type) {
            return Ok(descriptor.clone());
        }
        if !oci::is_index(&descriptor.media_type) {
            return Err(StoreError::MediaType {
                media_type: descriptor.media_type.clone(),
                what: "an image",
            });
        }
        let index: Index = self.parse_blob(&descriptor.digest, "image index")?;
        select_platform(reference, &index).cloned()
    }

    pub fn list(&self) -> Result<Vec<Image>, StoreError> {
        let index = self.index()?;
        let mut images = Vec::new();
        for name in index.manifests.iter().filter_map(Descriptor::ref_name) {
            images.push(self.resolve(name)?);
        }
        images.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(images)
    }

    /// Forgets the name; the data goes at the next [`Store::prune`].
    pub fn remove(&self, reference: &str) -> Result<(), StoreError> {
        let name = Reference::parse(reference)?.to_string();
        let _lock = self.lock_index()?;
        let mut index = self.index()?;
        let before = index.manifests.len();
        index
            .manifests
            .retain(|d| d.ref_name() != Some(name.as_str()));
        if index.manifests.len() == before {
            return Err(StoreError::NotFound { reference: name });
        }
        self.write_index(&index)
    }

    /// The unpacked layer directories of `image`, base first, unpacking those
    /// not yet on disk. Each layer is unpacked once and shared by every image.
    pub fn unpack_image(
        &self,
        image: &Image,
        limits: &crate::unpack::Limits,
        progress: &dyn crate::progress::Progress,
    ) -> Result<Vec<PathBuf>, StoreError> {
        let layers = &image.manifest.layers;
        let diff_ids = &image.config.rootfs.diff_ids;
        if layers.len() != diff_ids.len() {
            return Err(StoreError::LayerCount {
                layers: layers.len(),
                diff_ids: diff_ids.len(),
            });
        }
        let mut dirs = Vec::with_capacity(layers.len());
        for (layer, diff_id) in layers.iter().zip(diff_ids) {
            let dir = self.layer_dir(diff_id);
            progress.blob_started("unpack", &layer.digest, layer.size);
            if dir.is_dir() {
                progress.blob_done(&layer.digest, true);
                dirs.push(dir);
                continue;
            }
            let unpack_err = |source| StoreError::Unpack {
                digest: layer.digest.clone(),
                source,
            };
            let compression =
                crate::unpack::compression_of(&layer.media_type).map_err(unpack_err)?;
            let blob = self.open_blob(&layer.digest)?;
            let reader =
                crate::progress::ProgressReader::new(blob, &layer.digest, layer.size, progress);
            let report = crate::unpack::unpack_layer(reader, compression, diff_id, &dir, limits)
                .map_err(unpack_err)?;
            if report.devices_skipped_count > 0 {
                log::warn!(
                    "layer {}: skipped {} device nodes ({}); containers get devices from the runtime",
                    layer.digest,
                    report.devices_skipped_count,
                    report.devices_skipped.join(", ")
                );
            }
            if report.xattrs_dropped > 0 {
                log::info!(
                    "layer {}: left out {} trusted/security xattrs",
                    layer.digest,
                    report.xattrs_dropped
                );
            }
            progress.blob_done(&layer.digest, false);
            dirs.push(dir);
        }
        Ok(dirs)
    }

    /// Every blob the index reaches, and every diff_id its images use.
    fn reachable(&self) -> Result<(BTreeSet<Digest>, BTreeSet<Digest>), StoreError> {
        let mut blobs = BTreeSet::new();
        let mut diff_ids = BTreeSet::new();
        let mut pending: Vec<Descriptor> = self.index()?.manifests;
        while let Some(d) = pending.pop() {
            if !blobs.insert(d.digest.clone()) || !self.has_blob(&d.digest) {
                continue;
            }
            if oci::is_index(&d.media_type) {
                let index: Index = self.parse_blob(&d.digest, "image index")?;
                pending.extend(index.manifests);
            } else if oci::is_manifest(&d.media_type) {
                let manifest: Manifest = self.parse_blob(&d.digest, "manifest")?;
                if let Ok(config) =
                    self.parse_blob::<ImageConfig>(&manifest.config.digest, "image config")
                {
                    diff_ids.extend(config.rootfs.diff_ids);
                }
                blobs.insert(manifest.config.digest.clone());
                blobs.extend(manifest.layers.into_iter().map(|l| l.digest));
            }
        }
        Ok((blobs, diff_ids))
    }

    /// Removes blobs and unpacked layers no image uses, and abandoned temp files.
    /// Waits for every writer holding [`Store::adding`] first.
    pub fn prune(&self) -> Result<PruneReport, StoreError> {
        let _writers_done = StoreLock::take(
            &self.prune_lock(),
            rustix::fs::FlockOperation::LockExclusive,
        )?;
        let (blobs, diff_ids) = self.reachable()?;
        let mut report = PruneReport::default();
        for entry in read_dir(&self.blobs_dir())? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let keep = format!("sha256:{name}")
                .parse::<Digest>()
                .is_ok_and(|d| blobs.contains(&d));
            if !keep {
                report.bytes_freed += entry.metadata().map(|m| m.len()).unwrap_or(0);
                std::fs::remove_file(entry.path()).map_err(io_err(&entry.path()))?;
                report.blobs_removed += 1;
            }
        }
        for entry in read_dir(&self.tmp_dir())? {
            let path = entry.path();
            let _ = std::fs::remove_file(&path).or_else(|_| std::fs::remove_dir_all(&path));
        }
        for entry in read_dir(&self.layers_dir())? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let keep = format!("sha256:{name}")
                .parse::<Digest>()
                .is_ok_and(|d| diff_ids.contains(&d));
            if !keep {
                std::fs::remove_dir_all(entry.path()).map_err(io_err(&entry.path()))?;
                report.layers_removed += 1;
            }
        }
        Ok(report)
    }
}

/// The linux/amd64 manifest of a multi-platform index.
pub fn select_platform<'a>(
    reference: &str,
    index: &'a Index,
) -> Result<&'a Descriptor, StoreError> {
    index
        .manifests
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        })
        .ok_or_else(|| StoreError::NoPlatform {
            reference: reference.to_string(),
            platforms: index
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .map(|p| format!("{}/{}", p.os, p.architecture))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>, StoreError> {
    std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_err(dir))
}
