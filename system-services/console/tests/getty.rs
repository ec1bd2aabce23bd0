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

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
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
/// `root` on a fresh pty; once the pty shows `ready`, types `input`, and once
/// it shows `done` (after `ready`), ends the session; what the pty showed.
/// (getty flushes what is typed before it is ready, hence the wait.)
fn run_on_pty(root: &Path, argv: &[String], ready: &str, input: &str, done: &str) -> String {
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
    let mut stdout = child.stdout.take().expect("stdout");
    let shown = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let shown = Arc::clone(&shown);
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                shown.lock().expect("lock").extend_from_slice(&buf[..n]);
            }
        })
    };
    let text = || String::from_utf8_lossy(&shown.lock().expect("lock")).replace('\r', "");
    // Waits for `what` after byte `from` of the output; `timeout` (above)
    // ends a session that never shows it, and then this gives up.
    let wait_for = |what: &str, from: usize| -> usize {
        loop {
            let now = text();
            if let Some(at) = now.get(from..).and_then(|rest| rest.find(what)) {
                return from + at + what.len();
            }
            if reader.is_finished() {
                return now.len();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let after_ready = wait_for(ready, 0);
    let _ = stdin.write_all(input.as_bytes());
    wait_for(done, after_ready);
    // Done: closing the pty's input ends a shell; a getty still waiting for
    // a login name ends with `timeout`'s SIGTERM, passed on to script.
    drop(stdin);
    // SAFETY: kill(2) on the `timeout` this test started and has not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let out = child.wait_with_output().expect("script");
    let _ = reader.join();
    text() + &String::from_utf8_lossy(&out.stderr)
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
    let shown = run_on_pty(
        &root,
        &serial.program(&options.getty).argv,
        "$ ",
        commands,
        // Not "WHO=": the pty echoes the command line, which has that too.
        "AT=/",
    );
    assert!(shown.contains("WHO=berth AT=/home/berth"), "{shown}");
    assert!(!shown.contains("assword"), "asked for a password: {shown}");

    // Without autologin, getty asks who is there and nobody is logged in.
    let prompt = Getty {
        autologin: None,
        ..serial
    };
    let shown = run_on_pty(
        &root,
        &prompt.program(&options.getty).argv,
        "login:",
        "",
        "",
    );
    assert!(shown.contains("login:"), "{shown}");
    assert!(!shown.contains("WHO="), "{shown}");
}
