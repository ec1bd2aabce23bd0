//! `berth.kernel_args`: what an argument may be. Installed disks keep them in
//! GRUB's environment block (`berth_iso::kernel_args`), which bounds their size
//! and what characters read back the same.

/// At most this many bytes of arguments: grubenv's content must stay within
/// one sector, and a trial holds them twice (committed and next).
pub const MAX_BYTES: usize = 200;
/// Arguments Berth's own boot sets (slot and trial); the config cannot override them.
const RESERVED: &[&str] = &["berth.slot", "berth.trial", "berth.args_trial"];

/// Why an argument cannot be kept in grubenv, or would break boot counting.
pub fn check_arg(arg: &str) -> Result<(), String> {
    if arg.is_empty() {
        return Err("an empty argument".into());
    }
    if let Some(c) = arg
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '"' | '\'' | '\\' | '$'))
    {
        return Err(format!(
            "`{arg}` contains {c:?}: one argument per entry, without spaces, quotes, `\\` or `$`"
        ));
    }
    let name = arg.split_once('=').map_or(arg, |(n, _)| n);
    if RESERVED.contains(&name) {
        return Err(format!(
            "`{name}` is Berth's own boot counting and cannot be set"
        ));
    }
    Ok(())
}

/// The arguments as one command-line string, checked.
pub fn join(args: &[String]) -> Result<String, String> {
    for arg in args {
        check_arg(arg)?;
    }
    let joined = args.join(" ");
    if joined.len() > MAX_BYTES {
        return Err(format!(
            "{} bytes of kernel arguments; at most {MAX_BYTES} fit in GRUB's environment block",
            joined.len()
        ));
    }
    Ok(joined)
}

/// At most this many bytes of an OS's own arguments: with an entry's and the
/// machine's ([`MAX_BYTES`]) they stay well inside the kernel's 2048.
pub const MAX_OS_BYTES: usize = 1024;

/// Why an OS image's own arguments (its `io.berth.os.kernel_args`, written
/// into a GRUB script for its slot) cannot be booted: each one is checked as
/// [`check_arg`] checks the machine's, separated by single spaces.
pub fn check_os_args(args: &str) -> Result<(), String> {
    if args.trim().is_empty() {
        return Err("no arguments".into());
    }
    if args.len() > MAX_OS_BYTES {
        return Err(format!("{} bytes; at most {MAX_OS_BYTES}", args.len()));
    }
    args.split(' ')
        .filter(|a| !a.is_empty())
        .try_for_each(check_arg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oses_own_arguments_are_checked_word_by_word() {
        assert!(check_os_args("console=tty0 console=ttyS0,115200n8 panic=10").is_ok());
        for bad in [
            "",
            " ",
            "panic=10\nlinux /x",
            "a\tb",
            "x=\"y\"",
            "berth.slot=B",
            "a $b",
        ] {
            assert!(check_os_args(bad).is_err(), "{bad:?}");
        }
        assert!(check_os_args(&"a ".repeat(600)).is_err());
    }

    #[test]
    fn arguments_are_checked_one_by_one() {
        assert!(check_arg("cryptomgr.notests=0").is_ok());
        assert!(check_arg("quiet").is_ok());
        assert!(check_arg("a,b=c:d/e").is_ok());
        for bad in ["", "a b", "x=\"y\"", "x=$y", "a\\b", "tab\t", "é"] {
            assert!(check_arg(bad).is_err(), "{bad:?}");
        }
        let reserved = check_arg("berth.slot=B").expect_err("reserved");
        assert!(reserved.contains("berth.slot"), "{reserved}");
        assert!(check_arg("berth.trial").is_err());
        assert!(check_arg("berth.args_trial=1").is_err());
        assert!(check_arg("berth.debug").is_ok());
    }
}
