//! Images in and out of the store as files: an OCI layout directory, an
//! `oci-archive` tar (a tar of a layout) or a `docker save` tar in; an
//! `oci-archive` tar out.
//!
//! Archives are read as data, entry by entry, into [`Store::put_blob`]: nothing is
//! unpacked by path. Every blob is checked against the digest that names it, and
//! an image is named in the index only after its whole closure is stored, so a
//! bad archive leaves at most unreferenced blobs, which `prune` removes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::oci::{self, Descriptor, ImageConfig, Index, Manifest, RootFs};
use crate::reference::Reference;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

fn invalid(path: &Path, reason: impl Into<String>) -> ArchiveError {
    ArchiveError::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// What an import added to the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    pub references: Vec<String>,
}

/// Imports an OCI layout directory, an `oci-archive` tar or a `docker save` tar.
/// `name` names the image when the source does not (or overrides a bare tag).
pub fn import(store: &Store, path: &Path, name: Option<&str>) -> Result<Imported, ArchiveError> {
    // Until the image is named, its blobs are unreferenced: no prune meanwhile.
    let _adding = store.adding()?;
    if path.is_dir() {
        return import_layout_dir(store, path, name);
    }
    let file = File::open(path).map_err(|source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let contents = read_tar(store, path, file)?;
    if let Some(index) = contents.files.get("index.json") {
        let index: Index =
            serde_json::from_slice(index).map_err(|e| invalid(path, format!("index.json: {e}")))?;
        import_index(store, path, &index, name)
    } else if let Some(manifest) = contents.files.get("manifest.json") {
        import_docker_save(store, path, manifest, &contents, name)
    } else {
        Err(invalid(
            path,
            "neither an OCI archive (no index.json) nor a `docker save` archive (no manifest.json)",
        ))
    }
}

/// A tar read into the store: small JSON files kept in memory, blobs stored.
#[derive(Debug, Default)]
struct TarContents {
    files: BTreeMap<String, Vec<u8>>,
    /// Archive path → stored blob.
    blobs: BTreeMap<String, (Digest, u64)>,
}

fn read_tar(store: &Store, path: &Path, reader: impl Read) -> Result<TarContents, ArchiveError> {
    let io_err = |source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut archive = tar::Archive::new(reader);
    let mut contents = TarContents::default();
    for entry in archive.entries().map_err(io_err)? {
        let mut entry = entry.map_err(io_err)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().map_err(io_err)?.to_string_lossy().into_owned();
        let name = name.trim_start_matches("./").to_string();
        // Blobs named by digest are checked against their name while they stream in.
        let named = name
            .strip_prefix("blobs/sha256/")
            .and_then(|hex| format!("sha256:{hex}").parse::<Digest>().ok());
        if name.ends_with(".json") && !name.starts_with("blobs/")
            || name == "oci-layout"
            || name == "repositories"
        {
            let mut bytes = Vec::new();
            (&mut entry)
                .take(crate::store::MAX_JSON_BLOB)
                .read_to_end(&mut bytes)
                .map_err(io_err)?;
            if name.ends_with(".json") {
                // docker save keeps the config as `<hex>.json`: it is also a blob.
                let (digest, size) = store.put_blob(&bytes[..], None, None)?;
                contents.blobs.insert(name.clone(), (digest, size));
            }
            contents.files.insert(name, bytes);
        } else {
            let stored = store.put_blob(&mut entry, named.as_ref(), None)?;
            contents.blobs.insert(name, stored);
        }
    }
    Ok(contents)
}

fn import_layout_dir(
    store: &Store,
    dir: &Path,
    name: Option<&str>,
) -> Result<Imported, ArchiveError> {
    let index_path = dir.join("index.json");
    let bytes = std::fs::read(&index_path).map_err(|source| ArchiveError::Io {
        path: index_path.clone(),
        source,
    })?;
    let index: Index =
        serde_json::from_slice(&bytes).map_err(|e| invalid(&index_path, e.to_string()))?;
    // Copy the closure of every image in, verifying each blob against its name.
    let mut pending: Vec<Descriptor> = index.manifests.clone();
    while let Some(d) = pending.pop() {
        if store.has_blob(&d.digest)
            && !oci::is_index(&d.media_type)
            && !oci::is_manifest(&d.media_type)
        {
            continue;
        }
        let blob = dir.join("blobs/sha256").join(d.digest.hex());
        let file = File::open(&blob).map_err(|source| ArchiveError::Io {
            path: blob.clone(),
            source,
        })?;
        store.put_blob(file, Some(&d.digest), Some(d.size))?;
        if oci::is_index(&d.media_type) {
            let inner: Index = serde_json::from_slice(&store.read_json_blob(&d.digest)?)
                .map_err(|e| invalid(&blob, e.to_string()))?;
            pending.extend(inner.manifests);
        } else if oci::is_manifest(&d.media_type) {
            let manifest: Manifest = serde_json::from_slice(&store.read_json_blob(&d.digest)?)
                .map_err(|e| invalid(&blob, e.to_string()))?;
            pending.push(manifest.config);
            pending.extend(manifest.layers);
        }
    }
    tag_index(store, dir, &index, name)
}

/// Checks the closure of an archive's index is in the store, then names its images.
fn import_index(
    store: &Store,
    path: &Path,
    index: &Index,
    name: Option<&str>,
) -> Result<Imported, ArchiveError> {
    for d in &index.manifests {
        check_closure(store, d)?;
    }
    tag_index(store, path, index, name)
}

fn check_closure(store: &Store, d: &Descriptor) -> Result<(), ArchiveError> {
    let missing = |digest: &Digest| StoreError::MissingBlob {
        digest: digest.clone(),
    };
    if !store.has_blob(&d.digest) {
        return Err(missing(&d.digest).into());
    }
    if oci::is_index(&d.media_type) {
        let inner: Index = serde_json::from_slice(&store.read_json_blob(&d.digest)?)
            .map_err(|e| invalid(&store.blob_path(&d.digest), e.to_string()))?;
        for m in &inner.manifests {
            // Other platforms' manifests may be absent from a single-platform copy.
            if m.platform
                .as_ref()
                .is_none_or(|p| p.os == "linux" && p.architecture == "amd64")
            {
                check_closure(store, m)?;
            }
        }
    } else if oci::is_manifest(&d.media_type) {
        let manifest: Manifest = serde_json::from_slice(&store.read_json_blob(&d.digest)?)
            .map_err(|e| invalid(&store.blob_path(&d.digest), e.to_string()))?;
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            let actual = store
                .blob_path(&blob.digest)
                .metadata()
                .map(|m| m.len())
                .ok();
            match actual {
                None => return Err(missing(&blob.digest).into()),
                Some(size) if size != blob.size => {
                    return Err(StoreError::SizeMismatch {
                        digest: blob.digest.clone(),
                        expected: blob.size,
                        actual: size,
                    }
                    .into())
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

fn tag_index(
    store: &Store,
    path: &Path,
    index: &Index,
    name: Option<&str>,
) -> Result<Imported, ArchiveError> {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_else(|| "imported".into());
    let mut references = Vec::new();
    for d in &index.manifests {
        let name_has_tag =
            name.is_some_and(|n| n.rsplit('/').next().is_some_and(|last| last.contains(':')));
        let reference = match (name, d.ref_name()) {
            // A name with a tag names the image outright.
            (Some(name), _) if name_has_tag => name.to_string(),
            // A full reference in the annotation names the image, unless a name is given.
            (None, Some(r)) if r.contains(['/', ':']) => r.to_string(),
            // A bare tag (what skopeo and umoci write) tags the given or the file's name.
            (name, Some(tag)) if !tag.contains(['/', ':']) => {
                format!("{}:{tag}", name.unwrap_or(stem.as_str()))
            }
            (Some(name), _) => name.to_string(),
            (None, _) => {
                return Err(invalid(
                    path,
                    "an image in the index has no name; give one with --name",
                ));
            }
        };
        store.tag(&reference, d)?;
        references.push(
            Reference::parse(&reference)
                .map_err(StoreError::from)?
                .to_string(),
        );
    }
    Ok(Imported { references })
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerSaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn import_docker_save(
    store: &Store,
    path: &Path,
    manifest_json: &[u8],
    contents: &TarContents,
    name: Option<&str>,
) -> Result<Imported, ArchiveError> {
    let entries: Vec<DockerSaveEntry> = serde_json::from_slice(manifest_json)
        .map_err(|e| invalid(path, format!("manifest.json: {e}")))?;
    let blob = |file: &str| {
        contents.blobs.get(file).cloned().ok_or_else(|| {
            invalid(
                path,
                format!("manifest.json names `{file}`, which is not in the archive"),
            )
        })
    };
    let mut references = Vec::new();
    for entry in entries {
        let (config_digest, config_size) = blob(&entry.config)?;
        let config: ImageConfig = serde_json::from_slice(&store.read_json_blob(&config_digest)?)
            .map_err(|e| invalid(path, format!("{}: {e}", entry.config)))?;
        let mut layers = Vec::new();
        for (i, file) in entry.layers.iter().enumerate() {
            let (digest, size) = blob(file)?;
            let compression = sniff(store, &digest)?;
            let media_type = match compression {
                oci::LayerCompression::None => oci::OCI_LAYER,
                oci::LayerCompression::Gzip => oci::OCI_LAYER_GZIP,
                oci::LayerCompression::Zstd => oci::OCI_LAYER_ZSTD,
            };
            // An uncompressed layer's digest is its diff_id: a corrupt layer shows here.
            let expected = config.rootfs.diff_ids.get(i);
            if compression == oci::LayerCompression::None && expected != Some(&digest) {
                return Err(invalid(
                    path,
                    format!(
                        "layer `{file}` hashes to {digest}, but the image config expects {}",
                        expected.map_or("no layer".to_string(), ToString::to_string)
                    ),
                ));
            }
            layers.push(Descriptor::new(media_type, digest, size));
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(oci::OCI_MANIFEST.into()),
            config: Descriptor::new(oci::OCI_CONFIG, config_digest, config_size),
            layers,
            extra: BTreeMap::new(),
        };
        let descriptor = store.put_json(oci::OCI_MANIFEST, &manifest)?;
        let tags = match (name, entry.repo_tags) {
            (Some(name), _) => vec![name.to_string()],
            (None, Some(tags)) if !tags.is_empty() => tags,
            (None, _) => {
                return Err(invalid(
                    path,
                    "the image has no RepoTags; give it a name with --name",
                ))
            }
        };
        for tag in tags {
            store.tag(&tag, &descriptor)?;
            references.push(
                Reference::parse(&tag)
                    .map_err(StoreError::from)?
                    .to_string(),
            );
        }
    }
    Ok(Imported { references })
}

/// A layer's compression, from its first bytes.
pub fn sniff(store: &Store, digest: &Digest) -> Result<oci::LayerCompression, ArchiveError> {
    let mut magic = [0u8; 4];
    let mut file = store.open_blob(digest)?;
    let n = file.read(&mut magic).map_err(|source| ArchiveError::Io {
        path: store.blob_path(digest),
        source,
    })?;
    Ok(compression_of(&magic[..n]))
}

/// A layer's compression, told by its first bytes (four are enough).
pub fn compression_of(magic: &[u8]) -> oci::LayerCompression {
    match magic {
        [0x1f, 0x8b, ..] => oci::LayerCompression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => oci::LayerCompression::Zstd,
        _ => oci::LayerCompression::None,
    }
}

/// Writes the image `reference` as an `oci-archive` tar at `path` (atomically).
pub fn export(store: &Store, reference: &str, path: &Path) -> Result<(), ArchiveError> {
    let image = store.resolve(reference)?;
    let mut blobs: Vec<Descriptor> = vec![image.descriptor.clone()];
    if oci::is_index(&image.descriptor.media_type) {
        let manifest_descriptor = store.platform_manifest(&image.reference, &image.descriptor)?;
        // Export just this platform: name the manifest itself, so the archive is complete.
        blobs = vec![manifest_descriptor];
    }
    let mut top = blobs[0].clone();
    top.annotations.clear();
    top.annotations
        .insert(oci::REF_NAME.into(), image.reference.clone());
    blobs.push(image.manifest.config.clone());
    blobs.extend(image.manifest.layers.iter().cloned());
    let index = Index {
        manifests: vec![top],
        ..Index::default()
    };

    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let io_err = |source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = tempfile::Builder::new()
        .prefix(".export-")
        .tempfile_in(dir)
        .map_err(io_err)?;
    let mut builder = tar::Builder::new(io::BufWriter::new(tmp));
    let mut append = |name: &str, size: u64, data: &mut dyn Read| -> io::Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, name, data)
    };
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    append("oci-layout", layout.len() as u64, &mut &layout[..]).map_err(io_err)?;
    let index_bytes = serde_json::to_vec(&index).map_err(|e| io_err(io::Error::other(e)))?;
    append(
        "index.json",
        index_bytes.len() as u64,
        &mut &index_bytes[..],
    )
    .map_err(io_err)?;
    let mut seen = std::collections::BTreeSet::new();
    for d in &blobs {
        if !seen.insert(d.digest.clone()) {
            continue;
        }
        let mut file = store.open_blob(&d.digest)?;
        let size = file.metadata().map_err(io_err)?.len();
        append(&format!("blobs/sha256/{}", d.digest.hex()), size, &mut file).map_err(io_err)?;
    }
    let writer = builder.into_inner().map_err(io_err)?;
    let tmp = writer.into_inner().map_err(|e| io_err(e.into_error()))?;
    tmp.as_file().sync_all().map_err(io_err)?;
    tmp.persist(path).map_err(|e| io_err(e.error))?;
    Ok(())
}

/// The image config for a new single-layer image (the recipe and OS image builders, tests).
pub fn single_layer_config(diff_id: Digest) -> ImageConfig {
    ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![diff_id],
        },
        ..ImageConfig::default()
    }
}
