//! `berth console|engine list|switch|enable` on a system root in a temp dir
//! (no berthd: the change is saved and applies when berthd reads it).

use std::path::Path;
use std::process::{Command, Output};

fn berth(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .arg("--root")
        .arg(root)
        .args(["--socket", "/nonexistent/berth.sock"])
        .output()
        .expect("run berth")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

#[test]
fn consoles_and_engines_are_listed_switched_and_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(
        &root.join("usr/share/berth/consoles/busybox.yml"),
        "services:\n  console:\n    image: berth/console-busybox:latest\n",
    );
    write(
        &root.join("usr/share/berth/engines/podman.yml"),
        "services:\n  podman:\n    image: berth/podman:latest\n",
    );

    let o = berth(root, &["console", "list"]);
    assert!(o.status.success(), "{}", text(&o));
    let lines: Vec<String> = text(&o).lines().map(str::to_string).collect();
    assert!(
        lines[1].starts_with("*  default  console  berth/console:latest"),
        "{lines:?}"
    );
    assert!(
        lines[2].contains("busybox  console  berth/console-busybox:latest"),
        "{lines:?}"
    );

    let o = berth(root, &["console", "switch", "alpine"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("there is no console `alpine`; there are: default, busybox"),
        "{}",
        text(&o)
    );
    assert!(!root.join("var/lib/berth/config/local.yml").exists());

    let o = berth(root, &["console", "switch", "busybox"]);
    assert!(o.status.success(), "{}", text(&o));
    let local =
        std::fs::read_to_string(root.join("var/lib/berth/config/local.yml")).expect("local");
    assert!(local.contains("name: busybox"), "{local}");
    let o = berth(root, &["console", "list"]);
    assert!(text(&o).contains("*  busybox"), "{}", text(&o));

    // RancherOS's versioned engine names mean Berth's docker.
    let o = berth(root, &["engine", "enable", "podman"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("runs from the next boot"), "{}", text(&o));
    let o = berth(root, &["engine", "list"]);
    assert!(
        text(&o).contains("*  podman  podman   berth/podman:latest"),
        "{}",
        text(&o)
    );
    let o = berth(root, &["engine", "switch", "docker-20.10.24"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = berth(root, &["engine", "list"]);
    assert!(text(&o).contains("*  docker"), "{}", text(&o));

    // The kernel command line wins over local changes: a switch it overrides is refused.
    write(
        &root.join("proc/cmdline"),
        "quiet berth.console.name=default\n",
    );
    let o = berth(root, &["console", "switch", "busybox"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("sets it to `default`"), "{}", text(&o));
}

/// The config sources are root's (0700): a user without sudo still gets the
/// list, without the mark, and is told why.
#[test]
fn an_unprivileged_list_says_the_config_is_roots() {
    if !rustix::process::geteuid().is_root() {
        berth_testkit::skip!("running berth as another user needs root");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(
        &root.join("usr/share/berth/consoles/busybox.yml"),
        "services:\n  console:\n    image: berth/console-busybox:latest\n",
    );
    // As root: the switch writes local.yml in the private config directory.
    let o = berth(root, &["console", "switch", "busybox"]);
    assert!(o.status.success(), "{}", text(&o));
    // Everything but the config directory readable by everyone.
    for d in [root.to_path_buf(), root.join("usr/share/berth/consoles")] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let o = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_berth"))
        .args(["console", "list", "--root"])
        .arg(root)
        .output()
        .expect("run setpriv");
    assert!(o.status.success(), "{}", text(&o));
    let shown = text(&o);
    assert!(shown.contains("busybox  console"), "{shown}");
    assert!(!shown.contains('*'), "{shown}");
    assert!(
        shown.contains("is root's; run with sudo to see which is chosen"),
        "{shown}"
    );
}
