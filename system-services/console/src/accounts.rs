//! The account databases — `/etc/passwd`, `/etc/group`, `/etc/shadow` and
//! `/etc/gshadow` — edited directly, as `useradd`/`usermod` would, but in one
//! pass: everything is changed in memory and each file is written once,
//! atomically, and only if its content changed.
//!
//! Lines this module does not manage (comments, NIS `+`/`-` entries, other
//! users) are kept byte for byte.

use std::io;
use std::path::{Path, PathBuf};

use crate::files::{self, Attributes, Outcome, WriteError};

#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("no free {kind} id left in {first}..={last}")]
    Exhausted {
        kind: &'static str,
        first: u32,
        last: u32,
    },
}

/// Ids `useradd` hands out to ordinary users and groups (Debian's login.defs).
pub const REGULAR_IDS: (u32, u32) = (1000, 59999);
/// Ids for `system: true` users.
pub const SYSTEM_IDS: (u32, u32) = (100, 999);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// `name:field:field…`, split on `:`.
    Entry(Vec<String>),
    /// A comment, blank line or NIS marker, kept as it was.
    Verbatim(String),
}

/// One colon-separated database file.
#[derive(Debug, Clone)]
struct Table {
    path: PathBuf,
    /// Number of fields an entry has (shorter lines are padded).
    width: usize,
    lines: Vec<Line>,
    /// Mode and owner for a file that does not exist yet.
    default_attrs: Attributes,
}

impl Table {
    fn load(path: PathBuf, width: usize, default_attrs: Attributes) -> Result<Self, AccountsError> {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(AccountsError::Read { path, source }),
        };
        let lines = text
            .lines()
            .map(|line| {
                if line.trim().is_empty() || line.starts_with(['#', '+', '-']) {
                    Line::Verbatim(line.to_string())
                } else {
                    let mut fields: Vec<String> = line.split(':').map(str::to_string).collect();
                    if fields.len() < width {
                        fields.resize(width, String::new());
                    }
                    Line::Entry(fields)
                }
            })
            .collect();
        Ok(Table {
            path,
            width,
            lines,
            default_attrs,
        })
    }

    fn entries(&self) -> impl Iterator<Item = &Vec<String>> {
        self.lines.iter().filter_map(|l| match l {
            Line::Entry(fields) => Some(fields),
            Line::Verbatim(_) => None,
        })
    }

    fn get(&self, name: &str) -> Option<&Vec<String>> {
        self.entries().find(|f| f[0] == name)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Vec<String>> {
        self.lines.iter_mut().find_map(|l| match l {
            Line::Entry(fields) if fields[0] == name => Some(fields),
            _ => None,
        })
    }

    /// The entry for `name`, appended (all fields but the name empty) if missing.
    fn entry(&mut self, name: &str) -> &mut Vec<String> {
        if self.get(name).is_none() {
            let mut fields = vec![String::new(); self.width];
            fields[0] = name.to_string();
            self.lines.push(Line::Entry(fields));
        }
        match self.get_mut(name) {
            Some(fields) => fields,
            None => unreachable!("the entry was just added"),
        }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            match line {
                Line::Entry(fields) => out.push_str(&fields.join(":")),
                Line::Verbatim(text) => out.push_str(text),
            }
            out.push('\n');
        }
        out
    }

    fn save(&self) -> Result<Outcome, WriteError> {
        let attrs = Attributes::of(&self.path).unwrap_or(self.default_attrs);
        files::write_if_changed(&self.path, self.render().as_bytes(), attrs)
    }
}

/// A user's password as it goes into `/etc/shadow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Password {
    /// No password login at all. Written as `*`, not `!`: with `UsePAM no`
    /// sshd treats a `!`-prefixed hash as a locked *account* and refuses even
    /// key logins, while `*` only means "no password matches".
    Disabled,
    /// A crypt(3) hash.
    Hash(String),
}

impl Password {
    fn field(&self) -> &str {
        match self {
            Password::Disabled => "*",
            Password::Hash(hash) => hash,
        }
    }
}

/// A user as `/etc/passwd` and `/etc/shadow` hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
    pub password: Password,
}

/// The four databases under one root.
#[derive(Debug, Clone)]
pub struct Accounts {
    passwd: Table,
    group: Table,
    shadow: Table,
    /// Only kept if the system has one.
    gshadow: Option<Table>,
    /// Days since the epoch, for shadow's "last changed" field.
    today: u64,
}

impl Accounts {
    pub fn load(root: &Path) -> Result<Self, AccountsError> {
        let etc = root.join("etc");
        let shadow_group = Attributes::root(0o640);
        let gshadow_path = etc.join("gshadow");
        let gshadow = if gshadow_path.exists() {
            Some(Table::load(gshadow_path, 4, shadow_group)?)
        } else {
            None
        };
        Ok(Accounts {
            passwd: Table::load(etc.join("passwd"), 7, Attributes::root(0o644))?,
            group: Table::load(etc.join("group"), 4, Attributes::root(0o644))?,
            shadow: Table::load(etc.join("shadow"), 9, shadow_group)?,
            gshadow,
            today: days_since_epoch(),
        })
    }

    /// Writes the files whose content changed; says whether any did.
    pub fn save(&self) -> Result<Outcome, AccountsError> {
        let mut outcome = Outcome::Unchanged;
        // Groups first: a user is never written before the groups it names.
        let tables = [
            Some(&self.group),
            self.gshadow.as_ref(),
            Some(&self.passwd),
            Some(&self.shadow),
        ];
        for table in tables.into_iter().flatten() {
            if table.save()? == Outcome::Written {
                outcome = Outcome::Written;
            }
        }
        Ok(outcome)
    }

    pub fn user(&self, name: &str) -> Option<UserEntry> {
        let f = self.passwd.get(name)?;
        let password = match self.shadow.get(name).map(|s| s[1].as_str()) {
            None | Some("*") => Password::Disabled,
            Some(hash) => Password::Hash(hash.to_string()),
        };
        Some(UserEntry {
            name: f[0].clone(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            gecos: f[4].clone(),
            home: f[5].clone(),
            shell: f[6].clone(),
            password,
        })
    }

    /// Who has `uid`, if anyone.
    pub fn user_with_uid(&self, uid: u32) -> Option<&str> {
        self.passwd
            .entries()
            .find(|f| f[2].parse() == Ok(uid))
            .map(|f| f[0].as_str())
    }

    pub fn group_gid(&self, name: &str) -> Option<u32> {
        self.group.get(name)?[2].parse().ok()
    }

    pub fn group_with_gid(&self, gid: u32) -> Option<&str> {
        self.group
            .entries()
            .find(|f| f[2].parse() == Ok(gid))
            .map(|f| f[0].as_str())
    }

    /// The first uid in `range` nobody has, preferring `preferred`.
    pub fn free_uid(
        &self,
        preferred: Option<u32>,
        range: (u32, u32),
    ) -> Result<u32, AccountsError> {
        free_id(preferred, range, "user", |id| {
            self.user_with_uid(id).is_some()
        })
    }

    /// The first gid in `range` no group has, preferring `preferred`.
    pub fn free_gid(
        &self,
        preferred: Option<u32>,
        range: (u32, u32),
    ) -> Result<u32, AccountsError> {
        free_id(preferred, range, "group", |id| {
            self.group_with_gid(id).is_some()
        })
    }

    /// Adds or updates `user` in passwd and shadow. An unchanged password keeps
    /// its shadow entry (and "last changed" date) as it is.
    pub fn put_user(&mut self, user: &UserEntry) {
        let fields = self.passwd.entry(&user.name);
        fields[1] = "x".into();
        fields[2] = user.uid.to_string();
        fields[3] = user.gid.to_string();
        fields[4] = user.gecos.clone();
        fields[5] = user.home.clone();
        fields[6] = user.shell.clone();
        let today = self.today.to_string();
        let shadow = self.shadow.entry(&user.name);
        if shadow[1] != user.password.field() {
            shadow[1] = user.password.field().to_string();
            // Not 0: that would make sshd demand a password change at login.
            shadow[2] = today;
        }
        if shadow[4].is_empty() && shadow[3].is_empty() {
            shadow[3] = "0".into();
            shadow[4] = "99999".into();
            shadow[5] = "7".into();
        }
    }

    /// Makes sure group `name` exists with `gid` (changing the gid of an existing one).
    pub fn put_group(&mut self, name: &str, gid: u32) {
        let fields = self.group.entry(name);
        fields[1] = "x".into();
        fields[2] = gid.to_string();
        if let Some(gshadow) = &mut self.gshadow {
            let fields = gshadow.entry(name);
            if fields[1].is_empty() {
                fields[1] = "!".into();
            }
        }
    }

    /// Adds `user` to the member list of group `name` (which must exist).
    pub fn add_member(&mut self, name: &str, user: &str) {
        let add = |members: &mut String| {
            if !members.split(',').any(|m| m == user) {
                if !members.is_empty() {
                    members.push(',');
                }
                members.push_str(user);
            }
        };
        if let Some(fields) = self.group.get_mut(name) {
            add(&mut fields[3]);
        }
        if let Some(fields) = self.gshadow.as_mut().and_then(|t| t.get_mut(name)) {
            add(&mut fields[3]);
        }
    }

    /// Groups whose member lists name `user`.
    pub fn groups_of(&self, user: &str) -> Vec<String> {
        self.group
            .entries()
            .filter(|f| f[3].split(',').any(|m| m == user))
            .map(|f| f[0].clone())
            .collect()
    }
}

fn free_id(
    preferred: Option<u32>,
    (first, last): (u32, u32),
    kind: &'static str,
    taken: impl Fn(u32) -> bool,
) -> Result<u32, AccountsError> {
    if let Some(id) = preferred.filter(|id| !taken(*id)) {
        return Ok(id);
    }
    (first..=last)
        .find(|id| !taken(*id))
        .ok_or(AccountsError::Exhausted { kind, first, last })
}

fn days_since_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n# a comment\n+nis\nsshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nsudo:x:27:\ndocker:x:105:\n";
    const SHADOW: &str = "root:*:19000:0:99999:7:::\nsshd:!:19000::::::\n";
    const GSHADOW: &str = "root:*::\nsudo:*::\ndocker:!::\n";

    fn root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        let etc = dir.path().join("etc");
        std::fs::create_dir_all(&etc).expect("etc");
        for (name, text) in [
            ("passwd", PASSWD),
            ("group", GROUP),
            ("shadow", SHADOW),
            ("gshadow", GSHADOW),
        ] {
            std::fs::write(etc.join(name), text).expect("write");
        }
        dir
    }

    fn read(root: &Path, name: &str) -> String {
        std::fs::read_to_string(root.join("etc").join(name)).expect("read")
    }

    fn alice() -> UserEntry {
        UserEntry {
            name: "alice".into(),
            uid: 1000,
            gid: 1000,
            gecos: "Alice".into(),
            home: "/home/alice".into(),
            shell: "/bin/bash".into(),
            password: Password::Disabled,
        }
    }

    #[test]
    fn adds_a_user_keeping_every_other_line() {
        let dir = root();
        let mut accounts = Accounts::load(dir.path()).expect("load");
        accounts.put_group("alice", 1000);
        accounts.put_user(&alice());
        accounts.add_member("sudo", "alice");
        accounts.add_member("docker", "alice");
        assert_eq!(accounts.save().ok(), Some(Outcome::Written));
        assert_eq!(
            read(dir.path(), "passwd"),
            format!("{PASSWD}alice:x:1000:1000:Alice:/home/alice:/bin/bash\n")
        );
        assert_eq!(
            read(dir.path(), "group"),
            "root:x:0:\nsudo:x:27:alice\ndocker:x:105:alice\nalice:x:1000:\n"
        );
        assert_eq!(
            read(dir.path(), "gshadow"),
            "root:*::\nsudo:*::alice\ndocker:!::alice\nalice:!::\n"
        );
        let shadow = read(dir.path(), "shadow");
        let line = shadow.lines().last().unwrap_or_default();
        let today = days_since_epoch();
        assert_eq!(line, format!("alice:*:{today}:0:99999:7:::"));
        assert_eq!(accounts.groups_of("alice"), ["sudo", "docker"]);
    }

    #[test]
    fn running_twice_changes_nothing() {
        let dir = root();
        for round in 0..2 {
            let mut accounts = Accounts::load(dir.path()).expect("load");
            accounts.put_group("alice", 1000);
            accounts.put_user(&alice());
            accounts.add_member("sudo", "alice");
            let want = if round == 0 {
                Outcome::Written
            } else {
                Outcome::Unchanged
            };
            assert_eq!(accounts.save().ok(), Some(want), "round {round}");
        }
        assert_eq!(
            read(dir.path(), "passwd")
                .lines()
                .filter(|l| l.starts_with("alice:"))
                .count(),
            1
        );
        assert_eq!(
            read(dir.path(), "group"),
            "root:x:0:\nsudo:x:27:alice\ndocker:x:105:\nalice:x:1000:\n"
        );
    }

    #[test]
    fn updates_an_existing_user_in_place() {
        let dir = root();
        let mut accounts = Accounts::load(dir.path()).expect("load");
        accounts.put_user(&alice());
        accounts.save().expect("save");
        std::fs::write(
            dir.path().join("etc/shadow"),
            read(dir.path(), "shadow").replace("alice:*:", "alice:*:1:"),
        )
        .ok();
        let mut accounts = Accounts::load(dir.path()).expect("load");
        let mut changed = alice();
        changed.shell = "/bin/sh".into();
        changed.gecos = "Alice A.".into();
        accounts.put_user(&changed);
        accounts.save().expect("save");
        let passwd = read(dir.path(), "passwd");
        assert!(passwd.ends_with("sshd:x:100:65534::/run/sshd:/usr/sbin/nologin\nalice:x:1000:1000:Alice A.:/home/alice:/bin/sh\n"), "{passwd}");
        assert_eq!(
            Accounts::load(dir.path()).expect("load").user("alice"),
            Some(changed.clone())
        );

        // A new hash is written with today's date; the same hash again is left alone.
        changed.password = Password::Hash("$6$salt$hash".into());
        let mut accounts = Accounts::load(dir.path()).expect("load");
        accounts.put_user(&changed);
        accounts.save().expect("save");
        let today = days_since_epoch();
        assert!(read(dir.path(), "shadow").contains(&format!("alice:$6$salt$hash:{today}:")));
        let mut accounts = Accounts::load(dir.path()).expect("load");
        accounts.put_user(&changed);
        assert_eq!(accounts.save().ok(), Some(Outcome::Unchanged));
    }

    #[test]
    fn changes_a_group_id_and_finds_free_ids() {
        let dir = root();
        let mut accounts = Accounts::load(dir.path()).expect("load");
        accounts.put_group("docker", 999);
        assert_eq!(accounts.group_gid("docker"), Some(999));
        assert_eq!(accounts.group_with_gid(105), None);
        assert_eq!(accounts.free_gid(Some(27), REGULAR_IDS).ok(), Some(1000));
        assert_eq!(accounts.free_gid(Some(1234), REGULAR_IDS).ok(), Some(1234));
        assert_eq!(accounts.free_uid(None, SYSTEM_IDS).ok(), Some(101));
        assert!(accounts.free_uid(None, (0, 0)).is_err());
    }

    #[test]
    fn keeps_the_mode_and_owner_of_shadow() {
        use std::os::unix::fs::PermissionsExt;
        let dir = root();
        let shadow = dir.path().join("etc/shadow");
        std::fs::set_permissions(&shadow, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let before = Attributes::of(&shadow);
        let mut accounts = Accounts::load(dir.path()).expect("load");
        accounts.put_user(&alice());
        accounts.save().expect("save");
        assert_eq!(Attributes::of(&shadow), before);
    }

    #[test]
    fn without_gshadow_none_is_made() {
        let dir = root();
        std::fs::remove_file(dir.path().join("etc/gshadow")).expect("rm");
        let mut accounts = Accounts::load(dir.path()).expect("load");
        accounts.put_group("alice", 1000);
        accounts.save().expect("save");
        assert!(!dir.path().join("etc/gshadow").exists());
    }
}
