//! `write_files`, with cloud-init's semantics: `content` decoded by `encoding`
//! (text, b64/base64, gzip, gz+b64), `permissions` (octal, default 0644),
//! `owner` (`user[:group]`, names looked up in the root's `/etc/passwd` and
//! `/etc/group`, numbers allowed, default `root:root`), `append`. `defer` is
//! accepted and ignored: every file is written before services start.
//!
//! Where a file lands follows RancherOS ([`route`]): an entry without
//! `container:` is written on the host (below `/etc`, `/var`, `/home`, `/opt`,
//! `/srv`, `/mnt`, `/media`, `/tmp` — the rest of the host is a read-only image) *and*
//! into the console's own filesystem, where users look; `container: NAME`
//! writes into that system service's filesystem only. A path that a service
//! binds from the host (the console's `/home`, the engine's `/etc/docker`) is
//! written once, on the host, where the service sees it through the volume.
//!
//! The check is made on the path with `..` resolved and again after
//! following, inside the root, every symlink in its parent directories; the
//! write itself then opens those directories without following symlinks
//! ([`super::Linux`]), so a link swapped in meanwhile makes it fail instead of
//! escaping.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use berth_configs::model::{Service, WriteFile};

use super::{fingerprint, Applied, FileWrite, HostOps, HostPaths, Problem, Report};
use crate::runtime::spec::VolumeSource;

/// Top-level directories `write_files` may write below on the host.
pub const ALLOWED: &[&str] = &["etc", "var", "home", "opt", "srv", "mnt", "media", "tmp"];

/// Top-level directories never written in a container's filesystem: the
/// kernel's and the runtime's, mounted over whatever is there.
const NOT_IN_CONTAINERS: &[&str] = &["proc", "sys", "dev"];

/// The service that gets the entries that name no container.
pub const CONSOLE: &str = "console";

const MAX_SYMLINKS: usize = 40;

/// An entry with the config field it comes from (`write_files[3]`), as routed.
pub type Entry = (String, WriteFile);

/// Where each service's bundle of trusted CAs is (Debian's, OpenSSL's and Go's
/// first choice): `ca_certs.trusted` is appended to it in every container.
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Where each `write_files` entry goes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Routed {
    /// Written on the host; a path may be the host side of a service's volume.
    pub host: Vec<Entry>,
    /// Written into each service's own filesystem when its container is made.
    pub services: BTreeMap<String, Vec<Entry>>,
    /// Entries that cannot go anywhere (an unknown `container:`).
    pub problems: Vec<Problem>,
}

/// Routes `files` between the host and the services (see the module docs).
pub fn route(files: &[WriteFile], services: &BTreeMap<String, Service>) -> Routed {
    let mut routed = Routed::default();
    for (i, file) in files.iter().enumerate() {
        let field = format!("write_files[{i}]");
        let service = file.container.as_deref().unwrap_or(CONSOLE);
        let Some(def) = services.get(service) else {
            if let Some(named) = &file.container {
                routed.problems.push(Problem::new(
                    format!("write_files[{i}].container"),
                    format!(
                        "there is no system service `{named}`; {} not written",
                        file.path
                    ),
                ));
            } else {
                routed.host.push((field, file.clone()));
            }
            continue;
        };
        if let Some(host_path) = through_volume(def, &file.path) {
            let mut on_host = file.clone();
            on_host.path = host_path;
            routed.host.push((field, on_host));
            continue;
        }
        routed
            .services
            .entry(service.to_string())
            .or_default()
            .push((field.clone(), file.clone()));
        if file.container.is_none() && host_allowed(&file.path) {
            routed.host.push((field, file.clone()));
        }
    }
    routed
}

/// Adds `trusted` (PEM certificates) to the CA bundle of every service.
pub fn trust(routed: &mut Routed, trusted: &[String], services: &BTreeMap<String, Service>) {
    if trusted.is_empty() {
        return;
    }
    let mut content = String::new();
    for pem in trusted {
        content.push_str(pem.trim());
        content.push('\n');
    }
    let file = WriteFile {
        path: CA_BUNDLE.into(),
        content,
        append: true,
        ..WriteFile::default()
    };
    for service in services.keys() {
        routed
            .services
            .entry(service.clone())
            .or_default()
            .push(("ca_certs.trusted".into(), file.clone()));
    }
}

/// The host path behind `path` when the service binds a host directory over it.
fn through_volume(def: &Service, path: &str) -> Option<String> {
    let wanted = normalize(Path::new(path));
    def.volumes
        .iter()
        .filter_map(|v| {
            let Some(VolumeSource::Path(source)) = &v.source else {
                return None;
            };
            let target = normalize(Path::new(&v.target));
            let rest = wanted.strip_prefix(target.as_slice())?;
            (!rest.is_empty() && !v.read_only).then(|| {
                let mut host = source.clone();
                host.extend(rest.iter());
                (target.len(), host.to_string_lossy().into_owned())
            })
        })
        // The deepest volume wins, as the mounts stack.
        .max_by_key(|(depth, _)| *depth)
        .map(|(_, host)| host)
}

fn host_allowed(path: &str) -> bool {
    check_allowed(&normalize(Path::new(path)), Allowed::Host).is_ok()
}

/// Which paths a root takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// The host: below [`ALLOWED`].
    Host,
    /// A container's filesystem: anything but [`NOT_IN_CONTAINERS`].
    Container,
}

pub(crate) fn apply(
    ops: &dyn HostOps,
    paths: &HostPaths,
    files: &[Entry],
    before: &Applied,
    applied: &mut Applied,
    report: &mut Report,
) {
    let mut now = Vec::new();
    for (field, file) in files {
        let print = fingerprint(file);
        if before.write_files.contains(&print) {
            now.push(print);
            continue;
        }
        match write(ops, &paths.root, Allowed::Host, field, file, report) {
            Ok(()) => now.push(print),
            Err(problem) => report.problems.push(problem),
        }
    }
    applied.write_files = now;
}

/// Writes `files` into a container's filesystem at `root` (its mounted
/// rootfs); owners are looked up in that filesystem's `/etc/passwd`.
pub fn write_into(ops: &dyn HostOps, root: &Path, files: &[Entry]) -> Report {
    let mut report = Report::default();
    for (field, file) in files {
        if let Err(problem) = write(ops, root, Allowed::Container, field, file, &mut report) {
            report.problems.push(problem);
        }
    }
    report
}

/// Writes one entry; a wrong owner is reported and the file written as root's.
fn write(
    ops: &dyn HostOps,
    root: &Path,
    allowed: Allowed,
    entry: &str,
    file: &WriteFile,
    report: &mut Report,
) -> Result<(), Problem> {
    let field = |f: &str| format!("{entry}.{f}");
    let rel = resolve_in(root, &file.path, allowed)
        .map_err(|e| Problem::new(field("path"), e.to_string()))?;
    let data = berth_configs::validate::decode(file.encoding, &file.content)
        .map_err(|e| Problem::new(field("content"), e.to_string()))?;
    let (uid, gid) = match file.owner.as_deref() {
        None => (0, 0),
        Some(owner) => owner_ids(root, owner).unwrap_or_else(|e| {
            report.problems.push(Problem::new(
                field("owner"),
                format!("{e}; {} written as root:root", file.path),
            ));
            (0, 0)
        }),
    };
    let mode = file.permissions.map_or(0o644, |m| m.0);
    let request = FileWrite {
        data,
        mode,
        uid,
        gid,
        append: file.append,
    };
    ops.write_file(root, &rel, &request).map_err(|e| {
        let why = match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => format!(
                "{e}: a directory on the way is a symlink or not a directory (written only through real directories)"
            ),
            Some(libc::EROFS) => format!("{e}: the filesystem is read-only"),
            _ => e.to_string(),
        };
        Problem::new(field("path"), format!("{}: {why}", file.path))
    })?;
    let verb = if file.append { "appended to" } else { "wrote" };
    let defer = if file.defer {
        " (defer ignored: written before services start)"
    } else {
        ""
    };
    report.done(format!(
        "{entry}: {verb} {} ({} bytes, mode {mode:04o}, owner {uid}:{gid}){defer}",
        file.path,
        request.data.len()
    ));
    Ok(())
}

/// Why a `write_files` path cannot be written; the text is the entry's problem.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("`{0}` is not an absolute path")]
    NotAbsolute(String),
    #[error("`{path}`{why}")]
    Refused { path: String, why: Refused },
    #[error("`{path}` leads through a symlink to /{}{why}", resolved.display())]
    RefusedThroughSymlink {
        path: String,
        resolved: PathBuf,
        why: Refused,
    },
    #[error("empty path")]
    Empty,
    #[error("/{}: too many levels of symlinks", .0.display())]
    TooManySymlinks(PathBuf),
    #[error("/{}: {source}", at.display())]
    ReadLink {
        at: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("/{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
}

/// Why a path is not one a root takes; the text follows the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(" is outside /etc, /var, /home, /opt, /srv, /mnt, /media and /tmp; the rest of the OS is a read-only image{}", if *directory { " (and that is a directory)" } else { "" })]
    OutsideHost { directory: bool },
    #[error(" is not a file a container can hold (/proc, /sys and /dev are the kernel's)")]
    KernelsInContainer,
}

/// Why an `owner:` has no ids in the root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerError {
    #[error("no user `{0}` in /etc/passwd")]
    NoUser(String),
    #[error("no group `{0}` in /etc/group")]
    NoGroup(String),
}

/// `path` as a path relative to `root` whose parent directories are real
/// directories (or do not exist yet), checked to be below [`ALLOWED`] both
/// as written and after following symlinks inside the root.
pub fn resolve(root: &Path, path: &str) -> Result<PathBuf, PathError> {
    resolve_in(root, path, Allowed::Host)
}

/// [`resolve`] for a root that takes `allowed` paths.
pub fn resolve_in(root: &Path, path: &str, allowed: Allowed) -> Result<PathBuf, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute(path.to_string()));
    }
    let lexical = normalize(Path::new(path));
    check_allowed(&lexical, allowed).map_err(|why| PathError::Refused {
        path: path.to_string(),
        why,
    })?;
    let resolved = follow_parents(root, &lexical)?;
    let parts: Vec<String> = resolved
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    check_allowed(&parts, allowed).map_err(|why| PathError::RefusedThroughSymlink {
        path: path.to_string(),
        resolved: resolved.clone(),
        why,
    })?;
    Ok(resolved)
}

/// Components without `.` and `..` (`..` at the top stays at the top).
fn normalize(path: &Path) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_string_lossy().into_owned()),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

fn check_allowed(components: &[String], allowed: Allowed) -> Result<(), Refused> {
    let top = components.first().map(String::as_str).unwrap_or("");
    match allowed {
        Allowed::Host if components.len() >= 2 && ALLOWED.contains(&top) => Ok(()),
        Allowed::Host => Err(Refused::OutsideHost {
            directory: components.len() < 2 && ALLOWED.contains(&top),
        }),
        Allowed::Container if !components.is_empty() && !NOT_IN_CONTAINERS.contains(&top) => Ok(()),
        Allowed::Container => Err(Refused::KernelsInContainer),
    }
}

/// Resolves symlinks in every component but the last, as if `root` were `/`.
fn follow_parents(root: &Path, components: &[String]) -> Result<PathBuf, PathError> {
    let Some((last, parents)) = components.split_last() else {
        return Err(PathError::Empty);
    };
    let mut todo: Vec<String> = parents.iter().rev().cloned().collect();
    let mut done: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            done.pop();
            continue;
        }
        if name == "." || name.is_empty() {
            continue;
        }
        let here: PathBuf = done.iter().chain([&name]).collect();
        match std::fs::symlink_metadata(root.join(&here)) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(PathError::TooManySymlinks(here));
                }
                let target =
                    std::fs::read_link(root.join(&here)).map_err(|source| PathError::ReadLink {
                        at: here.clone(),
                        source,
                    })?;
                if target.is_absolute() {
                    done.clear();
                }
                let parts: Vec<String> = target
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
                        Component::ParentDir => Some("..".into()),
                        _ => None,
                    })
                    .collect();
                todo.extend(parts.into_iter().rev());
            }
            Ok(meta) if !meta.is_dir() => {
                return Err(PathError::NotADirectory(here));
            }
            // A directory, or missing (it will be created).
            _ => done.push(name),
        }
    }
    done.push(last.clone());
    Ok(done.iter().collect())
}

/// `user[:group]` → ids, by name from the root's `/etc/passwd` and
/// `/etc/group` or as numbers. A user alone gets its primary group.
pub fn owner_ids(root: &Path, owner: &str) -> Result<(u32, u32), OwnerError> {
    let (user, group) = match owner.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (owner, None),
    };
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => (
            uid,
            passwd_entries(&passwd)
                .find(|(_, u, _)| *u == Some(uid))
                .and_then(|(_, _, g)| g)
                .unwrap_or(uid),
        ),
        Err(_) => match passwd_entries(&passwd).find(|(n, _, _)| *n == user) {
            Some((_, Some(uid), Some(gid))) => (uid, gid),
            _ => return Err(OwnerError::NoUser(user.to_string())),
        },
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let groups = std::fs::read_to_string(root.join("etc/group")).unwrap_or_default();
                groups
                    .lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.first() == Some(&g))
                    .and_then(|f| f.get(2)?.parse().ok())
                    .ok_or_else(|| OwnerError::NoGroup(g.to_string()))?
            }
        },
    };
    Ok((uid, gid))
}

fn passwd_entries(text: &str) -> impl Iterator<Item = (&str, Option<u32>, Option<u32>)> {
    text.lines().filter(|l| !l.starts_with('#')).map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (
            f.first().copied().unwrap_or(""),
            f.get(2).and_then(|u| u.parse().ok()),
            f.get(3).and_then(|g| g.parse().ok()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::recording::Call;
    use super::super::testing::root;
    use super::super::Recording;
    use super::*;
    use berth_configs::forms::FileMode;
    use berth_configs::model::Encoding;

    fn entry(path: &str, content: &str) -> WriteFile {
        WriteFile {
            path: path.into(),
            content: content.into(),
            ..WriteFile::default()
        }
    }

    fn run(root: &Path, files: &[WriteFile]) -> (Vec<Call>, Report) {
        let ops = Recording::default();
        let mut report = Report::default();
        let paths = HostPaths {
            root: root.to_path_buf(),
            ..super::super::testing::root().paths
        };
        let files: Vec<Entry> = files
            .iter()
            .enumerate()
            .map(|(i, f)| (format!("write_files[{i}]"), f.clone()))
            .collect();
        apply(
            &ops,
            &paths,
            &files,
            &Applied::default(),
            &mut Applied::default(),
            &mut report,
        );
        (ops.calls(), report)
    }

    fn written(call: &Call) -> (&Path, &[u8], u32, u32, u32, bool) {
        match call {
            Call::Write {
                rel,
                data,
                mode,
                uid,
                gid,
                append,
            } => (rel, data, *mode, *uid, *gid, *append),
            other => panic!("not a write: {other:?}"),
        }
    }

    #[test]
    fn every_encoding_decodes() {
        use base64::Engine as _;
        use std::io::Write as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"zipped").expect("gzip");
        let gz = gz.finish().expect("gzip");
        let r = root();
        let files = [
            (None, "plain".to_string(), b"plain".as_slice()),
            (Some(Encoding::Plain), "text".into(), b"text"),
            (Some(Encoding::Base64), b64(b"\x00bin\xff"), b"\x00bin\xff"),
            (Some(Encoding::GzipBase64), b64(&gz), b"zipped"),
            (Some(Encoding::Gzip), b64(&gz), b"zipped"),
        ];
        let entries: Vec<WriteFile> = files
            .iter()
            .enumerate()
            .map(|(i, (enc, content, _))| WriteFile {
                encoding: *enc,
                ..entry(&format!("/etc/f{i}"), content)
            })
            .collect();
        let (calls, report) = run(r.dir.path(), &entries);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        for (call, (_, _, want)) in calls.iter().zip(&files) {
            assert_eq!(written(call).1, *want);
        }

        let bad = WriteFile {
            encoding: Some(Encoding::Base64),
            ..entry("/etc/bad", "!!not base64!!")
        };
        let (calls, report) = run(r.dir.path(), &[bad, entry("/etc/good", "x")]);
        assert_eq!(calls.len(), 1, "the good entry is still written");
        assert_eq!(report.problems[0].field, "write_files[0].content");
    }

    #[test]
    fn permissions_and_owner_by_name_and_number() {
        let r = root();
        let files = [
            WriteFile {
                permissions: Some(FileMode(0o600)),
                owner: Some("berth:docker".into()),
                ..entry("/home/berth/.secret", "s")
            },
            WriteFile {
                owner: Some("web".into()),
                ..entry("/var/www/index.html", "hi")
            },
            WriteFile {
                owner: Some("1234:5678".into()),
                ..entry("/opt/x", "n")
            },
            entry("/etc/default", "d"),
            WriteFile {
                owner: Some("nobody-here:root".into()),
                ..entry("/etc/unknown-owner", "u")
            },
        ];
        let (calls, report) = run(r.dir.path(), &files);
        let got: Vec<_> = calls
            .iter()
            .map(written)
            .map(|(_, _, m, u, g, _)| (m, u, g))
            .collect();
        assert_eq!(
            got,
            [
                (0o600, 1100, 999),
                (0o644, 33, 34),
                (0o644, 1234, 5678),
                (0o644, 0, 0),
                (0o644, 0, 0)
            ]
        );
        assert_eq!(report.problems.len(), 1);
        assert_eq!(report.problems[0].field, "write_files[4].owner");
        assert!(report.problems[0].message.contains("nobody-here"));
    }

    #[test]
    fn append_is_passed_on() {
        let r = root();
        let (calls, _) = run(
            r.dir.path(),
            &[WriteFile {
                append: true,
                ..entry("/etc/hosts", "10.0.0.1 db\n")
            }],
        );
        assert!(written(&calls[0]).5);
    }

    #[test]
    fn only_below_etc_var_home_opt() {
        let r = root();
        let files = [
            entry("/usr/bin/x", "no"),
            entry("/etc/../usr/bin/y", "no"),
            entry("/etc/./ok/../fine", "yes"),
            entry("relative/path", "no"),
            entry("/etc", "no"),
            entry("/var/lib/../../etc/shadow.d/x", "yes"),
        ];
        let (calls, report) = run(r.dir.path(), &files);
        let rels: Vec<_> = calls.iter().map(|c| written(c).0.to_path_buf()).collect();
        assert_eq!(
            rels,
            [PathBuf::from("etc/fine"), PathBuf::from("etc/shadow.d/x")]
        );
        let fields: Vec<&str> = report.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "write_files[0].path",
                "write_files[1].path",
                "write_files[3].path",
                "write_files[4].path"
            ]
        );
        assert!(report.problems[0].message.contains("read-only"));
        assert!(report.problems[0].message.contains("/usr/bin/x"));
    }

    #[test]
    fn symlinks_in_parents_are_followed_inside_the_root_only() {
        let r = root();
        let base = r.dir.path();
        // /etc/evil → /usr/bin (absolute: inside the root, outside the allowed dirs)
        std::os::unix::fs::symlink("/usr/bin", base.join("etc/evil")).expect("symlink");
        // /var/up → ../.. (climbs past the root: stays at the root)
        std::os::unix::fs::symlink("../..", base.join("var/up")).expect("symlink");
        // /opt/data → /var/data (allowed → allowed)
        std::os::unix::fs::symlink("/var/data", base.join("opt/data")).expect("symlink");
        // /etc/conf.d → ../opt/conf (relative, allowed)
        std::os::unix::fs::symlink("../opt/conf", base.join("etc/conf.d")).expect("symlink");
        let files = [
            entry("/etc/evil/sh", "no"),
            entry("/var/up/usr/bin/sh", "no"),
            entry("/opt/data/x", "yes"),
            entry("/etc/conf.d/y", "yes"),
        ];
        let (calls, report) = run(base, &files);
        let rels: Vec<_> = calls.iter().map(|c| written(c).0.to_path_buf()).collect();
        assert_eq!(
            rels,
            [PathBuf::from("var/data/x"), PathBuf::from("opt/conf/y")]
        );
        assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
        assert_eq!(report.problems[0].field, "write_files[0].path");
        assert!(
            report.problems[0]
                .message
                .contains("symlink to /usr/bin/sh"),
            "{}",
            report.problems[0].message
        );
        assert_eq!(report.problems[1].field, "write_files[1].path");
    }

    #[test]
    fn a_file_as_a_parent_is_refused() {
        let r = root();
        std::fs::write(r.dir.path().join("etc/plain"), "x").expect("write");
        let (calls, report) = run(r.dir.path(), &[entry("/etc/plain/x", "no")]);
        assert!(calls.is_empty());
        assert!(report.problems[0].message.contains("not a directory"));
    }

    #[test]
    fn write_failures_are_reported_and_the_rest_written() {
        let r = root();
        let ops = Recording::default();
        ops.fail("write", "etc/a", libc::EROFS);
        let mut report = Report::default();
        apply(
            &ops,
            &r.paths,
            &[
                ("write_files[0]".into(), entry("/etc/a", "1")),
                ("write_files[1]".into(), entry("/etc/b", "2")),
            ],
            &Applied::default(),
            &mut Applied::default(),
            &mut report,
        );
        assert_eq!(ops.calls().len(), 2);
        assert_eq!(report.problems.len(), 1);
        assert!(report.problems[0].message.contains("read-only"));
    }

    /// The services of a cloud-config document.
    fn services(yaml: &str) -> BTreeMap<String, Service> {
        let loaded = berth_configs::load(vec![berth_configs::parse_document(&"test".into(), yaml)]);
        loaded.config.berth.services
    }

    fn paths_of(entries: &[Entry]) -> Vec<(usize, &str)> {
        entries
            .iter()
            .map(|(field, f)| {
                let i = field
                    .trim_start_matches("write_files[")
                    .trim_end_matches(']')
                    .parse()
                    .expect("an index");
                (i, f.path.as_str())
            })
            .collect()
    }

    #[test]
    fn entries_go_to_the_host_and_the_console_or_to_the_named_service() {
        let services = services(
            "#cloud-config\nberth:\n  services:\n    console:\n      image: c\n      volumes: [/home:/home:rshared, /etc:/host/etc:ro]\n    ntp:\n      image: n\n    docker:\n      image: d\n      volumes: [/etc/docker:/etc/docker]\n",
        );
        let mut in_ntp = entry("/etc/chrony/extra.conf", "server x");
        in_ntp.container = Some("ntp".into());
        let mut daemon = entry("/etc/docker/daemon.json", "{}");
        daemon.container = Some("docker".into());
        let mut nowhere = entry("/etc/x", "");
        nowhere.container = Some("nope".into());
        let files = [
            entry("/etc/motd", "hi"),
            entry("/home/berth/note", "n"),
            entry("/usr/local/bin/tool", "t"),
            in_ntp,
            daemon,
            nowhere,
            // Read-only in the console: written into its own filesystem.
            entry("/host/etc/x", "h"),
        ];
        let routed = route(&files, &services);
        assert_eq!(
            paths_of(&routed.host),
            [
                (0, "/etc/motd"),
                (1, "/home/berth/note"),
                (4, "/etc/docker/daemon.json")
            ]
        );
        assert_eq!(
            paths_of(&routed.services["console"]),
            [
                (0, "/etc/motd"),
                (2, "/usr/local/bin/tool"),
                (6, "/host/etc/x")
            ]
        );
        assert_eq!(
            paths_of(&routed.services["ntp"]),
            [(3, "/etc/chrony/extra.conf")]
        );
        assert!(!routed.services.contains_key("docker"));
        assert_eq!(routed.problems.len(), 1);
        assert_eq!(routed.problems[0].field, "write_files[5].container");
        assert!(routed.problems[0].message.contains("`nope`"));
    }

    #[test]
    fn with_the_defaults_a_file_in_tmp_is_written_once_on_the_host_the_console_sees() {
        // The cloud-init habit: a script written to /tmp, then run by `runcmd` in the
        // console. The console binds the host's /tmp, so the host's copy is the one.
        let defaults = berth_configs::load(vec![berth_configs::defaults()]);
        let files = [entry("/tmp/setup.sh", "echo hi"), entry("/etc/motd", "hi")];
        let routed = route(&files, &defaults.config.berth.services);
        assert_eq!(
            paths_of(&routed.host),
            [(0, "/tmp/setup.sh"), (1, "/etc/motd")]
        );
        assert_eq!(paths_of(&routed.services["console"]), [(1, "/etc/motd")]);
        let r = root();
        let (calls, report) = run(r.dir.path(), &files[..1]);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(written(&calls[0]).0, Path::new("tmp/setup.sh"));
    }

    #[test]
    fn without_a_console_entries_stay_on_the_host() {
        let routed = route(&[entry("/etc/motd", "hi")], &BTreeMap::new());
        assert_eq!(paths_of(&routed.host), [(0, "/etc/motd")]);
        assert!(routed.services.is_empty());
    }

    #[test]
    fn a_container_takes_any_path_but_the_kernels() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("etc")).expect("etc");
        std::fs::write(dir.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n")
            .expect("passwd");
        let mut tool = entry("/usr/local/bin/tool", "#!/bin/sh\n");
        tool.permissions = Some(FileMode(0o755));
        let files = vec![
            ("write_files[0]".into(), tool),
            ("write_files[1]".into(), entry("/proc/sys/x", "1")),
        ];
        let report = write_into(&crate::host::Linux, dir.path(), &files);
        let written = dir.path().join("usr/local/bin/tool");
        assert_eq!(
            std::fs::read_to_string(&written).expect("written"),
            "#!/bin/sh\n"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&written)
                .expect("meta")
                .permissions()
                .mode()
                & 0o777,
            0o755
        );
        assert_eq!(report.problems.len(), 1);
        assert_eq!(report.problems[0].field, "write_files[1].path");
    }

    #[test]
    fn trusted_cas_are_appended_to_every_services_bundle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bundle = dir.path().join("etc/ssl/certs/ca-certificates.crt");
        std::fs::create_dir_all(bundle.parent().expect("parent")).expect("mkdir");
        std::fs::write(&bundle, "PUBLIC\n").expect("bundle");
        let services = services(
            "#cloud-config\nberth:\n  services:\n    console:\n      image: c\n    docker:\n      image: d\n",
        );
        let mut routed = Routed::default();
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
        trust(&mut routed, &[pem.into()], &services);
        assert_eq!(routed.services.len(), 2);
        let report = write_into(&crate::host::Linux, dir.path(), &routed.services["docker"]);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(
            std::fs::read_to_string(&bundle).expect("bundle"),
            format!("PUBLIC\n{pem}\n")
        );
        assert!(report.done[0].starts_with("ca_certs.trusted: appended to"));
    }
}
