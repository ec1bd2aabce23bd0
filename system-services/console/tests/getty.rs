//! The busybox console's login prompts for real: console-init's setup on a
//! temporary root that has busybox (and no agetty, no bash), then busybox
//! getty on console-init's command line, chrooted into that root on a pty.
//! With autologin, the autologin script logs `berth` in without a password
//! (its shell runs `id`, as berth, in its home); without, getty asks for a
//! login name and nobody is logged in.
//!
//! Root only, and needs a static busybox (busybox-static), script
//! (bsdutils), ssh-keygen and unshare; skips (and says so) otherwise.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use berth_console::getty::{self, Getty, GettyProgram};
use berth_console::Options;
use common::{console_root, Lines};

const TOOLS: &[&str] = &[
    "/bin/busybox",
    "/usr/bin/script",
    "/usr/bin/ssh-keygen",
    "/usr/bin/unshare",
];

/// Runs `argv` (a getty, its tty the last-but-one argument) chrooted into
/// `root` on a fresh pty, typing `input` after a second; what the pty showed.
fn run_on_pty(root: &Path, argv: &[String], input: &str) -> String {
    let (term, rest) = argv.split_last().expect("term");
    let (_tty, program) = rest.split_last().expect("tty");
    let r = root.display();
    // The pty `script` made is this shell's terminal; getty gets its name.
    let script = format!(
        "set -e\n\
         mount --rbind /dev {r}/dev\n\
         T=$(tty | sed s,^/dev/,,)\n\
         exec chroot {r} {} \"$T\" {term}\n",
        program.join(" ")
    );
    std::fs::write(root.join("getty-test.sh"), script).expect("script");
    let mut child = Command::new("timeout")
        .args(["10", "unshare", "--mount", "--propagation", "private"])
        .args(["script", "-qfec"])
        .arg(format!("sh {r}/getty-test.sh"))
        .arg("/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script");
    let mut stdin = child.stdin.take().expect("stdin");
    std::thread::sleep(Duration::from_millis(1500));
    let _ = stdin.write_all(input.as_bytes());
    std::thread::sleep(Duration::from_millis(1500));
    // Closing the pty's input ends the session (or leaves getty waiting, for timeout).
    drop(stdin);
    let out = child.wait_with_output().expect("script");
    String::from_utf8_lossy(&out.stdout).replace('\r', "") + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn busybox_getty_logs_in_only_where_autologin_says() {
    if let Some(why) = common::skip_reason(TOOLS, "busybox-static bsdutils openssh-client") {
        berth_testkit::skip!("{why}");
        return;
    }
    let statically_linked = Command::new("ldd")
        .arg("/bin/busybox")
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(false);
    if !statically_linked {
        berth_testkit::skip!("/bin/busybox is not static (apt-get install busybox-static)");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let root = console_root(
        dir.path(),
        "#cloud-config\nberth:\n  console:\n    autologin: [ttyS0]\n",
    );
    // A busybox console: busybox and its applets, no agetty, no bash.
    for d in ["bin", "sbin", "dev"] {
        std::fs::create_dir_all(root.join(d)).expect("dir");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox");
    for applet in ["bin/sh", "bin/login", "bin/id", "bin/pwd", "sbin/getty"] {
        std::os::unix::fs::symlink("/bin/busybox", root.join(applet)).expect("applet");
    }

    let mut report = Lines::default();
    let config = berth_console::load_config(&root, &mut report).expect("config");
    let options = Options::new(&root);
    assert_eq!(
        options.getty,
        GettyProgram::Busybox(getty::BUSYBOX_GETTY.into())
    );
    let setup = berth_console::setup(&config, &options).expect("setup");
    assert_eq!(setup.users[0].shell, "/bin/sh");
    // The temp root has no ttyS0 (so setup made no getty): the one the config
    // asks for, on the pty the test makes.
    let serial = Getty {
        tty: "ttyS0".into(),
        term: "vt220".into(),
        autologin: config
            .berth
            .console
            .autologin
            .first()
            .map(|_| "berth".into()),
    };
    getty::write_autologin(&root, std::slice::from_ref(&serial)).expect("autologin script");

    let commands = "echo WHO=$(id -un) AT=$(pwd); exit\n";
    let shown = run_on_pty(&root, &serial.program(&options.getty).argv, commands);
    assert!(shown.contains("WHO=berth AT=/home/berth"), "{shown}");
    assert!(!shown.contains("assword"), "asked for a password: {shown}");

    // Without autologin, getty asks who is there and nobody is logged in.
    let prompt = Getty {
        autologin: None,
        ..serial
    };
    let shown = run_on_pty(&root, &prompt.program(&options.getty).argv, "");
    assert!(shown.contains("login:"), "{shown}");
    assert!(!shown.contains("WHO="), "{shown}");
}
