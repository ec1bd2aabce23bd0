//! The steps QEMU tests take again and again, each failing the test with
//! the machine's own lines: wait for a console line, run a command over SSH
//! that must succeed (or must be refused), boot to ready, power off, and
//! hand the machine the busybox test image.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::ssh::Ssh;
use crate::{berth_lines, Config, Vm, READY_MARKER};

/// How long a boot to ready may take under TCG on a busy machine.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a clean poweroff may take.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(120);
pub const GIB: u64 = 1 << 30;

/// Waits for `pattern` on the console after the last match; logs when it
/// came and returns that.
pub fn expect(vm: &mut Vm, pattern: &str, timeout: Duration) -> Duration {
    let at = vm
        .expect(pattern, timeout)
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{}: `{pattern}` at {:.1}s", vm.name(), at.as_secs_f64());
    at
}

/// Like [`expect`], but anywhere in the transcript: for lines that may come
/// before or after another awaited line.
pub fn expect_anywhere(vm: &mut Vm, pattern: &str, timeout: Duration) -> Duration {
    let at = vm
        .expect_anywhere(pattern, timeout)
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{}: `{pattern}` at {:.1}s", vm.name(), at.as_secs_f64());
    at
}

/// Runs `remote` over SSH, which must succeed; returns its stdout.
pub fn ok(vm: &Vm, ssh: &Ssh, remote: &str) -> String {
    ssh.check(remote)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", vm.name(), berth_lines(&vm.transcript())))
}

/// Runs `remote` over SSH, which must fail; returns what it said.
pub fn refused(vm: &Vm, ssh: &Ssh, remote: &str) -> String {
    let out = ssh
        .run(remote)
        .unwrap_or_else(|e| panic!("{}: {e}", vm.name()));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "{}: `{remote}` should have been refused; it said:\n{said}\n{}",
        vm.name(),
        berth_lines(&vm.transcript())
    );
    said
}

/// Runs `remote` until it succeeds (e.g. for what runcmd or a service does
/// after the ready line); returns its stdout.
pub fn eventually(vm: &Vm, ssh: &Ssh, remote: &str, timeout: Duration) -> String {
    let start = Instant::now();
    let out = ssh
        .wait_for(remote, timeout)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", vm.name(), berth_lines(&vm.transcript())));
    eprintln!(
        "{}: `{remote}` after {:.1}s",
        vm.name(),
        start.elapsed().as_secs_f64()
    );
    out
}

/// Waits until berthd lists `service` as ready: for a service that starts
/// after the ready line (`after_ready`, as the default ntp does).
pub fn service_ready(vm: &Vm, ssh: &Ssh, service: &str) {
    eventually(
        vm,
        ssh,
        &format!(
            "sudo berth ps -o json | tr -d ' \\n' | grep -q '\"name\":\"{service}\",[^}}]*\"ready\":true'"
        ),
        BOOT_TIMEOUT,
    );
}

/// Starts the machine and waits for the ready line and for SSH.
pub fn boot_ready(config: &Config, ssh: &Ssh) -> Vm {
    let mut vm = Vm::start(config).unwrap_or_else(|e| panic!("start qemu: {e}"));
    expect(&mut vm, READY_MARKER, BOOT_TIMEOUT);
    ssh.wait(BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", vm.name(), berth_lines(&vm.transcript())));
    vm
}

/// `berth poweroff` over SSH, then waits for QEMU to exit.
pub fn poweroff(mut vm: Vm, ssh: &Ssh) {
    // The session may end with the machine before ssh hears the exit code.
    let _ = ssh.run("sudo berth poweroff");
    vm.wait_exit(SHUTDOWN_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
}

pub use berth_testkit::skopeo::Archive;

/// The busybox image the build made (in `BERTH_IMAGE_STORE`), written into
/// `dir` as `archive` says. A skopeo that fails fails the test, with its
/// own words.
pub fn busybox_archive(dir: &Path, archive: Archive) -> PathBuf {
    let store = std::env::var_os("BERTH_IMAGE_STORE")
        .expect("BERTH_IMAGE_STORE names the built image store (`cargo xtask test` sets it)");
    berth_testkit::skopeo::busybox_archive(Path::new(&store), "berth/busybox:latest", dir, archive)
}

/// `docker load`s an archive from [`busybox_archive`] over SSH.
pub fn docker_load(vm: &Vm, ssh: &Ssh, archive: &Path) {
    let out = ssh
        .run_with_input("docker load", Some(archive))
        .unwrap_or_else(|e| panic!("{}: {e}", vm.name()));
    assert!(
        out.status.success(),
        "{}: docker load: {}",
        vm.name(),
        String::from_utf8_lossy(&out.stderr)
    );
}
