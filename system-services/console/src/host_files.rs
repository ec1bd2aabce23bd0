//! What the console takes from the host: its name-resolution files, seen
//! live, and the user engine's socket where the docker CLI looks for it.
//!
//! The console has its own `/etc` (from its image), but `hosts`,
//! `resolv.conf`, `os-release` and `machine-id` must be the host's: netconf
//! and berthd rewrite them by renaming a new file into place, which a bind
//! mount of the single file would never see. So the service binds the host's whole `/etc` read-only at
//! `/host/etc` and these files become symlinks into it.

use std::io;
use std::path::Path;

/// The files taken from the host: name resolution, `os-release` (the
/// console runs on Berth, whatever distribution its image was built from)
/// and the machine's id.
pub const FILES: &[&str] = &["hosts", "resolv.conf", "os-release", "machine-id"];

/// Where the console service binds the host's `/etc`.
pub const HOST_ETC: &str = "host/etc";

/// Points `root/etc/<file>` at `/host/etc/<file>` for each of [`FILES`], when
/// the host's `/etc` is there. Returns the files linked.
pub fn link(root: &Path) -> io::Result<Vec<&'static str>> {
    if !root.join(HOST_ETC).is_dir() {
        return Ok(Vec::new());
    }
    let mut linked = Vec::new();
    for file in FILES {
        let target = Path::new("/").join(HOST_ETC).join(file);
        replace_with_symlink(&root.join("etc").join(file), &target)?;
        linked.push(*file);
    }
    Ok(linked)
}

/// The user engine's socket, where its service puts it (a directory bound
/// from the host, so a restarted engine's new socket is seen).
pub const ENGINE_SOCKET: &str = "/run/docker/docker.sock";

/// Makes `/run/docker.sock` (the docker CLI's default, through Debian's
/// `/var/run` → `/run`) point at [`ENGINE_SOCKET`].
pub fn link_engine_socket(root: &Path) -> io::Result<()> {
    std::fs::create_dir_all(root.join("run"))?;
    replace_with_symlink(&root.join("run/docker.sock"), Path::new(ENGINE_SOCKET))
}

/// Makes `path` a symlink to `target` in one rename (whatever was there
/// is replaced, never missing in between); nothing is done when it already is.
fn replace_with_symlink(path: &Path, target: &Path) -> io::Result<()> {
    if std::fs::read_link(path).is_ok_and(|t| t == target) {
        return Ok(());
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.berth-link"));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_docker_cli_default_socket_points_at_the_engine() {
        let root = tempfile::tempdir().expect("tempdir");
        for _ in 0..2 {
            link_engine_socket(root.path()).expect("link");
            assert_eq!(
                std::fs::read_link(root.path().join("run/docker.sock")).expect("link"),
                Path::new(ENGINE_SOCKET)
            );
        }
    }

    use super::*;

    #[test]
    fn links_the_hosts_files_and_is_idempotent() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("etc")).expect("mkdir");
        std::fs::write(root.path().join("etc/hosts"), "127.0.0.1 localhost\n").expect("write");
        assert!(
            link(root.path()).expect("link").is_empty(),
            "no host /etc: nothing"
        );
        std::fs::create_dir_all(root.path().join(HOST_ETC)).expect("mkdir");
        for _ in 0..2 {
            assert_eq!(link(root.path()).expect("link"), FILES);
            for file in FILES {
                assert_eq!(
                    std::fs::read_link(root.path().join("etc").join(file)).expect("link"),
                    Path::new("/host/etc").join(file)
                );
            }
        }
    }
}
