//! Who should exist in the console, from the cloud-config: the default user
//! `berth` plus every `users:` entry (cloud-init's keys), and putting them into
//! the account databases.
//!
//! `berth` is always created — the global `ssh_authorized_keys` and the
//! console's autologin need it — and a `users:` entry named `default` or
//! `berth` adds to it instead of making a second one.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use berth_configs::model::User;
use berth_configs::CloudConfig;

use crate::accounts::{Accounts, AccountsError, Password, UserEntry, REGULAR_IDS, SYSTEM_IDS};
use crate::shells;
use crate::Warnings;

pub const DEFAULT_USER: &str = "berth";
pub const DEFAULT_UID: u32 = 1100;
pub const DEFAULT_SHELL: &str = "/bin/bash";
/// The docker group's gid when the engine's socket is not there to say.
pub const DOCKER_GID: u32 = 999;
/// Where the user engine's socket is shared with the console.
pub const DOCKER_SOCKET: &str = "run/docker/docker.sock";
const PASSWORDLESS_SUDO: &str = "ALL=(ALL) NOPASSWD:ALL";

/// One user the console should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub name: String,
    pub uid: Option<u32>,
    pub gecos: Option<String>,
    pub primary_group: Option<String>,
    /// Supplementary groups (created when missing).
    pub groups: Vec<String>,
    pub shell: Option<String>,
    /// Absolute path inside the console.
    pub home: Option<String>,
    pub create_home: bool,
    pub system: bool,
    pub password: Password,
    /// sudoers rules, e.g. `ALL=(ALL) NOPASSWD:ALL`.
    pub sudo: Vec<String>,
    /// `(index in the config, line)`: the index names a bad key in warnings.
    pub keys: Vec<(usize, String)>,
}

impl Spec {
    pub fn home(&self) -> String {
        self.home
            .clone()
            .unwrap_or_else(|| format!("/home/{}", self.name))
    }
}

/// A user as it was put into the databases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub spec: Spec,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    /// The login shell written to `passwd` (see [`crate::shells::resolve`]).
    pub shell: String,
}

#[cfg(test)]
impl Created {
    /// A plain user `name` (uid and gid 1000, `/home/NAME`, `/bin/sh`, no
    /// password, keys or sudo rules) for tests to adjust.
    pub(crate) fn plain(name: &str) -> Created {
        Created {
            spec: Spec {
                name: name.into(),
                uid: None,
                gecos: None,
                primary_group: None,
                groups: Vec::new(),
                shell: None,
                home: None,
                create_home: true,
                system: false,
                password: Password::Disabled,
                sudo: Vec::new(),
                keys: Vec::new(),
            },
            uid: 1000,
            gid: 1000,
            home: format!("/home/{name}"),
            shell: "/bin/sh".into(),
        }
    }
}

/// The users `config` asks for, `berth` first. Entries that cannot be made
/// (bad names, `:` or line breaks in fields) are left out with a warning.
pub fn specs(config: &CloudConfig, warnings: &mut Warnings) -> Vec<Spec> {
    let mut berth = Spec {
        name: DEFAULT_USER.into(),
        uid: Some(DEFAULT_UID),
        gecos: Some("Berth".into()),
        primary_group: None,
        groups: vec!["sudo".into(), "docker".into()],
        shell: Some(DEFAULT_SHELL.into()),
        home: None,
        create_home: true,
        system: false,
        password: Password::Disabled,
        sudo: vec![PASSWORDLESS_SUDO.into()],
        keys: config
            .ssh_authorized_keys
            .iter()
            .cloned()
            .enumerate()
            .collect(),
    };
    let mut others: Vec<Spec> = Vec::new();
    for (index, user) in config.users.iter().enumerate() {
        if let Err(why) = check_user(user) {
            warnings.push(format!(
                "users[{index}] ({:?}) is skipped: {why}",
                user.name
            ));
            continue;
        }
        if user.name == "default" || user.name == DEFAULT_USER {
            extend_default(&mut berth, user);
            continue;
        }
        let spec = from_config(user);
        match others.iter_mut().find(|s| s.name == spec.name) {
            // A later entry for the same name wins, as a later source would.
            Some(existing) => *existing = spec,
            None => others.push(spec),
        }
    }
    std::iter::once(berth).chain(others).collect()
}

fn from_config(user: &User) -> Spec {
    let mut groups = user.groups.comma_separated();
    groups.dedup();
    Spec {
        name: user.name.clone(),
        uid: user.uid,
        gecos: user.gecos.clone(),
        primary_group: user.primary_group.clone(),
        groups,
        shell: user.shell.clone(),
        home: user.homedir.clone(),
        // A system user gets a home only if it names one, as with `useradd --system`.
        create_home: !(user.no_create_home || user.system && user.homedir.is_none()),
        system: user.system,
        password: password(user),
        sudo: user.sudo.0.clone(),
        keys: user
            .ssh_authorized_keys
            .iter()
            .cloned()
            .enumerate()
            .collect(),
    }
}

/// What a `default`/`berth` entry may change about the default user: more groups,
/// keys and sudo rules, its gecos, shell and password. Its uid and home stay.
fn extend_default(berth: &mut Spec, user: &User) {
    for group in user.groups.comma_separated() {
        if !berth.groups.contains(&group) {
            berth.groups.push(group);
        }
    }
    let first = berth.keys.len();
    berth.keys.extend(
        user.ssh_authorized_keys
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, k)| (first + i, k)),
    );
    berth.sudo.extend(user.sudo.0.iter().cloned());
    berth.sudo.dedup();
    if user.gecos.is_some() {
        berth.gecos = user.gecos.clone();
    }
    if user.shell.is_some() {
        berth.shell = user.shell.clone();
    }
    if user.passwd.is_some() || user.hashed_passwd.is_some() || user.lock_passwd.is_some() {
        berth.password = password(user);
    }
}

/// cloud-init's rule: the password is locked unless `lock_passwd: false`, and then
/// the hash from `passwd` (or `hashed_passwd`) is the password.
fn password(user: &User) -> Password {
    let hash = user.passwd.clone().or_else(|| user.hashed_passwd.clone());
    match (user.lock_passwd.unwrap_or(true), hash) {
        (false, Some(hash)) if !hash.is_empty() => Password::Hash(hash),
        _ => Password::Disabled,
    }
}

/// Why a `users` entry is skipped; the text follows the entry in the warning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum UserError {
    #[error("not a valid user name (letters, digits, `_`, `-`, `.`; starting with a letter or `_`; at most 32)")]
    Name,
    #[error("`{0}` contains `:` or a line break")]
    Separator(&'static str),
    #[error("`{0}` is not an absolute path")]
    RelativePath(&'static str),
    #[error("group {0:?} is not a valid group name")]
    Group(String),
}

/// A name `useradd` would take, and fields that cannot break the database format.
fn check_user(user: &User) -> Result<(), UserError> {
    let name = &user.name;
    let valid_name = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name
            .trim_end_matches('$')
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid_name {
        return Err(UserError::Name);
    }
    let fields = [
        ("gecos", &user.gecos),
        ("shell", &user.shell),
        ("homedir", &user.homedir),
        ("primary_group", &user.primary_group),
        ("passwd", &user.passwd),
        ("hashed_passwd", &user.hashed_passwd),
    ];
    for (key, value) in fields {
        if value
            .as_deref()
            .is_some_and(|v| v.contains([':', '\n', '\r']))
        {
            return Err(UserError::Separator(key));
        }
    }
    for key in ["shell", "homedir"] {
        let value = if key == "shell" {
            &user.shell
        } else {
            &user.homedir
        };
        if value.as_deref().is_some_and(|v| !v.starts_with('/')) {
            return Err(UserError::RelativePath(key));
        }
    }
    if let Some(bad) = user
        .groups
        .comma_separated()
        .into_iter()
        .find(|g| g.contains([':', '\n', ' ']))
    {
        return Err(UserError::Group(bad));
    }
    Ok(())
}

/// The gid the docker group needs so its members can use the engine's socket:
/// the socket's own group when it is there (and not root's), else [`DOCKER_GID`].
pub fn docker_gid(root: &Path) -> u32 {
    std::fs::metadata(root.join(DOCKER_SOCKET))
        .map(|m| m.gid())
        .ok()
        .filter(|gid| *gid != 0)
        .unwrap_or(DOCKER_GID)
}

/// Puts `spec` into `accounts`, creating its groups as needed. `root` is where
/// an existing home directory is looked at: a user without a fixed uid gets
/// the uid that owns its home from an earlier boot (`/home` is on the state
/// partition, `/etc` is not), so its files stay its own.
pub fn apply(
    accounts: &mut Accounts,
    spec: &Spec,
    root: &Path,
    docker_gid: u32,
    warnings: &mut Warnings,
) -> Result<Created, AccountsError> {
    let existing = accounts.user(&spec.name);
    let home = spec
        .home
        .clone()
        .or_else(|| {
            existing
                .as_ref()
                .map(|u| u.home.clone())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| spec.home());
    let range = if spec.system { SYSTEM_IDS } else { REGULAR_IDS };
    let uid = match (spec.uid, &existing) {
        (Some(uid), _) => {
            if let Some(other) = accounts.user_with_uid(uid).filter(|o| *o != spec.name) {
                warnings.push(format!("user {}: uid {uid} is also {other}'s", spec.name));
            }
            uid
        }
        (None, Some(user)) => user.uid,
        (None, None) => {
            let from_home = std::fs::metadata(root.join(home.trim_start_matches('/')))
                .ok()
                .map(|m| m.uid())
                .filter(|uid| *uid >= range.0 && *uid <= range.1);
            accounts.free_uid(from_home, range)?
        }
    };
    let gid = match (&spec.primary_group, &existing) {
        (Some(group), _) => ensure_group(accounts, group, None, docker_gid)?,
        (None, Some(user)) => user.gid,
        // A user private group, with the uid as its gid when that is free.
        (None, None) => match accounts.group_gid(&spec.name) {
            Some(gid) => gid,
            None => {
                let gid = accounts.free_gid(Some(uid), range)?;
                accounts.put_group(&spec.name, gid);
                gid
            }
        },
    };
    let wanted = spec
        .shell
        .clone()
        .or_else(|| {
            existing
                .as_ref()
                .map(|u| u.shell.clone())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| DEFAULT_SHELL.into());
    let shell = shells::resolve(root, &wanted);
    // The default user's bash is missing from the busybox console by design;
    // any other missing shell is the config's doing and worth a word.
    if shell != wanted && wanted != DEFAULT_SHELL {
        warnings.push(format!(
            "user {}: {wanted} is not in this console; the login shell is {shell}",
            spec.name
        ));
    }
    let entry = UserEntry {
        name: spec.name.clone(),
        uid,
        gid,
        gecos: spec
            .gecos
            .clone()
            .or_else(|| existing.as_ref().map(|u| u.gecos.clone()))
            .unwrap_or_default(),
        home: home.clone(),
        shell: shell.clone(),
        password: spec.password.clone(),
    };
    accounts.put_user(&entry);
    Ok(Created {
        spec: spec.clone(),
        uid,
        gid,
        home,
        shell,
    })
}

/// Adds `user` to its supplementary groups, creating the missing ones. Done
/// after every user is in, so new groups do not take gids that users' private
/// groups would have matched to their uids.
pub fn join_groups(
    accounts: &mut Accounts,
    user: &Created,
    docker_gid: u32,
) -> Result<(), AccountsError> {
    for group in &user.spec.groups {
        ensure_group(accounts, group, None, docker_gid)?;
        accounts.add_member(group, &user.spec.name);
    }
    Ok(())
}

/// The gid of group `name`, creating it if missing. `docker` is given the
/// socket's gid ([`docker_gid`]) whether it exists or not.
fn ensure_group(
    accounts: &mut Accounts,
    name: &str,
    preferred: Option<u32>,
    docker_gid: u32,
) -> Result<u32, AccountsError> {
    if name == "docker" {
        let current = accounts.group_gid("docker");
        let target_free = accounts
            .group_with_gid(docker_gid)
            .is_none_or(|holder| holder == "docker");
        if current != Some(docker_gid) && target_free {
            accounts.put_group("docker", docker_gid);
            return Ok(docker_gid);
        }
        if let Some(gid) = current {
            return Ok(gid);
        }
    }
    if let Some(gid) = accounts.group_gid(name) {
        return Ok(gid);
    }
    let gid = accounts.free_gid(preferred, REGULAR_IDS)?;
    accounts.put_group(name, gid);
    Ok(gid)
}

/// The `users:` names in the order they were made, for the ready line.
pub fn names(created: &[Created]) -> Vec<String> {
    created.iter().map(|c| c.spec.name.clone()).collect()
}

/// Where `home` (absolute in the console) is under `root`.
pub fn in_root(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_configs::forms::StringList;
    use berth_configs::model::Sudo;

    fn root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        let etc = dir.path().join("etc");
        std::fs::create_dir_all(&etc).expect("etc");
        std::fs::write(etc.join("passwd"), "root:x:0:0:root:/root:/bin/bash\n").expect("passwd");
        std::fs::write(etc.join("group"), "root:x:0:\nsudo:x:27:\ndocker:x:105:\n").expect("group");
        std::fs::write(etc.join("shadow"), "root:*:19000:0:99999:7:::\n").expect("shadow");
        dir
    }

    fn config() -> CloudConfig {
        CloudConfig {
            ssh_authorized_keys: vec!["ssh-ed25519 AAAA global".into()],
            users: vec![
                User {
                    name: "default".into(),
                    ssh_authorized_keys: vec!["ssh-ed25519 BBBB more".into()],
                    groups: StringList(vec!["adm".into()]),
                    ..User::default()
                },
                User {
                    name: "alice".into(),
                    gecos: Some("Alice".into()),
                    groups: StringList(vec!["wheel, docker".into()]),
                    sudo: Sudo(vec![PASSWORDLESS_SUDO.into()]),
                    lock_passwd: Some(false),
                    passwd: Some("$6$x$y".into()),
                    shell: Some("/bin/sh".into()),
                    ..User::default()
                },
                User {
                    name: "bad:name".into(),
                    ..User::default()
                },
            ],
            ..CloudConfig::default()
        }
    }

    fn apply_all(root: &Path, config: &CloudConfig) -> (Vec<Created>, Warnings) {
        let mut warnings = Warnings::default();
        let mut accounts = Accounts::load(root).expect("load");
        let created: Vec<Created> = specs(config, &mut warnings)
            .iter()
            .map(|s| apply(&mut accounts, s, root, docker_gid(root), &mut warnings).expect("apply"))
            .collect();
        for user in &created {
            join_groups(&mut accounts, user, docker_gid(root)).expect("groups");
        }
        accounts.save().expect("save");
        (created, warnings)
    }

    #[test]
    fn the_default_user_and_every_entry() {
        let dir = root();
        let (created, warnings) = apply_all(dir.path(), &config());
        assert_eq!(names(&created), ["berth", "alice"]);
        assert_eq!(warnings.0.len(), 1, "{warnings:?}");
        assert!(warnings.0[0].contains("users[2]"), "{warnings:?}");
        let berth = &created[0];
        assert_eq!(
            (berth.uid, berth.gid, berth.home.as_str()),
            (1100, 1100, "/home/berth")
        );
        let keys: Vec<&str> = berth.spec.keys.iter().map(|(_, k)| k.as_str()).collect();
        assert_eq!(keys, ["ssh-ed25519 AAAA global", "ssh-ed25519 BBBB more"]);
        assert_eq!(created[1].uid, 1000);

        let etc = dir.path().join("etc");
        let passwd = std::fs::read_to_string(etc.join("passwd")).expect("passwd");
        assert!(passwd.contains("berth:x:1100:1100:Berth:/home/berth:/bin/bash\n"));
        assert!(passwd.contains("alice:x:1000:1000:Alice:/home/alice:/bin/sh\n"));
        let group = std::fs::read_to_string(etc.join("group")).expect("group");
        // docker moved to 999 (no socket), adm and wheel were created.
        assert!(group.contains("sudo:x:27:berth\n"), "{group}");
        assert!(group.contains("docker:x:999:berth,alice\n"), "{group}");
        assert!(group.contains("berth:x:1100:\n"), "{group}");
        assert!(group.contains("adm:x:1001:berth\n"), "{group}");
        assert!(group.contains("wheel:x:1002:alice\n"), "{group}");
        let shadow = std::fs::read_to_string(etc.join("shadow")).expect("shadow");
        assert!(shadow.contains("\nberth:*:"), "{shadow}");
        assert!(shadow.contains("\nalice:$6$x$y:"), "{shadow}");

        // Again: nothing changes.
        let before: Vec<String> = ["passwd", "group", "shadow"]
            .iter()
            .map(|f| std::fs::read_to_string(etc.join(f)).unwrap_or_default())
            .collect();
        let (again, _) = apply_all(dir.path(), &config());
        assert_eq!(again, created);
        let after: Vec<String> = ["passwd", "group", "shadow"]
            .iter()
            .map(|f| std::fs::read_to_string(etc.join(f)).unwrap_or_default())
            .collect();
        assert_eq!(before, after);
    }

    #[test]
    fn an_existing_user_is_updated_not_duplicated() {
        let dir = root();
        apply_all(dir.path(), &config());
        let mut config = config();
        config.users[1].shell = Some("/bin/zsh".into());
        config.users[1].lock_passwd = None;
        apply_all(dir.path(), &config);
        let etc = dir.path().join("etc");
        let passwd = std::fs::read_to_string(etc.join("passwd")).expect("passwd");
        assert_eq!(
            passwd.lines().filter(|l| l.starts_with("alice:")).count(),
            1
        );
        assert!(passwd.contains("alice:x:1000:1000:Alice:/home/alice:/bin/zsh\n"));
        let shadow = std::fs::read_to_string(etc.join("shadow")).expect("shadow");
        assert!(shadow.contains("\nalice:*:"), "locked by default: {shadow}");
    }

    #[test]
    fn a_new_etc_keeps_the_uid_that_owns_the_home() {
        let dir = root();
        let home = dir.path().join("home/carol");
        std::fs::create_dir_all(&home).expect("home");
        std::os::unix::fs::chown(&home, Some(1234), Some(1234)).ok();
        if std::fs::metadata(&home).map(|m| m.uid()).ok() != Some(1234) {
            berth_testkit::skip!("cannot chown (not root)");
            return;
        }
        let config = CloudConfig {
            users: vec![User {
                name: "carol".into(),
                ..User::default()
            }],
            ..CloudConfig::default()
        };
        let (created, _) = apply_all(dir.path(), &config);
        assert_eq!((created[1].uid, created[1].gid), (1234, 1234));
    }

    #[test]
    fn docker_takes_the_sockets_group() {
        let dir = root();
        let socket = dir.path().join(DOCKER_SOCKET);
        std::fs::create_dir_all(socket.parent().expect("parent")).expect("dir");
        std::fs::write(&socket, "").expect("socket stand-in");
        std::os::unix::fs::chown(&socket, None, Some(105)).ok();
        let gid = std::fs::metadata(&socket).map(|m| m.gid()).unwrap_or(0);
        let want = if gid == 0 { DOCKER_GID } else { gid };
        assert_eq!(docker_gid(dir.path()), want);
    }
}
