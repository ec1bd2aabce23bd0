//! Login shells. The consoles differ in what they have: the Debian console has
//! bash, the busybox console only `/bin/sh` (busybox ash). A user whose shell
//! is missing could not log in at all, so it gets `/bin/sh` instead; and
//! `/etc/shells` lists every shell in use, because Dropbear (like `su` and
//! `chsh`) refuses a user whose shell is not listed there.

use std::path::Path;

use crate::files::{self, Attributes, Outcome, WriteError};

/// What a user gets when its shell is not in this console.
pub const FALLBACK: &str = "/bin/sh";
pub const PATH: &str = "etc/shells";

/// The shell to put in `passwd` for a user who asks for `wanted`: `wanted` if
/// the console under `root` has it, else [`FALLBACK`] if it has that. A root
/// with neither (a test's temp dir) keeps `wanted`: there is nothing better.
pub fn resolve(root: &Path, wanted: &str) -> String {
    let exists = |shell: &str| root.join(shell.trim_start_matches('/')).exists();
    if exists(wanted) || !exists(FALLBACK) {
        wanted.to_string()
    } else {
        FALLBACK.to_string()
    }
}

/// `/etc/shells` as it is with each of `shells` added at the end if missing.
pub fn render(current: &str, shells: &[&str]) -> String {
    let mut text = current.to_string();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    let listed: Vec<&str> = current.lines().map(str::trim).collect();
    let mut added: Vec<&str> = Vec::new();
    for shell in shells {
        if !shell.is_empty() && !listed.contains(shell) && !added.contains(shell) {
            text.push_str(shell);
            text.push('\n');
            added.push(shell);
        }
    }
    text
}

/// Adds the users' shells to `root/etc/shells` (created 0644 when missing);
/// lines already there, the image's, are kept.
pub fn write(root: &Path, shells: &[&str]) -> Result<Outcome, WriteError> {
    let path = root.join(PATH);
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    let attrs = Attributes::of(&path).unwrap_or(Attributes::root(0o644));
    files::write_if_changed(&path, render(&current, shells).as_bytes(), attrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_shell_becomes_bin_sh_when_there_is_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(resolve(dir.path(), "/bin/bash"), "/bin/bash", "no /bin/sh");
        std::fs::create_dir_all(dir.path().join("bin")).expect("bin");
        std::fs::write(dir.path().join("bin/sh"), "").expect("sh");
        assert_eq!(resolve(dir.path(), "/bin/bash"), "/bin/sh");
        assert_eq!(resolve(dir.path(), "/usr/bin/zsh"), "/bin/sh");
        std::fs::write(dir.path().join("bin/bash"), "").expect("bash");
        assert_eq!(resolve(dir.path(), "/bin/bash"), "/bin/bash");
    }

    #[test]
    fn shells_are_added_once_and_the_images_lines_kept() {
        assert_eq!(render("", &["/bin/sh", "/bin/sh"]), "/bin/sh\n");
        let debian = "# /etc/shells: valid login shells\n/bin/sh\n/bin/bash";
        assert_eq!(
            render(debian, &["/bin/bash", "/usr/bin/zsh"]),
            format!("{debian}\n/usr/bin/zsh\n")
        );
        let once = render("", &["/bin/sh"]);
        assert_eq!(render(&once, &["/bin/sh"]), once);
    }
}
