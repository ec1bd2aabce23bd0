//! System image recipes: declarative YAML (`images/recipes/*.yml`) built from
//! Debian packages with `mmdebstrap`, then written by our own code as a single
//! zstd layer into the store.
//!
//! Builds are reproducible (pinned suite, `SOURCE_DATE_EPOCH`, mtimes clamped,
//! device nodes dropped) and cached by a hash of the recipe and the files it
//! copies in, so an unchanged recipe is not rebuilt.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::archive::single_layer_config;
use crate::digest::{Digest, HashingWriter};
use crate::oci::{self, Descriptor, ImageConfig, RunConfig};
use crate::store::{Store, StoreError};

/// Bump when the builder's output changes, so cached images are rebuilt.
const BUILDER_VERSION: &str = "3";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "default_suite")]
    pub suite: String,
    /// mmdebstrap variant: `extract` (unpack only) or `essential`/`apt` (configured).
    #[serde(default = "default_variant")]
    pub variant: String,
    #[serde(default)]
    pub packages: Vec<String>,
    /// Packages installed from `<suite>-backports` instead (apt's
    /// `package/release`), with whatever of their dependencies only that
    /// suite has in the version they ask for; everything else still comes
    /// from `suite`. Backports is added to the image's sources only when
    /// this is not empty.
    #[serde(default)]
    pub backports: Vec<String>,
    /// Paths dropped from the image (docs, caches), with everything below them;
    /// a trailing `*` drops every path starting with what precedes it, and a
    /// `*` inside the last name any run of characters in that name
    /// (`/etc/ssl/certs/*.pem`).
    #[serde(default)]
    pub remove: Vec<String>,
    /// When not empty, the only paths the image keeps from the packages (with
    /// the directories leading to them; a trailing `*` keeps every path
    /// starting with what precedes it): apt unpacks a package's whole
    /// dependency closure, most of it for maintainer scripts an extracted
    /// image never runs. `files` and `symlinks` are added after.
    #[serde(default)]
    pub keep: Vec<String>,
    /// Make a symlink for every busybox applet (busybox images).
    #[serde(default)]
    pub busybox_applets: bool,
    /// Files from the repository: image path → repository path (relative to the recipe).
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// Symlinks: image path → target.
    #[serde(default)]
    pub symlinks: BTreeMap<String, String>,
    #[serde(default)]
    pub config: RecipeConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeConfig {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn default_suite() -> String {
    "bookworm".into()
}

fn default_variant() -> String {
    "extract".into()
}

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// Each finding names the file, line and column.
    #[error("{}", findings.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Parse {
        path: PathBuf,
        findings: Vec<berth_configs::Diagnostic>,
    },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("mmdebstrap failed for `{name}` ({status}); its output is above")]
    Mmdebstrap {
        name: String,
        status: std::process::ExitStatus,
    },
    #[error(
        "image `{name}` would carry files of the machine that built it: {}; an image \
         gets the host's resolver and names at run time (a symlink into the host's /etc)",
        paths.join(", ")
    )]
    BuildMachineFiles { name: String, paths: Vec<String> },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RecipeError + '_ {
    move |source| RecipeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A recipe read from disk, with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedRecipe {
    pub recipe: Recipe,
    pub path: PathBuf,
    /// What the cache is keyed by.
    pub hash: Digest,
}

impl LoadedRecipe {
    pub fn load(path: &Path) -> Result<Self, RecipeError> {
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        let recipe: Recipe = berth_configs::parse_typed(&path.display().to_string(), &text)
            .map_err(|findings| RecipeError::Parse {
                path: path.to_path_buf(),
                findings,
            })?;
        let invalid = |reason: String| RecipeError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        if !["extract", "essential", "apt", "minbase", "required"]
            .contains(&recipe.variant.as_str())
        {
            return Err(invalid(format!(
                "unknown mmdebstrap variant `{}`",
                recipe.variant
            )));
        }
        let name_ok = !recipe.name.is_empty()
            && recipe
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(invalid(format!(
                "`{}` is not a valid image name",
                recipe.name
            )));
        }
        if let Some(both) = recipe
            .backports
            .iter()
            .find(|p| recipe.packages.contains(p))
        {
            return Err(invalid(format!(
                "`{both}` is in both `packages` and `backports`: name it in one \
                 (`backports` for the version of {}-backports)",
                recipe.suite
            )));
        }
        // Caught before mmdebstrap runs; the finished layer is checked again.
        if let Some(path) = recipe
            .files
            .keys()
            .find(|p| build_machine_file(p, tar::EntryType::Regular))
        {
            return Err(invalid(format!(
                "`files` puts {path} in the image: a machine's file, which the \
                 image must take from the host at run time (a symlink into /host/etc)"
            )));
        }
        let mut hashed = format!("{BUILDER_VERSION}\n{text}").into_bytes();
        let base = path.parent().unwrap_or(Path::new("."));
        for source in recipe.files.values() {
            let file = base.join(source);
            hashed.extend(std::fs::read(&file).map_err(io_err(&file))?);
        }
        Ok(LoadedRecipe {
            hash: Digest::of(&hashed),
            recipe,
            path: path.to_path_buf(),
        })
    }

    /// The name the built image gets in the store.
    pub fn reference(&self) -> String {
        format!("berth/{}:latest", self.recipe.name)
    }
}

/// Every recipe in `dir`, sorted by name.
pub fn load_all(dir: &Path) -> Result<Vec<LoadedRecipe>, RecipeError> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    paths.sort();
    paths.iter().map(|p| LoadedRecipe::load(p)).collect()
}

/// What a build did.
#[derive(Debug, Clone)]
pub struct Built {
    pub reference: String,
    pub cached: bool,
    pub compressed: u64,
    pub unpacked: u64,
}

/// Builds `recipe` into `store` unless the store already has this exact build.
/// `epoch` is SOURCE_DATE_EPOCH: every timestamp in the image.
pub fn build(store: &Store, loaded: &LoadedRecipe, epoch: u64) -> Result<Built, RecipeError> {
    // Until the image is named, its blobs are unreferenced: no prune meanwhile.
    let _adding = store.adding()?;
    let reference = loaded.reference();
    let label = "io.berth.recipe.hash";
    if let Ok(image) = store.resolve(&reference) {
        let labels = image.config.config.labels.clone().unwrap_or_default();
        if labels.get(label) == Some(&loaded.hash.to_string()) {
            return Ok(Built {
                reference,
                cached: true,
                compressed: image.size(),
                unpacked: 0,
            });
        }
    }
    let recipe = &loaded.recipe;
    let work = tempfile::Builder::new()
        .prefix("recipe-")
        .tempdir_in(store.root())
        .map_err(io_err(store.root()))?;
    let rootfs_tar = work.path().join("rootfs.tar");
    eprintln!(
        "==> image {}: mmdebstrap {} ({} packages, variant {})",
        recipe.name,
        recipe.suite,
        recipe.packages.len(),
        recipe.variant
    );
    let mut cmd = Command::new("mmdebstrap");
    cmd.env("SOURCE_DATE_EPOCH", epoch.to_string())
        .arg("--quiet")
        .arg(format!("--variant={}", recipe.variant))
        .arg("--format=tar")
        .arg("--dpkgopt=path-exclude=/usr/share/doc/*")
        .arg("--dpkgopt=path-exclude=/usr/share/man/*")
        .arg("--dpkgopt=path-exclude=/usr/share/info/*")
        .arg("--dpkgopt=path-exclude=/usr/share/locale/*")
        .arg("--dpkgopt=path-include=/usr/share/locale/locale.alias")
        .arg("--aptopt=APT::Install-Recommends \"false\"");
    cmd.args(include_and_sources(recipe, &rootfs_tar));
    let status = cmd.status().map_err(io_err(Path::new("mmdebstrap")))?;
    if !status.success() {
        return Err(RecipeError::Mmdebstrap {
            name: recipe.name.clone(),
            status,
        });
    }
    eprintln!("==> image {}: writing the layer", recipe.name);
    let applets = if recipe.busybox_applets {
        busybox_applets(&rootfs_tar, work.path())?
    } else {
        Vec::new()
    };
    let base = loaded.path.parent().unwrap_or(Path::new("."));
    let (layer, diff_id, compressed, unpacked) =
        write_layer(store, recipe, base, &rootfs_tar, &applets, epoch)?;
    // Whatever wrote it (mmdebstrap, the recipe's files), the layer must
    // carry nothing of this machine.
    check_layer(store, &recipe.name, &layer)?;
    let mut labels = recipe.config.labels.clone();
    labels.insert(label.into(), loaded.hash.to_string());
    labels.insert("org.opencontainers.image.title".into(), recipe.name.clone());
    if !recipe.description.is_empty() {
        labels.insert(
            "org.opencontainers.image.description".into(),
            recipe.description.clone(),
        );
    }
    let config = ImageConfig {
        created: Some(rfc3339(epoch)),
        config: RunConfig {
            entrypoint: recipe.config.entrypoint.clone(),
            cmd: recipe.config.cmd.clone(),
            env: Some(if recipe.config.env.is_empty() {
                vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()]
            } else {
                recipe.config.env.clone()
            }),
            working_dir: recipe.config.working_dir.clone(),
            user: recipe.config.user.clone(),
            labels: Some(labels),
            extra: BTreeMap::new(),
        },
        ..single_layer_config(diff_id)
    };
    store.put_image(&reference, &config, vec![layer])?;
    Ok(Built {
        reference,
        cached: false,
        compressed,
        unpacked,
    })
}

/// mmdebstrap's `--include`, suite, target and mirrors. Without backports
/// the mirrors are mmdebstrap's defaults for the suite; with them, all of
/// [`debian_sources`], since naming any mirror replaces the defaults.
fn include_and_sources(recipe: &Recipe, target: &Path) -> Vec<std::ffi::OsString> {
    let backports = format!("{}-backports", recipe.suite);
    let include: Vec<String> = recipe
        .packages
        .iter()
        .cloned()
        .chain(recipe.backports.iter().map(|p| format!("{p}/{backports}")))
        .collect();
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    if !include.is_empty() {
        args.push(format!("--include={}", include.join(",")).into());
    }
    args.push(recipe.suite.clone().into());
    args.push(target.as_os_str().to_owned());
    if !recipe.backports.is_empty() {
        args.extend(debian_sources(&recipe.suite).map(Into::into));
    }
    args
}

/// The sources.list lines of a Debian release with its updates, security
/// and backports suites: what mmdebstrap uses by default for a stable
/// release, plus backports, from which apt takes only what it is asked for.
pub fn debian_sources(suite: &str) -> [String; 4] {
    [
        format!("deb http://deb.debian.org/debian {suite} main"),
        format!("deb http://deb.debian.org/debian {suite}-updates main"),
        format!("deb http://deb.debian.org/debian-security {suite}-security main"),
        format!("deb http://deb.debian.org/debian {suite}-backports main"),
    ]
}

/// The applet paths busybox provides, asked of the binary itself.
fn busybox_applets(rootfs_tar: &Path, work: &Path) -> Result<Vec<String>, RecipeError> {
    let file = std::fs::File::open(rootfs_tar).map_err(io_err(rootfs_tar))?;
    let mut archive = tar::Archive::new(file);
    let binary = work.join("busybox");
    for entry in archive.entries().map_err(io_err(rootfs_tar))? {
        let mut entry = entry.map_err(io_err(rootfs_tar))?;
        let path = entry
            .path()
            .map_err(io_err(rootfs_tar))?
            .to_string_lossy()
            .into_owned();
        if matches!(
            path.trim_start_matches('.'),
            "/bin/busybox" | "/usr/bin/busybox"
        ) && entry.header().entry_type().is_file()
        {
            let mut out = std::fs::File::create(&binary).map_err(io_err(&binary))?;
            io::copy(&mut entry, &mut out).map_err(io_err(&binary))?;
            break;
        }
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755))
        .map_err(io_err(&binary))?;
    let out = Command::new(&binary)
        .arg("--list-full")
        .output()
        .map_err(io_err(&binary))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| format!("/{}", l.trim()))
        .filter(|l| l.len() > 1 && l != "/bin/busybox" && l != "/usr/bin/busybox")
        .collect())
}

/// Files that describe the machine an image was built on, never the one it
/// runs on: mmdebstrap copies the build host's resolv.conf and hostname into
/// the tree (for the package scripts), packages' scripts write hosts, a
/// machine id and SSH host keys, and apt leaves its caches. The builder drops
/// them; [`build_machine_file`] is the check on the finished layer.
const BUILD_MACHINE_FILES: &[&str] = &[
    "/etc/resolv.conf",
    "/etc/hostname",
    "/etc/hosts",
    "/etc/mailname",
    "/etc/machine-id",
    "/var/lib/dbus/machine-id",
];

/// Directories whose files come from the build machine (keys, caches); the
/// directories themselves stay.
const BUILD_MACHINE_PREFIXES: &[&str] = &[
    "/etc/ssh/ssh_host_",
    "/var/cache/apt/",
    "/var/lib/apt/lists/",
    "/var/cache/debconf/",
];

/// Whether an entry of a layer is a build machine's file: a regular file (or
/// hard link) at one of [`BUILD_MACHINE_FILES`] or below one of
/// [`BUILD_MACHINE_PREFIXES`]. Symlinks are not: `/etc/resolv.conf` ->
/// `/host/etc/resolv.conf` is how an image takes the host's at run time.
pub fn build_machine_file(path: &str, kind: tar::EntryType) -> bool {
    if !(kind.is_file() || kind.is_hard_link()) {
        return false;
    }
    let absolute = format!("/{}", path.trim_start_matches("./").trim_start_matches('/'));
    BUILD_MACHINE_FILES.contains(&absolute.as_str())
        || BUILD_MACHINE_PREFIXES
            .iter()
            .any(|p| absolute.starts_with(p) && absolute.len() > p.len())
}

/// The build machine's files in a layer (an uncompressed tar stream).
pub fn build_machine_files(layer: impl io::Read) -> io::Result<Vec<String>> {
    let mut found = Vec::new();
    let mut archive = tar::Archive::new(layer);
    for entry in archive.entries()? {
        let entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        if build_machine_file(&path, entry.header().entry_type()) {
            found.push(format!(
                "/{}",
                path.trim_start_matches("./").trim_start_matches('/')
            ));
        }
    }
    Ok(found)
}

/// Reads a finished layer back from the store and fails when it holds any
/// of the build machine's files.
fn check_layer(store: &Store, name: &str, layer: &Descriptor) -> Result<(), RecipeError> {
    let path = store.blob_path(&layer.digest);
    let file = store.open_blob(&layer.digest)?;
    let decoder = zstd::Decoder::new(file).map_err(io_err(&path))?;
    let paths = build_machine_files(decoder).map_err(io_err(&path))?;
    if paths.is_empty() {
        Ok(())
    } else {
        Err(RecipeError::BuildMachineFiles {
            name: name.to_string(),
            paths,
        })
    }
}

/// Whether a recipe's `keep` list keeps `path` (absolute, no trailing `/`;
/// the root is ""): an empty list keeps everything, and a kept path keeps the
/// directories leading to it.
fn kept(keep: &[String], path: &str) -> bool {
    keep.is_empty()
        || keep.iter().any(|k| {
            let leads_to = k.starts_with(&format!("{path}/"));
            match k.strip_suffix('*') {
                Some(prefix) => leads_to || path.starts_with(prefix),
                None => leads_to || path == k || path.starts_with(&format!("{k}/")),
            }
        })
}

/// Whether the `remove` entry `pattern` drops `path` (see [`Recipe::remove`]).
fn removes(pattern: &str, path: &str) -> bool {
    match pattern.split_once('*') {
        // `dir/prefix*`: every path starting with prefix.
        Some((prefix, "")) => path.starts_with(prefix),
        // `dir/pre*post`: the names in dir made of pre, anything, then post,
        // and what is below them.
        Some((prefix, suffix)) => path.strip_prefix(prefix).is_some_and(|rest| {
            let name_rest = rest.split_once('/').map_or(rest, |(name, _)| name);
            name_rest.ends_with(suffix)
        }),
        None => path == pattern || path.starts_with(&format!("{}/", pattern.trim_end_matches('/'))),
    }
}

/// Copies mmdebstrap's tar into a reproducible, zstd-compressed layer in the store.
fn write_layer(
    store: &Store,
    recipe: &Recipe,
    base: &Path,
    rootfs_tar: &Path,
    applets: &[String],
    epoch: u64,
) -> Result<(Descriptor, Digest, u64, u64), RecipeError> {
    let tmp = store.temp_file()?;
    let tmp_path = tmp.path().to_path_buf();
    let compressed = HashingWriter::new(io::BufWriter::new(tmp));
    let encoder = zstd::Encoder::new(compressed, 12).map_err(io_err(&tmp_path))?;
    let mut builder = tar::Builder::new(HashingWriter::new(encoder));
    builder.mode(tar::HeaderMode::Complete);
    let removed = |path: &str| recipe.remove.iter().any(|r| removes(r, path));
    let mut seen = std::collections::BTreeSet::new();
    let file = std::fs::File::open(rootfs_tar).map_err(io_err(rootfs_tar))?;
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries().map_err(io_err(rootfs_tar))? {
        let mut entry = entry.map_err(io_err(rootfs_tar))?;
        let mut header = entry.header().clone();
        let kind = header.entry_type();
        // Device nodes come from the container runtime, never from an image.
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            continue;
        }
        let path = entry
            .path()
            .map_err(io_err(rootfs_tar))?
            .to_string_lossy()
            .into_owned();
        let absolute = format!("/{}", path.trim_start_matches("./").trim_start_matches('/'));
        let trimmed = absolute.trim_end_matches('/');
        if removed(trimmed) || !kept(&recipe.keep, trimmed) || build_machine_file(&absolute, kind) {
            continue;
        }
        seen.insert(absolute.trim_end_matches('/').to_string());
        if header.mtime().unwrap_or(0) > epoch {
            header.set_mtime(epoch);
        }
        if kind.is_hard_link() || kind.is_symlink() {
            let link = entry
                .link_name()
                .map_err(io_err(rootfs_tar))?
                .map(|l| l.into_owned());
            let link = link.unwrap_or_default();
            builder
                .append_link(&mut header, &path, &link)
                .map_err(io_err(&tmp_path))?;
        } else {
            builder
                .append_data(&mut header, &path, &mut entry)
                .map_err(io_err(&tmp_path))?;
        }
    }
    let symlink = |builder: &mut tar::Builder<_>, path: &str, target: &str| -> io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_mtime(epoch);
        header.set_size(0);
        builder.append_link(&mut header, path.trim_start_matches('/'), target)
    };
    for applet in applets {
        if !seen.contains(applet) {
            symlink(&mut builder, applet, "/bin/busybox").map_err(io_err(&tmp_path))?;
        }
    }
    for (path, target) in &recipe.symlinks {
        symlink(&mut builder, path, target).map_err(io_err(&tmp_path))?;
    }
    for (path, source) in &recipe.files {
        let source = base.join(source);
        let data = std::fs::read(&source).map_err(io_err(&source))?;
        let executable = std::fs::metadata(&source)
            .map_err(io_err(&source))?
            .permissions()
            .mode()
            & 0o111
            != 0;
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        // A script committed executable stays executable in the image.
        header.set_mode(if executable { 0o755 } else { 0o644 });
        header.set_mtime(epoch);
        header.set_size(data.len() as u64);
        builder
            .append_data(&mut header, path.trim_start_matches('/'), &data[..])
            .map_err(io_err(&tmp_path))?;
    }
    let uncompressed = builder.into_inner().map_err(io_err(&tmp_path))?;
    let (encoder, diff_id, unpacked) = uncompressed.finish();
    let compressed = encoder.finish().map_err(io_err(&tmp_path))?;
    let (buffered, digest, size) = compressed.finish();
    let file = buffered
        .into_inner()
        .map_err(|e| io_err(&tmp_path)(e.into_error()))?;
    store.commit_blob(file, digest.clone(), size, None, None)?;
    Ok((
        Descriptor::new(oci::OCI_LAYER_ZSTD, digest, size),
        diff_id,
        size,
        unpacked,
    ))
}

/// Seconds since the epoch as an RFC 3339 UTC timestamp (the project's one
/// calendar, [`berth_sys::time`]).
pub fn rfc3339(epoch: u64) -> String {
    berth_sys::time::Timestamp(
        i64::try_from(epoch)
            .unwrap_or(i64::MAX / 1000)
            .saturating_mul(1000),
    )
    .format_seconds()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check on a finished layer: regular files of the build machine are
    /// found wherever they come from; symlinks into the host's /etc and the
    /// (empty) cache directories are not.
    #[test]
    fn finds_the_build_machines_files_in_a_layer() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut add = |path: &str, kind: tar::EntryType, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(0o644);
            h.set_size(if kind.is_file() { data.len() as u64 } else { 0 });
            if kind.is_symlink() {
                builder
                    .append_link(&mut h, path, std::str::from_utf8(data).unwrap_or(""))
                    .expect("link");
            } else {
                builder.append_data(&mut h, path, data).expect("append");
            }
        };
        add(
            "./etc/resolv.conf",
            tar::EntryType::Regular,
            b"nameserver 10.255.255.53\n",
        );
        add("etc/hostname", tar::EntryType::Regular, b"vm\n");
        add("etc/hosts", tar::EntryType::Symlink, b"/host/etc/hosts");
        add("etc/ssh/", tar::EntryType::Directory, b"");
        add(
            "etc/ssh/ssh_host_ed25519_key",
            tar::EntryType::Regular,
            b"key",
        );
        add("etc/ssh/sshd_config", tar::EntryType::Regular, b"Port 22\n");
        add("var/lib/apt/lists/", tar::EntryType::Directory, b"");
        add(
            "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease",
            tar::EntryType::Regular,
            b"x",
        );
        add("var/cache/apt/pkgcache.bin", tar::EntryType::Regular, b"x");
        add("etc/machine-id", tar::EntryType::Regular, b"0123\n");
        add("usr/bin/true", tar::EntryType::Regular, b"x");
        let tar = builder.into_inner().expect("tar");
        assert_eq!(
            build_machine_files(&tar[..]).expect("read"),
            vec![
                "/etc/resolv.conf",
                "/etc/hostname",
                "/etc/ssh/ssh_host_ed25519_key",
                "/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease",
                "/var/cache/apt/pkgcache.bin",
                "/etc/machine-id",
            ]
        );
        let clean = tar::Builder::new(Vec::new()).into_inner().expect("tar");
        assert!(build_machine_files(&clean[..]).expect("read").is_empty());
    }

    #[test]
    fn remove_entries_match_paths_names_and_globs() {
        let dropped = |pattern: &str, path: &str| removes(pattern, path);
        assert!(dropped("/usr/share/man", "/usr/share/man"));
        assert!(dropped("/usr/share/man", "/usr/share/man/man1/ls.1.gz"));
        assert!(!dropped("/usr/share/man", "/usr/share/manual"));
        assert!(dropped("/usr/lib/libperl.so*", "/usr/lib/libperl.so.5.36"));
        assert!(dropped(
            "/etc/ssl/certs/*.pem",
            "/etc/ssl/certs/ACCVRAIZ1.pem"
        ));
        assert!(dropped("/etc/ssl/certs/*.0", "/etc/ssl/certs/002c0b4f.0"));
        assert!(dropped("/etc/ssl/certs/*.d", "/etc/ssl/certs/x.d/inside"));
        assert!(!dropped(
            "/etc/ssl/certs/*.pem",
            "/etc/ssl/certs/ca-certificates.crt"
        ));
        assert!(!dropped("/etc/ssl/certs/*.0", "/etc/ssl/certs"));
        assert!(!dropped("/etc/ssl/certs/*.pem", "/etc/ssl/certs/sub/x.pem"));
        assert!(!dropped("/etc/ssl/certs/*.pem", "/etc/ssl/private/x.pem"));
    }

    #[test]
    fn a_recipe_that_ships_a_machines_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("resolv.conf"), "nameserver 192.0.2.1\n").expect("write");
        let path = dir.path().join("bad.yml");
        std::fs::write(
            &path,
            "name: bad\nfiles:\n  /etc/resolv.conf: resolv.conf\n",
        )
        .expect("write");
        match LoadedRecipe::load(&path) {
            Err(RecipeError::Invalid { reason, .. }) => {
                assert!(reason.contains("/etc/resolv.conf"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // A symlink into the host's /etc is how an image gets it.
        std::fs::write(
            &path,
            "name: good\nsymlinks:\n  /etc/resolv.conf: /host/etc/resolv.conf\n",
        )
        .expect("write");
        LoadedRecipe::load(&path).expect("a symlink is fine");
    }

    #[test]
    fn backports_are_asked_by_release_and_only_then_added_to_the_sources() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.yml");
        let load = |text: &str| {
            std::fs::write(&path, text).expect("write");
            LoadedRecipe::load(&path)
        };
        let target = Path::new("/t/rootfs.tar");
        let plain = load("name: r\npackages: [curl]\n").expect("load");
        let args = include_and_sources(&plain.recipe, target);
        assert_eq!(args, ["--include=curl", "bookworm", "/t/rootfs.tar"]);

        let mixed = load("name: r\npackages: [curl]\nbackports: [openssh-server]\n").expect("load");
        let args = include_and_sources(&mixed.recipe, target);
        assert_eq!(
            args,
            [
                "--include=curl,openssh-server/bookworm-backports",
                "bookworm",
                "/t/rootfs.tar",
                "deb http://deb.debian.org/debian bookworm main",
                "deb http://deb.debian.org/debian bookworm-updates main",
                "deb http://deb.debian.org/debian-security bookworm-security main",
                "deb http://deb.debian.org/debian bookworm-backports main",
            ]
        );

        match load("name: r\npackages: [openssh-server]\nbackports: [openssh-server]\n") {
            Err(RecipeError::Invalid { reason, .. }) => {
                assert!(reason.contains("`openssh-server` is in both"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn keep_keeps_the_listed_paths_and_the_directories_leading_to_them() {
        let keep = vec![
            "/usr/sbin/chronyd".to_string(),
            "/lib/x86_64-linux-gnu/libc.so*".into(),
        ];
        for path in [
            "",
            "/usr",
            "/usr/sbin",
            "/usr/sbin/chronyd",
            "/lib/x86_64-linux-gnu/libc.so.6",
        ] {
            assert!(kept(&keep, path), "{path} is kept");
        }
        for path in [
            "/usr/bin",
            "/usr/sbin/chronydx",
            "/usr/sbin/ip",
            "/lib/x86_64-linux-gnu/libm.so.6",
            "/etc",
        ] {
            assert!(!kept(&keep, path), "{path} is dropped");
        }
        assert!(kept(&[], "/anything"), "no keep list keeps everything");
    }
}
