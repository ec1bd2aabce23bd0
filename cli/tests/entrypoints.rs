//! The service entrypoints (`berth daemon`, `netconf`, `console-init`) parse
//! only their own arguments, and still answer like every other command.

use std::process::Command;

fn berth(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .output()
        .expect("run berth");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn each_entrypoint_has_its_own_usage() {
    for (command, flag) in [
        ("daemon", "--socket"),
        ("netconf", "--root"),
        ("console-init", "--root"),
    ] {
        let (code, help) = berth(&[command, "--help"]);
        assert_eq!(code, 0, "{help}");
        assert!(
            help.contains(&format!("Usage: berth {command} [OPTIONS]")),
            "{help}"
        );
        assert!(help.contains(flag), "{help}");
        let (code, error) = berth(&[command, "--no-such-option"]);
        assert_eq!(code, 2, "{error}");
        assert!(
            error.contains("unexpected argument '--no-such-option'"),
            "{error}"
        );
        assert!(
            error.contains(&format!("Usage: berth {command} [OPTIONS]")),
            "{error}"
        );
    }
}

#[test]
fn the_whole_tree_still_lists_them() {
    let (code, help) = berth(&["--help"]);
    assert_eq!(code, 0, "{help}");
    for command in ["daemon", "netconf", "console-init", "ps", "os"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(command)),
            "{command}: {help}"
        );
    }
}

#[test]
fn called_as_berthd_it_takes_berth_daemon_s_arguments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("berthd");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_berth"), &link).expect("symlink");
    let out = Command::new(&link)
        .arg("--help")
        .output()
        .expect("run berthd");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    assert!(help.contains("Usage: berthd [OPTIONS]"), "{help}");
    assert!(help.contains("--socket"), "{help}");
}
