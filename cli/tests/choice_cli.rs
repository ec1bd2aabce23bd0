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
