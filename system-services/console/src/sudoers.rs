//! `/etc/sudoers.d/90-berth`: the sudo rules of the config's users (`berth`
//! always has passwordless sudo). sudo refuses to run at all when a sudoers
//! file does not parse, so a rule that could break the file (a line break, a
//! `#include`) is left out with a warning rather than written.

use std::path::{Path, PathBuf};

use crate::files::{self, Attributes, Outcome, WriteError};
use crate::users::Created;
use crate::Warnings;

pub const PATH: &str = "etc/sudoers.d/90-berth";

/// The file's text: one `user rule` line per rule.
pub fn render(users: &[Created], warnings: &mut Warnings) -> String {
    let mut text = String::from(
        "# Written by berth console-init from the cloud-config (users[].sudo);\n\
         # changes here are lost when the console starts again.\n",
    );
    for user in users {
        for (index, rule) in user.spec.sudo.iter().enumerate() {
            let rule = rule.trim();
            if rule.is_empty() {
                continue;
            }
            if rule.contains(['\n', '\r', '\\']) || rule.starts_with(['#', '@']) {
                warnings.push(format!(
                    "user {}: sudo rule {index} is skipped: it holds a line break, a backslash or a directive",
                    user.spec.name
                ));
                continue;
            }
            text.push_str(&format!("{} {rule}\n", user.spec.name));
        }
    }
    text
}

/// Writes the rules file (root, 0440, as sudo requires).
pub fn write(
    root: &Path,
    users: &[Created],
    warnings: &mut Warnings,
) -> Result<Outcome, WriteError> {
    let path: PathBuf = root.join(PATH);
    files::ensure_dir(
        path.parent().unwrap_or(root),
        Attributes::of(&root.join("etc/sudoers.d")).unwrap_or(Attributes::root(0o750)),
    )?;
    files::write_if_changed(
        &path,
        render(users, warnings).as_bytes(),
        Attributes::root(0o440),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, sudo: &[&str]) -> Created {
        let mut user = Created::plain(name);
        user.spec.sudo = sudo.iter().map(|s| s.to_string()).collect();
        user
    }

    #[test]
    fn one_line_per_rule_and_bad_rules_left_out() {
        let mut warnings = Warnings::default();
        let users = [
            user("berth", &["ALL=(ALL) NOPASSWD:ALL"]),
            user(
                "alice",
                &["ALL=(ALL) NOPASSWD:ALL", "ALL=(root) /usr/bin/less"],
            ),
            user("bob", &[]),
            user(
                "eve",
                &["ALL=(ALL) ALL\nroot ALL=(ALL) ALL", "#include /tmp/x"],
            ),
        ];
        let text = render(&users, &mut warnings);
        let rules: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            rules,
            [
                "berth ALL=(ALL) NOPASSWD:ALL",
                "alice ALL=(ALL) NOPASSWD:ALL",
                "alice ALL=(root) /usr/bin/less",
            ]
        );
        assert_eq!(warnings.0.len(), 2, "{warnings:?}");
        assert!(warnings.0[0].starts_with("user eve: sudo rule 0"));
    }

    #[test]
    fn written_0440_once() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let users = [user("berth", &["ALL=(ALL) NOPASSWD:ALL"])];
        let mut warnings = Warnings::default();
        let first = write(dir.path(), &users, &mut warnings);
        if first.is_err() {
            berth_testkit::skip!("cannot chown to root (not root)");
            return;
        }
        let path = dir.path().join(PATH);
        assert_eq!(
            std::fs::metadata(&path).map(|m| m.mode() & 0o7777).ok(),
            Some(0o440)
        );
        assert_eq!(
            write(dir.path(), &users, &mut warnings).ok(),
            Some(Outcome::Unchanged)
        );
    }
}
