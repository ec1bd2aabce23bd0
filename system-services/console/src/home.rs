//! Home directories and `~/.ssh/authorized_keys`.
//!
//! `/home` is on the state partition and outlives every console container, so
//! what is there belongs to the user: a home that exists is never re-seeded or
//! re-owned, and `authorized_keys` keeps every line the user added. Only the
//! block between Berth's markers is Berth's, and it is replaced whole, so a key
//! removed from the cloud-config stops working.
//!
//! Users own their homes, so nothing here follows a symlink a user could have
//! planted (`~/.ssh -> /etc`): such paths are refused, and files are replaced
//! by rename, which replaces a link rather than writing through it.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::files::{self, Attributes, Outcome, WriteError};
use crate::keys;
use crate::users::{in_root, Created};
use crate::Warnings;

pub const BEGIN: &str =
    "# BEGIN berth cloud-config keys (managed by console-init; edits inside are lost)";
pub const END: &str = "# END berth cloud-config keys";

#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("cannot create {}: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is a symbolic link; console-init does not follow it", path.display())]
    Symlink { path: PathBuf },
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Creates the user's home (0750, owned by the user) seeded from `/etc/skel`,
/// unless it already exists. Built under a temporary name, synced and renamed
/// into place, so an interrupted copy is never taken for a finished home.
pub fn ensure_home(root: &Path, user: &Created) -> Result<Outcome, HomeError> {
    let home = in_root(root, &user.home);
    if fs::symlink_metadata(&home).is_ok() {
        return Ok(Outcome::Unchanged);
    }
    let create = |source| HomeError::Create {
        path: home.clone(),
        source,
    };
    let parent = home.parent().unwrap_or(root);
    fs::create_dir_all(parent).map_err(create)?;
    let name = home.file_name().and_then(|n| n.to_str()).unwrap_or("home");
    let staging = parent.join(format!(".{name}.berth-tmp"));
    if fs::symlink_metadata(&staging).is_ok() {
        fs::remove_dir_all(&staging).map_err(create)?;
    }
    fs::create_dir(&staging).map_err(create)?;
    copy_tree(&root.join("etc/skel"), &staging, user.uid, user.gid).map_err(create)?;
    let attrs = Attributes {
        mode: 0o750,
        uid: user.uid,
        gid: user.gid,
    };
    files::ensure_dir(&staging, attrs)?;
    // The copies reach the disk before the home's name does: a power cut
    // soon after the first boot otherwise left an empty `.bashrc`.
    berth_sys::atomic::sync_filesystem(&staging).map_err(create)?;
    berth_sys::atomic::rename_durable(&staging, &home).map_err(create)?;
    Ok(Outcome::Written)
}

/// Copies the skeleton's files, dirs and links into `to`, owned by the user.
fn copy_tree(from: &Path, to: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let entries = match fs::read_dir(from) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            fs::create_dir(&target)?;
            fs::set_permissions(&target, entry.metadata()?.permissions())?;
            copy_tree(&entry.path(), &target, uid, gid)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path())?, &target)?;
        } else if kind.is_file() {
            fs::copy(entry.path(), &target)?;
        } else {
            continue;
        }
        std::os::unix::fs::lchown(&target, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// Validated key lines from `user`'s config keys; bad ones become warnings
/// naming the user and the entry.
pub fn valid_keys(user: &Created, warnings: &mut Warnings) -> Vec<String> {
    let mut lines = Vec::new();
    for (index, entry) in &user.spec.keys {
        match keys::parse(entry) {
            Ok(key) => {
                let line = key.line();
                if !lines.contains(&line) {
                    lines.push(line);
                }
            }
            Err(why) => warnings.push(format!(
                "user {}: ssh_authorized_keys[{index}] is skipped: {why}",
                user.spec.name
            )),
        }
    }
    lines
}

/// Writes Berth's block of `keys` into `~/.ssh/authorized_keys` (0600, in a 0700
/// `~/.ssh`, both the user's), keeping every line outside the block. With no
/// keys and no file yet, nothing is created.
pub fn install_keys(root: &Path, user: &Created, keys: &[String]) -> Result<Outcome, HomeError> {
    let home = in_root(root, &user.home);
    let ssh = home.join(".ssh");
    let path = ssh.join("authorized_keys");
    for p in [&home, &ssh, &path] {
        if fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(HomeError::Symlink { path: p.clone() });
        }
    }
    let current = read_no_follow(&path)?;
    if keys.is_empty() && current.is_none() {
        return Ok(Outcome::Unchanged);
    }
    let text = with_block(current.as_deref().unwrap_or_default(), keys);
    let owner = |mode| Attributes {
        mode,
        uid: user.uid,
        gid: user.gid,
    };
    files::ensure_dir(&ssh, owner(0o700))?;
    Ok(files::write_if_changed(
        &path,
        text.as_bytes(),
        owner(0o600),
    )?)
}

/// The file's text, not following a final symlink; `None` if there is none.
fn read_no_follow(path: &Path) -> Result<Option<String>, HomeError> {
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    let mut file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(HomeError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|source| HomeError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(Some(text))
}

/// `current` with Berth's block replaced by one holding `keys` (or removed when
/// there are none); the block goes first, where it was the first time.
pub fn with_block(current: &str, keys: &[String]) -> String {
    let mut outside = Vec::new();
    let mut inside = false;
    for line in current.lines() {
        match line {
            BEGIN => inside = true,
            END => inside = false,
            _ if !inside => outside.push(line),
            _ => {}
        }
    }
    let mut text = String::new();
    if !keys.is_empty() {
        text.push_str(BEGIN);
        text.push('\n');
        for key in keys {
            text.push_str(key);
            text.push('\n');
        }
        text.push_str(END);
        text.push('\n');
    }
    for line in outside {
        text.push_str(line);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGiKGJkGGO83ljwz91J8TGTWCfaGeOWb1feeyqXgCOtd alice@example";

    fn user(root: &Path, keys: &[&str]) -> Created {
        let meta = fs::metadata(root).expect("root");
        let mut user = Created::plain("alice");
        user.spec.keys = keys.iter().map(|k| k.to_string()).enumerate().collect();
        user.uid = meta.uid();
        user.gid = meta.gid();
        user
    }

    #[test]
    fn a_new_home_gets_the_skeleton_an_existing_one_is_left_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let skel = dir.path().join("etc/skel");
        fs::create_dir_all(skel.join(".config")).expect("skel");
        fs::write(skel.join(".bashrc"), "# bashrc\n").expect("bashrc");
        std::os::unix::fs::symlink(".bashrc", skel.join(".kshrc")).expect("link");
        let alice = user(dir.path(), &[]);
        assert_eq!(ensure_home(dir.path(), &alice).ok(), Some(Outcome::Written));
        let home = dir.path().join("home/alice");
        assert_eq!(
            fs::read_to_string(home.join(".bashrc")).ok().as_deref(),
            Some("# bashrc\n")
        );
        assert!(home.join(".config").is_dir());
        assert!(home.join(".kshrc").is_symlink());
        assert_eq!(
            fs::metadata(&home).map(|m| m.mode() & 0o7777).ok(),
            Some(0o750)
        );

        fs::write(home.join(".bashrc"), "mine\n").expect("edit");
        assert_eq!(
            ensure_home(dir.path(), &alice).ok(),
            Some(Outcome::Unchanged)
        );
        assert_eq!(
            fs::read_to_string(home.join(".bashrc")).ok().as_deref(),
            Some("mine\n")
        );
    }

    #[test]
    fn keys_go_in_a_block_and_the_users_own_lines_stay() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut warnings = Warnings::default();
        let alice = user(dir.path(), &[KEY, "ssh-rsa nope", KEY]);
        ensure_home(dir.path(), &alice).expect("home");
        let keys = valid_keys(&alice, &mut warnings);
        assert_eq!(keys, [KEY]);
        assert_eq!(warnings.0.len(), 1);
        assert!(
            warnings.0[0].starts_with("user alice: ssh_authorized_keys[1] is skipped: "),
            "{warnings:?}"
        );

        let path = dir.path().join("home/alice/.ssh/authorized_keys");
        assert_eq!(
            install_keys(dir.path(), &alice, &keys).ok(),
            Some(Outcome::Written)
        );
        assert_eq!(
            fs::read_to_string(&path).ok(),
            Some(format!("{BEGIN}\n{KEY}\n{END}\n"))
        );
        assert_eq!(
            fs::metadata(&path).map(|m| m.mode() & 0o7777).ok(),
            Some(0o600)
        );
        let ssh = path.parent().expect("parent");
        assert_eq!(
            fs::metadata(ssh).map(|m| m.mode() & 0o7777).ok(),
            Some(0o700)
        );
        assert_eq!(
            install_keys(dir.path(), &alice, &keys).ok(),
            Some(Outcome::Unchanged)
        );

        // The user adds a key of their own; the config's key is later removed.
        let mine = "ssh-ed25519 AAAAmine me@laptop";
        let text = fs::read_to_string(&path).unwrap_or_default();
        fs::write(&path, format!("{text}{mine}\n")).expect("append");
        install_keys(dir.path(), &alice, &[]).expect("install");
        assert_eq!(fs::read_to_string(&path).ok(), Some(format!("{mine}\n")));
        install_keys(dir.path(), &alice, &keys).expect("install");
        assert_eq!(
            fs::read_to_string(&path).ok(),
            Some(format!("{BEGIN}\n{KEY}\n{END}\n{mine}\n"))
        );
    }

    #[test]
    fn no_keys_no_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let alice = user(dir.path(), &[]);
        ensure_home(dir.path(), &alice).expect("home");
        assert_eq!(
            install_keys(dir.path(), &alice, &[]).ok(),
            Some(Outcome::Unchanged)
        );
        assert!(!dir.path().join("home/alice/.ssh").exists());
    }

    #[test]
    fn a_planted_symlink_is_not_followed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let alice = user(dir.path(), &[]);
        ensure_home(dir.path(), &alice).expect("home");
        let target = dir.path().join("etc-sudoers.d");
        fs::create_dir_all(&target).expect("target");
        std::os::unix::fs::symlink(&target, dir.path().join("home/alice/.ssh")).expect("link");
        let err = install_keys(dir.path(), &alice, &[KEY.to_string()]);
        assert!(matches!(err, Err(HomeError::Symlink { .. })), "{err:?}");
        assert_eq!(fs::read_dir(&target).map(|d| d.count()).ok(), Some(0));
    }
}
