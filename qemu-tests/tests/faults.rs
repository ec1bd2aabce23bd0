//! Faults, in real boots: what a Berth machine does when things go wrong.
//!
//! One machine (the cloud image on a qcow2 overlay, configured by NoCloud)
//! goes through the faults in sequence, boots shared:
//!
//! 1. Non-privileged services run under the default seccomp profile; a
//!    crash-looping service backs off without holding up the others; a
//!    restart right after a start stops chronyd by its own handler, though
//!    the first SIGTERM came before it had one; a
//!    container past its memory limit is OOM-killed and restarted by its
//!    policy while berthd and PID 1 are shielded from the OOM killer; the
//!    limits are in the service's cgroup (v2); berthd killed with SIGKILL is
//!    restarted by PID 1 and adopts every service (same pid, no restart) and
//!    their logs go on; a full state filesystem leaves berthd and the console
//!    working and the error visible; a user without sudo reads none of the
//!    system's secrets; `berth reboot` under load kills a service that
//!    ignores SIGTERM after its grace period and the machine reboots.
//! 2. A new seed whose user-data is valid YAML with invalid values: the boot
//!    goes on with the last good user-data (the SSH key is in it), and the
//!    errors name file, line and key on the console and in `berth logs`.
//!    Then QEMU is killed while a container writes, `berth config set` runs
//!    in a loop, and images are imported, removed, pruned and pulled from a
//!    real registry in a loop.
//! 3. The next boot reaches ready, the state filesystem recovers, the
//!    config written last is whole, and the image store is consistent.

use std::time::{Duration, Instant};

use qemu_tests::registry::Registry;
use qemu_tests::ssh::Ssh;
use qemu_tests::steps::{
    boot_ready, busybox_archive, expect, ok, refused, service_ready, Archive, BOOT_TIMEOUT, GIB,
};
use qemu_tests::{berth_lines, Artifacts, Boot, Config, Vm, READY_MARKER};

/// The services the faults need, beside the defaults.
const SERVICES: &str = r#"  services:
    crasher:
      image: berth/busybox:latest
      command: [/bin/sh, -c, "echo crasher ran; exit 3"]
      restart: always
    stubborn:
      image: berth/busybox:latest
      # PID 1 of its namespace without a SIGTERM handler: SIGTERM never lands.
      command: [/bin/sh, -c, "trap '' TERM; while true; do sleep 1; done"]
      stop_grace_period: 3s
      restart: always
    hog:
      image: berth/busybox:latest
      # dd's 64 MiB buffer does not fit in 24 MiB: the OOM killer ends it.
      command: [/bin/sh, -c, "echo hog start; exec dd if=/dev/zero of=/dev/null bs=64M count=1"]
      mem_limit: 24m
      restart: on-failure
    ticker:
      image: berth/busybox:latest
      command: [/bin/sh, -c, "unshare -U true || echo userns refused; trap 'exit 0' TERM; i=0; while true; do i=$((i+1)); echo tick $i; sleep 1; done"]
      mem_limit: 24m
      pids_limit: 20
      restart: always
    writer:
      image: berth/busybox:latest
      volumes:
        - /var/lib/faults:/data
      # Writes until told to start (a file the test makes), so boot 1 runs quiet.
      command:
        - /bin/sh
        - -c
        - |
          trap 'exit 0' TERM
          n=0
          while true; do
            if [ -e /data/go ]; then
              n=$((n+1))
              dd if=/dev/urandom of=/data/blob.$((n % 4)) bs=1M count=4 2>/dev/null
            else
              sleep 1
            fi
          done
      restart: always
"#;

/// The default user (with sudo) and `guest`, a user without sudo, both with
/// the test's key.
fn good_user_data(key: &str) -> String {
    format!(
        "#cloud-config\nhostname: faults-good\nssh_authorized_keys:\n  - {key}\n\
         users:\n  - default\n  - name: guest\n    ssh_authorized_keys: [\"{key}\"]\n\
         berth:\n{SERVICES}"
    )
}

/// Valid YAML, invalid values: a bad CIDR (line 7) and a `depends_on`
/// cycle (line 14). (An unknown key stops the reading of a document at the
/// first one, so it has its own unit test: init's
/// `nocloud::tests::user_data_with_errors_falls_back_to_the_last_good_copy`.)
/// No SSH key: only the last good user-data lets the test in.
/// The host's image store, from the console.
const STORE: &str = "/proc/1/root/var/lib/berth";

/// `berth config set` as fast as it goes (the hostname: no service restarts
/// for it). Run by `sh -c "…"`, hence the escaped `$`.
const CONFIG_LOOP: &str =
    "i=0; while true; do i=\\$((i+1)); berth config set hostname faults-\\$i; done";

/// Imports under new names, with a removal, a prune and a pull of
/// `pulled` (from Debian's docker-registry on the host) every third one.
fn image_loop(pulled: &str) -> String {
    format!(
        "i=0; while true; do i=\\$((i+1)); \
         berth image import --root {STORE} --name faults/busybox:\\$i /opt/busybox.tar; \
         if [ \\$((i % 3)) = 0 ]; then berth image rm --root {STORE} faults/busybox:\\$((i-2)); \
         berth image prune --root {STORE}; \
         berth image pull --insecure --root {STORE} {pulled}; fi; done"
    )
}

const BAD_USER_DATA: &str = r#"#cloud-config
hostname: faults-bad
berth:
  network:
    interfaces:
      eth1:
        address: 10.0.0.300/24
  services:
    web:
      image: berth/busybox:latest
      depends_on: [api]
    api:
      image: berth/busybox:latest
      depends_on: [web]
"#;

/// One service's entry in `berth ps -o json`.
fn service(vm: &Vm, ssh: &Ssh, name: &str) -> serde_json::Value {
    let json = ok(vm, ssh, "sudo berth ps -o json");
    let all: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("berth ps -o json: {e}: {json}"));
    all.as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no service {name} in {json}"))
}

/// Polls `cond` over SSH until it holds; panics with the console after `timeout`.
fn wait_until(vm: &Vm, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > timeout {
            panic!(
                "{what}: not after {timeout:?}\n{}",
                berth_lines(&vm.transcript())
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!("{what}: after {:.1}s", start.elapsed().as_secs_f64());
}

/// The number in the last `tick N` line of the ticker's log.
fn last_tick(vm: &Vm, ssh: &Ssh) -> u64 {
    let logs = ok(vm, ssh, "sudo berth logs -n 3 ticker");
    logs.lines()
        .rev()
        .find_map(|l| {
            l.split_once("tick ")
                .and_then(|(_, n)| n.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no tick in the ticker's log: {logs}"))
}

fn crash_loop_backs_off_and_the_rest_is_ready(vm: &Vm, ssh: &Ssh) {
    // The ready line came though crasher never is.
    let transcript = vm.transcript();
    let ready = transcript
        .lines()
        .find(|l| l.contains(READY_MARKER))
        .expect("the ready line");
    assert!(
        ready.contains("crasher") && ready.contains("ticker"),
        "the ready line does not account for crasher and ticker: {ready}"
    );
    let first = service(vm, ssh, "crasher");
    std::thread::sleep(Duration::from_secs(10));
    let later = service(vm, ssh, "crasher");
    let (a, b) = (
        first["restarts"].as_u64().expect("restarts"),
        later["restarts"].as_u64().expect("restarts"),
    );
    eprintln!("crasher: {a} restarts, {b} ten seconds later");
    assert!(a >= 2, "crasher was not restarted: {first}");
    // An exit a second would be 10 more restarts; backoff doubles the wait.
    assert!(
        b - a <= 3,
        "crasher restarts without backing off: {a} then {b}"
    );
    let table = ok(vm, ssh, "sudo berth ps");
    let row = table
        .lines()
        .find(|l| l.starts_with("crasher"))
        .unwrap_or_else(|| panic!("berth ps does not show crasher:\n{table}"));
    // A crash loop passes through every one of these phases; `berth ps` can
    // land in any of them (CI once caught crasher at "starting").
    assert!(
        ["starting", "running", "restarting", "exited"]
            .iter()
            .any(|phase| row.contains(phase)),
        "berth ps shows crasher in no phase of a crash loop: {row}"
    );
    for name in ["network", "ntp", "ticker", "stubborn"] {
        let s = service(vm, ssh, name);
        assert_eq!(s["ready"], true, "{name} is not ready beside crasher: {s}");
    }
}

/// Non-privileged services (the network and ntp services, and ticker)
/// run under the default seccomp profile; the privileged console does not.
/// In ticker, `unshare -U` (a user namespace, which needs no capability) is
/// refused.
fn seccomp_confines_the_unprivileged_services(vm: &Vm, ssh: &Ssh) {
    for (name, mode) in [
        ("network", "2"),
        ("ntp", "2"),
        ("ticker", "2"),
        ("console", "0"),
    ] {
        let pid = service(vm, ssh, name)["pid"].as_i64().expect("pid");
        let status = ok(vm, ssh, &format!("sudo grep Seccomp: /proc/{pid}/status"));
        assert_eq!(
            status.split_whitespace().nth(1),
            Some(mode),
            "{name}: {status}"
        );
    }
    let logs = ok(vm, ssh, "sudo berth logs ticker");
    assert!(
        logs.contains("Operation not permitted") && logs.contains("userns refused"),
        "unshare -U was not refused in ticker: {logs}"
    );
}

/// A restart a moment after a start: the stop reaches chronyd before it has
/// its SIGTERM handler, and the kernel drops it (a namespace's init gets only
/// the signals it handles). berthd sends it again once the handler is in, so
/// chronyd stops itself rather than being killed at the end of its grace period.
fn a_stop_right_after_a_start_is_not_lost(vm: &Vm, ssh: &Ssh) {
    ok(
        vm,
        ssh,
        "sudo berth service restart ntp && sudo berth service restart ntp",
    );
    let logs = ok(vm, ssh, "sudo berth logs berthd");
    let stops: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("ntp: stopped") || l.contains("ntp: still running"))
        .collect();
    let last = &stops[stops.len().saturating_sub(2)..];
    assert!(
        last.len() == 2
            && last
                .iter()
                .all(|l| l.contains("ntp: stopped (exit code 0)")),
        "ntp was not stopped by its own handler both times: {stops:#?}"
    );
}

fn oom_kill_is_restarted_and_the_managers_are_shielded(vm: &Vm, ssh: &Ssh) {
    wait_until(
        vm,
        "hog OOM-killed and restarted",
        Duration::from_secs(120),
        || {
            let hog = service(vm, ssh, "hog");
            hog["restarts"].as_u64().unwrap_or(0) >= 1
        },
    );
    let logs = ok(vm, ssh, "sudo berth logs hog");
    assert!(
        logs.matches("hog start").count() >= 2,
        "hog did not run again after the OOM kill: {logs}"
    );
    let transcript = vm.transcript();
    assert!(
        transcript.contains("Memory cgroup out of memory: Killed process")
            && transcript.contains("hog: killed by SIGKILL"),
        "the kernel's OOM kill of hog is not on the console:\n{}",
        berth_lines(&transcript)
    );
    // The limits are in the cgroup (v2) of a running service.
    let cgroup = "/proc/1/root/sys/fs/cgroup/berth/ticker";
    let limits = ok(
        vm,
        ssh,
        &format!("sudo cat {cgroup}/memory.max {cgroup}/pids.max"),
    );
    assert_eq!(limits, format!("{}\n20\n", 24u64 << 20));
    // The OOM killer takes any service before berthd, and never PID 1.
    let berthd = berthd_pid(vm, ssh);
    let scores = ok(
        vm,
        ssh,
        &format!("sudo cat /proc/1/oom_score_adj /proc/{berthd}/oom_score_adj"),
    );
    assert_eq!(scores, "-1000\n-999\n");
    let ticker = service(vm, ssh, "ticker")["pid"].as_i64().expect("pid");
    assert_eq!(
        ok(vm, ssh, &format!("sudo cat /proc/{ticker}/oom_score_adj")).trim(),
        "0",
        "a service inherited berthd's shield from the OOM killer"
    );
}

/// berthd's pid: PID 1's child running `… daemon`.
fn berthd_pid(vm: &Vm, ssh: &Ssh) -> u32 {
    let out = ok(
        vm,
        ssh,
        "for p in $(cat /proc/1/task/1/children); do tr '\\0' ' ' < /proc/$p/cmdline | grep -q ' daemon' && echo $p; done",
    );
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("berthd's pid: {out:?}"))
}

fn berthd_killed_readopts_everything(vm: &mut Vm, ssh: &Ssh) {
    let names = ["network", "ntp", "ticker", "stubborn", "console", "docker"];
    let before: Vec<serde_json::Value> = names.iter().map(|n| service(vm, ssh, n)).collect();
    let tick_before = last_tick(vm, ssh);
    let old = berthd_pid(vm, ssh);
    ok(vm, ssh, &format!("sudo kill -KILL {old}"));
    expect(vm, "berthd exited (killed by signal 9", BOOT_TIMEOUT);
    wait_until(vm, "berthd answers again", BOOT_TIMEOUT, || {
        ssh.run("sudo berth ps -o json")
            .is_ok_and(|o| o.status.success())
    });
    assert_ne!(berthd_pid(vm, ssh), old);
    for (name, was) in names.iter().zip(&before) {
        let now = service(vm, ssh, name);
        assert_eq!(
            (&now["pid"], &now["restarts"]),
            (&was["pid"], &was["restarts"]),
            "{name} was restarted rather than adopted: before {was}, after {now}"
        );
        assert_eq!(now["adopted"], true, "{name}: {now}");
    }
    // The ticker's output is captured again: later ticks reach its log.
    wait_until(
        vm,
        "the ticker's log goes on",
        Duration::from_secs(60),
        || last_tick(vm, ssh) > tick_before + 3,
    );
}

fn full_state_keeps_berthd_and_the_console_working(vm: &Vm, ssh: &Ssh) {
    // Fill the state filesystem (the console's /opt is on it) to the last block:
    // all but 16 MiB of it allocated without being written (zeros written
    // through the disk would make the VM's qcow2 as big on the host, 3.9 GB
    // of the suite's disk), the rest written.
    let _ = ssh.run(
        "sudo sh -c 'set -- $(stat -f -c \"%f %S\" /opt) \
         && fallocate -l $(($1 * $2 - 16777216)) /opt/fill; \
         dd if=/dev/zero of=/opt/fill.rest bs=1M 2>/dev/null; sync'",
    );
    let df = ok(vm, ssh, "df -B1 --output=avail /opt | tail -1");
    eprintln!("state full: {} bytes left", df.trim());
    // The hostname: a change every service lives through (berth.environment
    // would restart them all, the console with this session).
    let set = ssh
        .run("sudo berth config set hostname faults-full")
        .expect("ssh");
    let stderr = String::from_utf8_lossy(&set.stderr);
    assert!(
        !set.status.success() && stderr.contains("No space left"),
        "berth config set on a full disk: {set:?}"
    );
    // berthd answers, services run, the console takes new logins.
    assert_eq!(service(vm, ssh, "ticker")["state"], "running");
    ok(vm, ssh, "sudo berth logs -n 1 berthd");
    assert_eq!(ok(vm, ssh, "echo still here").trim(), "still here");
    // The console hears which logs cannot be written (their lines are dropped
    // and counted, never blocking the service; which log is first depends on
    // how much room each file's last block had)...
    let failed_log = |transcript: &str| {
        transcript.lines().find_map(|l| {
            let rest = l.split_once("berthd: logs: ")?.1;
            let (service, what) = rest.split_once(": ")?;
            what.contains("No space left on device")
                .then(|| service.to_string())
        })
    };
    wait_until(
        vm,
        "the console hears of the full disk",
        Duration::from_secs(180),
        || {
            // A login is a few lines in the console's log.
            let _ = ssh.run("true");
            failed_log(&vm.transcript()).is_some()
        },
    );
    let service = failed_log(&vm.transcript()).unwrap_or_default();
    ok(vm, ssh, "sudo rm -f /opt/fill /opt/fill.rest");
    // ...and that it is written again once there is room.
    let again = format!("berthd: logs: {service}: writing again");
    wait_until(vm, &format!("`{again}`"), Duration::from_secs(120), || {
        let _ = ssh.run("true");
        vm.transcript().contains(&again)
    });
    assert_eq!(
        ok(vm, ssh, "sudo berth config get hostname").trim(),
        "faults-good",
        "the failed change left something behind"
    );
}

/// A user without sudo in the console reads none of the system's secrets
/// (config sources and the cached user-data, SSH host keys, what the host
/// applied, the slot records) nor another user's home, and berthd's API
/// refuses them.
fn a_user_without_sudo_reads_no_secrets(vm: &Vm, ssh: &Ssh) {
    let secrets = ok(
        vm,
        ssh,
        "sudo find /var/lib/berth/config /var/lib/berth/ssh /var/lib/berth/os \
         /run/berth/host /home/berth/.ssh -type f",
    );
    // Public keys are public.
    let secrets: Vec<&str> = secrets.lines().filter(|f| !f.ends_with(".pub")).collect();
    for expected in [
        "/var/lib/berth/config/",
        "/var/lib/berth/ssh/",
        "/run/berth/host/applied.json",
        "/var/lib/berth/os/slots.json",
        "/home/berth/.ssh/authorized_keys",
    ] {
        assert!(
            secrets.iter().any(|f| f.starts_with(expected)),
            "no {expected} in the console to check: {secrets:?}"
        );
    }
    let guest = ssh.as_user("guest");
    assert_eq!(ok(vm, &guest, "id -un").trim(), "guest");
    let readable = ok(
        vm,
        &guest,
        &format!(
            "for f in {}; do cat \"$f\" >/dev/null 2>&1 && echo \"$f\"; done; true",
            secrets.join(" ")
        ),
    );
    assert!(
        readable.trim().is_empty(),
        "a user without sudo reads: {readable}"
    );
    refused(vm, &guest, "sudo -n true");
    let said = refused(vm, &guest, "berth ps");
    assert!(
        said.contains("ermission denied"),
        "berth ps as guest: {said}"
    );
}

/// `berth reboot` while the machine is busy (the writer container and two
/// CPU hogs in the console): every service stops, the one that ignores
/// SIGTERM is killed after its grace period, and the machine reboots
/// (QEMU runs with -no-reboot: a reboot ends it).
fn reboot_under_load_kills_what_ignores_sigterm(mut vm: Vm, ssh: &Ssh) {
    ok(&vm, ssh, "sudo touch /proc/1/root/var/lib/faults/go");
    for _ in 0..2 {
        ok(
            &vm,
            ssh,
            "nohup sh -c 'while :; do :; done' >/dev/null 2>&1 &",
        );
    }
    let _ = ssh.run("sudo berth reboot");
    vm.wait_exit(Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("{e}"));
    let transcript = vm.transcript();
    let killed: Vec<&str> = transcript
        .lines()
        .filter(|l| l.contains("still running after its grace period"))
        .collect();
    assert!(
        killed.len() == 1 && killed[0].contains("stubborn"),
        "only stubborn should need killing at shutdown: {killed:?}\n{}",
        berth_lines(&transcript)
    );
    assert!(
        transcript.contains("reboot: Restarting system"),
        "the machine did not reboot:\n{}",
        berth_lines(&transcript)
    );
}

#[test]
fn faults_in_real_boots() {
    const TEST: &str = "faults_in_real_boots";
    let Some(qcow2) = Artifacts::get(Artifacts::QCOW2, TEST) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let port = qemu_tests::free_port().expect("port");
    let ssh = Ssh::new(dir.path(), port, "berth").expect("ssh key");
    let disk = dir.path().join("vm.qcow2");
    qemu_tests::overlay(&qcow2, &disk, 5 * GIB).expect("overlay");
    let seed = dir.path().join("seed.iso");
    qemu_tests::nocloud_seed(
        &seed,
        &good_user_data(ssh.public_key()),
        "instance-id: faults-1\n",
    )
    .expect("seed");
    let config = |name: &str| {
        Config::new(name, Boot::Disk)
            .drive(&disk, false)
            .drive(&seed, true)
            .forward(port, 22)
    };

    // Boot 1.
    let mut vm = boot_ready(&config("faults-1"), &ssh);
    // ntp starts after the ready line; the checks below read it.
    service_ready(&vm, &ssh, "ntp");
    crash_loop_backs_off_and_the_rest_is_ready(&vm, &ssh);
    seccomp_confines_the_unprivileged_services(&vm, &ssh);
    a_stop_right_after_a_start_is_not_lost(&vm, &ssh);
    oom_kill_is_restarted_and_the_managers_are_shielded(&vm, &ssh);
    berthd_killed_readopts_everything(&mut vm, &ssh);
    full_state_keeps_berthd_and_the_console_working(&vm, &ssh);
    a_user_without_sudo_reads_no_secrets(&vm, &ssh);
    reboot_under_load_kills_what_ignores_sigterm(vm, &ssh);

    // Boot 2: a seed with errors in its values.
    qemu_tests::nocloud_seed(&seed, BAD_USER_DATA, "instance-id: faults-2\n").expect("seed");
    let mut vm = Vm::start(&config("faults-2")).expect("start qemu");
    expect(&mut vm, READY_MARKER, BOOT_TIMEOUT);
    ssh.wait(BOOT_TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "the last good user-data's key does not let us in: {e}\n{}",
            berth_lines(&vm.transcript())
        )
    });
    assert_eq!(ok(&vm, &ssh, "hostname").trim(), "faults-good");
    let logs = ok(&vm, &ssh, "sudo berth logs berthd");
    let transcript = vm.transcript();
    for (what, needle) in [
        ("the bad CIDR", "user-data.yml:7:"),
        (
            "the key with the bad CIDR",
            "berth.network.interfaces.eth1.address",
        ),
        ("the cycle", "dependency cycle"),
        ("the line of the cycle", "user-data.yml:14:"),
        ("the fallback", "the last good user-data"),
    ] {
        assert!(
            transcript.contains(needle),
            "the console does not name {what} (`{needle}`):\n{}",
            berth_lines(&transcript)
        );
        assert!(
            logs.contains(needle),
            "berth logs berthd does not name {what} (`{needle}`):\n{logs}"
        );
    }
    // Heavy writes, then the plug is pulled: the writer container, a loop of
    // `berth config set`, and a loop of image imports beside removals and
    // prunes in the host's image store.
    let archive = busybox_archive(dir.path(), Archive::Oci);
    let registry = Registry::start(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let pulled = registry
        .push(&archive, "faults/pulled", "latest")
        .unwrap_or_else(|e| panic!("{e}"));
    let out = ssh
        .run_with_input("sudo sh -c 'cat > /opt/busybox.tar'", Some(&archive))
        .expect("ssh");
    assert!(out.status.success(), "copying the image archive: {out:?}");
    ok(&vm, &ssh, "sudo touch /proc/1/root/var/lib/faults/go");
    ok(
        &vm,
        &ssh,
        &format!("sudo sh -c 'nohup sh -c \"{CONFIG_LOOP}\" >/dev/null 2>&1 &'"),
    );
    ok(
        &vm,
        &ssh,
        &format!(
            "sudo sh -c 'nohup sh -c \"{}\" >/tmp/image-loop.log 2>&1 &'",
            image_loop(&pulled)
        ),
    );
    wait_until(
        &vm,
        "a few imports and a pull done",
        Duration::from_secs(120),
        || {
            ssh.run(&format!(
                "sudo berth image ls --root {STORE} | grep -q faults/pulled"
            ))
            .is_ok_and(|o| o.status.success())
        },
    );
    let counter = ok(&vm, &ssh, "sudo berth config get hostname");
    eprintln!("hostname set before the kill: {}", counter.trim());
    drop(vm);

    // Boot 3: recovery.
    let vm = boot_ready(&config("faults-3"), &ssh);
    let transcript = vm.transcript();
    assert!(
        transcript.contains("was not cleanly unmounted"),
        "stage 1 did not notice the crash:\n{}",
        berth_lines(&transcript)
    );
    let local = ok(
        &vm,
        &ssh,
        "sudo cat /proc/1/root/var/lib/berth/config/local.yml",
    );
    let after = ok(&vm, &ssh, "sudo berth config get hostname");
    let n: u64 = after
        .trim()
        .trim_start_matches("faults-")
        .parse()
        .unwrap_or_else(|e| panic!("hostname after the crash: {after}: {e}\n{local}"));
    assert!(n >= 1, "{local}");
    let leftovers = ok(&vm, &ssh, "sudo ls -a /proc/1/root/var/lib/berth/config");
    eprintln!(
        "config directory after the crash: {}",
        leftovers.replace('\n', " ")
    );
    assert_eq!(service(&vm, &ssh, "writer")["state"], "running");
    // The image store is consistent: the index parses, and every image it
    // names has its manifest and config; a new import works.
    let images = ok(&vm, &ssh, &format!("sudo berth image ls --root {STORE}"));
    eprintln!("image store after the crash:\n{images}");
    let names: Vec<&str> = images
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(!names.is_empty(), "no image survived the crash:\n{images}");
    for name in &names {
        ok(
            &vm,
            &ssh,
            &format!("sudo berth image inspect --root {STORE} {name} >/dev/null"),
        );
    }
    ok(
        &vm,
        &ssh,
        &format!("sudo berth image import --root {STORE} --name faults/after:1 /opt/busybox.tar"),
    );
    ok(&vm, &ssh, &format!("sudo berth image prune --root {STORE}"));
    ok(
        &vm,
        &ssh,
        &format!("sudo berth image inspect --root {STORE} faults/after:1"),
    );
}
