//! Upgrades of an installed machine, as operators run them: OS images
//! pushed with skopeo to Debian's docker-registry on the host, pulled by
//! `berth os upgrade` in the VM, booted on trial by real GRUB from the disk,
//! committed or failed by PID 1. The machine reboots by itself inside one
//! QEMU (with an i6300esb watchdog); nothing in a test helps it back.
//!
//! The test OS images come from `cargo xtask test` (`BERTH_TEST_OS`, see
//! xtask `os::test_os_images`): `next` (a newer version), `panic`, `hang`
//! and `unhealthy`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use qemu_tests::registry::Registry;
use qemu_tests::ssh::Ssh;
use qemu_tests::steps::{expect, ok, refused, BOOT_TIMEOUT, GIB};
use qemu_tests::{berth_lines, Artifacts, Boot, Config, Vm, READY_MARKER};

/// A trial boot's health timeout in these tests (the default is 5 minutes).
const HEALTH_TIMEOUT_SECS: u64 = 60;

/// Debian's docker-registry on the host, for the OS images.
fn registry(dir: &Path) -> Registry {
    Registry::start(dir).unwrap_or_else(|e| panic!("{e}"))
}

/// Pushes an OS image archive as `berth/os:<tag>`; the reference the VM pulls.
fn push(registry: &Registry, archive: &Path, tag: &str) -> String {
    registry
        .push(archive, "berth/os", tag)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The test OS images' directory, or `None` after recording the skip.
fn test_os(test: &str) -> Option<PathBuf> {
    let dir = Artifacts::get("BERTH_TEST_OS", test)?;
    Some(dir)
}

/// A machine installed from the cloud image, ready, with the test's key.
/// `engine`: whether it runs the docker engine. Only the test that keeps the
/// user's containers across an upgrade needs it; without it every boot of the
/// fallback and power-cut tests is half a minute of emulated CPU shorter.
struct Machine {
    dir: tempfile::TempDir,
    ssh: Ssh,
    disk: PathBuf,
    seed: PathBuf,
    name: String,
}

impl Machine {
    fn new(name: &str, qcow2: &Path, engine: bool) -> Machine {
        Machine::with(name, qcow2, engine, "")
    }

    /// `berth`: more lines of the `berth:` section, indented two spaces.
    fn with(name: &str, qcow2: &Path, engine: bool, berth: &str) -> Machine {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = qemu_tests::free_port().expect("port");
        let ssh = Ssh::new(dir.path(), port, "berth").expect("ssh key");
        let disk = dir.path().join("vm.qcow2");
        qemu_tests::overlay(qcow2, &disk, 6 * GIB).expect("overlay");
        let seed = dir.path().join("seed.iso");
        qemu_tests::nocloud_seed(
            &seed,
            &format!(
                "#cloud-config\nhostname: {name}\nssh_authorized_keys:\n  - {}\nberth:\n  upgrade:\n    health_timeout: {HEALTH_TIMEOUT_SECS}s\n    health_check: test -d /home/berth\n{berth}{}",
                ssh.public_key(),
                if engine { "" } else { "  services:\n    docker: null\n" }
            ),
            &format!("instance-id: {name}\n"),
        )
        .expect("seed");
        Machine {
            dir,
            ssh,
            disk,
            seed,
            name: name.to_string(),
        }
    }

    fn config(&self) -> Config {
        Config::new(&self.name, Boot::Disk)
            .drive(&self.disk, false)
            .drive(&self.seed, true)
            .forward(self.ssh.port, 22)
            .watchdog()
            .reboots()
    }

    fn boot(&self) -> Vm {
        let mut vm = Vm::start(&self.config()).expect("start qemu");
        expect(&mut vm, READY_MARKER, BOOT_TIMEOUT);
        self.wait_ssh(&vm);
        vm
    }

    fn wait_ssh(&self, vm: &Vm) {
        self.ssh
            .wait(BOOT_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}\n{}", berth_lines(&vm.transcript())));
    }

    /// `berth os list -o json`, parsed.
    fn slots(&self, vm: &Vm) -> serde_json::Value {
        let text = ok(vm, &self.ssh, "sudo berth os list -o json");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }
}

/// The slot entry of `list` for `slot`.
fn slot<'a>(list: &'a serde_json::Value, slot: &str) -> &'a serde_json::Value {
    list["slots"]
        .as_array()
        .and_then(|s| s.iter().find(|e| e["slot"] == slot))
        .unwrap_or_else(|| panic!("no slot {slot} in {list}"))
}

fn version_of(archive: &Path) -> String {
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--format",
            "{{index .Labels \"io.berth.os.version\"}}",
        ])
        .arg(format!("oci-archive:{}", archive.display()))
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What GRUB's menu prints on the serial console while it counts down.
const GRUB_MENU: &str = "will be executed automatically";

#[test]
fn an_upgrade_boots_on_trial_commits_and_rolls_back() {
    const TEST: &str = "an_upgrade_boots_on_trial_commits_and_rolls_back";
    let (Some(qcow2), Some(images)) = (Artifacts::get(Artifacts::QCOW2, TEST), test_os(TEST))
    else {
        return;
    };
    let m = Machine::new("upgrade-ok", &qcow2, true);
    let registry = registry(m.dir.path());
    let next_archive = images.join("next.tar");
    let next_version = version_of(&next_archive);
    let next = push(&registry, &next_archive, "next");

    let mut vm = m.boot();
    // An ordinary boot arms the watchdog too: stage 2 opens it once it has
    // loaded the drivers of the devices present.
    assert!(
        vm.transcript().contains("hardware watchdog armed"),
        "{}",
        berth_lines(&vm.transcript())
    );
    let v1 = ok(&vm, &m.ssh, "berth os version -o json");
    let v1: serde_json::Value = serde_json::from_str(&v1).expect("json");
    assert_eq!(v1["booted_from"], "A", "{v1}");
    let v1 = v1["version"].as_str().expect("version").to_string();
    let list = m.slots(&vm);
    assert_eq!(slot(&list, "A")["status"], "committed", "{list}");
    assert_eq!(slot(&list, "A")["version"], v1.as_str(), "{list}");
    assert_eq!(
        slot(&list, "B")["status"],
        serde_json::Value::Null,
        "{list}"
    );
    // What the user has: a file in /home and the engine's state.
    // (An image made on the spot: no registry needed for a container.)
    ok(
        &vm,
        &m.ssh,
        "echo kept > /home/berth/kept.txt && docker volume create keepvol \
         && tar cf - --files-from /dev/null | docker import - keeper:1 \
         && docker create --name keeper -v keepvol:/data keeper:1 /none",
    );
    // Nothing to roll back to yet.
    let said = refused(&vm, &m.ssh, "sudo berth os rollback --no-reboot");
    assert!(said.contains("nothing to roll back to"), "{said}");

    // The state partition with less room than the image's layer (160 MiB):
    // the layer streams into the slot, so the upgrade needs none for it.
    // Filled up to 48 MiB, the blocks ext4 keeps for root included where
    // sudo may take them (as the upgrade, run the same way, then could).
    let room = ok(
        &vm,
        &m.ssh,
        "sudo sh -c 'd=/var/lib/berth/os; mkdir -p $d && stat -f -c %T $d \
         && set -- $(stat -f -c \"%f %a %S\" $d) \
         && { { fallocate -l $(($1 * $3 / 1048576 - 48))M $d/filler 2>/dev/null && echo all; } \
              || { fallocate -l $(($2 * $3 / 1048576 - 48))M $d/filler && echo unreserved; }; } \
         && set -- $(stat -f -c \"%f %a %S\" $d) \
         && echo $(($1 * $3 / 1048576)) $(($2 * $3 / 1048576))'",
    );
    let room: Vec<&str> = room.split_whitespace().collect();
    let [kind, filled, all_free, unreserved_free] = room[..] else {
        panic!("{room:?}");
    };
    assert_eq!(kind, "ext2/ext3", "the state partition: {room:?}");
    let free: u64 = match filled {
        "all" => all_free.parse().expect("MiB"),
        _ => unreserved_free.parse().expect("MiB"),
    };
    assert!(free < 64, "{room:?}: {free} MiB free for the upgrade");

    // The upgrade: pull, write slot B, arm, reboot — into the trial, which commits.
    let started = Instant::now();
    let out = m
        .ssh
        .run(&format!("sudo berth os upgrade --insecure {next}"))
        .expect("ssh");
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!("rebooting into {next_version} (slot B) on trial")),
        "{said}\n{}",
        berth_lines(&vm.transcript())
    );
    // GRUB names the version the slot holds (its version.cfg, written with
    // its kernel), not the one that installed the disk.
    expect(
        &mut vm,
        &format!("Booting `Berth {next_version}'"),
        BOOT_TIMEOUT,
    );
    expect(&mut vm, "berth.trial=1", BOOT_TIMEOUT);
    expect(
        &mut vm,
        &format!("trial boot of {next_version} in slot B"),
        BOOT_TIMEOUT,
    );
    expect(&mut vm, READY_MARKER, BOOT_TIMEOUT);
    expect(
        &mut vm,
        &format!("OS {next_version} in slot B is healthy and committed"),
        BOOT_TIMEOUT,
    );
    eprintln!(
        "upgrade: {:.0}s from `berth os upgrade` to the commit",
        started.elapsed().as_secs_f64()
    );
    m.wait_ssh(&vm);
    assert_eq!(
        ok(&vm, &m.ssh, "berth os version").trim(),
        format!("Berth {next_version} (slot B)")
    );
    // The new version boots with its own kernel arguments (its image's
    // label, in B's version.cfg), not those the disk was installed with:
    // the `next` test image reboots 5 s after a panic instead of 10.
    let cmdline = ok(&vm, &m.ssh, "cat /proc/cmdline");
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    assert!(
        words.contains(&"panic=5") && !words.contains(&"panic=10"),
        "{cmdline}"
    );
    ok(&vm, &m.ssh, "sudo rm /var/lib/berth/os/filler");
    let list = m.slots(&vm);
    assert_eq!(slot(&list, "B")["status"], "committed", "{list}");
    assert_eq!(slot(&list, "B")["running"], true, "{list}");
    assert_eq!(slot(&list, "B")["default"], true, "{list}");
    assert_eq!(
        slot(&list, "A")["status"],
        "committed",
        "V1 is kept: {list}"
    );
    assert_eq!(slot(&list, "A")["version"], v1.as_str(), "{list}");
    assert_eq!(ok(&vm, &m.ssh, "cat /home/berth/kept.txt").trim(), "kept");
    assert!(ok(&vm, &m.ssh, "docker volume ls -q").contains("keepvol"));
    assert!(ok(&vm, &m.ssh, "docker ps -a --format '{{.Names}}'").contains("keeper"));
    let text = ok(&vm, &m.ssh, "sudo berth os list");
    assert!(
        text.contains(&next_version) && text.contains("running"),
        "{text}"
    );

    // The same version again is refused; so is a rollback's opposite.
    let said = refused(
        &vm,
        &m.ssh,
        &format!("sudo berth os upgrade --insecure {next}"),
    );
    assert!(said.contains("the one running now"), "{said}");

    // Rollback: V1 is committed here, so the next boots use it.
    let _ = m.ssh.run("sudo berth os rollback");
    expect(&mut vm, &format!("Booting `Berth {v1}'"), BOOT_TIMEOUT);
    expect(&mut vm, "berth.slot=A", BOOT_TIMEOUT);
    expect(&mut vm, READY_MARKER, BOOT_TIMEOUT);
    m.wait_ssh(&vm);
    assert_eq!(
        ok(&vm, &m.ssh, "berth os version").trim(),
        format!("Berth {v1} (slot A)")
    );
    let cmdline = ok(&vm, &m.ssh, "cat /proc/cmdline");
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    assert!(
        words.contains(&"panic=10") && !words.contains(&"panic=5"),
        "slot A keeps its own arguments: {cmdline}"
    );
    let list = m.slots(&vm);
    assert_eq!(slot(&list, "A")["default"], true, "{list}");
    assert_eq!(slot(&list, "B")["status"], "committed", "{list}");
    assert_eq!(ok(&vm, &m.ssh, "cat /home/berth/kept.txt").trim(), "kept");
}

#[test]
fn broken_images_fall_back_to_the_committed_version_by_themselves() {
    const TEST: &str = "broken_images_fall_back_to_the_committed_version_by_themselves";
    let (Some(qcow2), Some(images)) = (Artifacts::get(Artifacts::QCOW2, TEST), test_os(TEST))
    else {
        return;
    };
    let m = Machine::new("upgrade-broken", &qcow2, false);
    let registry = registry(m.dir.path());
    let mut vm = m.boot();
    let v1 = ok(&vm, &m.ssh, "berth os version");

    // Each: (image, what the console shows of its failure, the recorded reason).
    let cases = [
        ("panic", "Kernel panic", "never got as far as its services"),
        // PID 1 stops in stage 2 (its image's modules.dep is a FIFO): the
        // watchdog resets the machine.
        ("hang", "berth: stage 2", "never got as far as its services"),
        (
            "unhealthy",
            "failed: not healthy within",
            "not healthy within",
        ),
    ];
    for (name, shown, reason) in cases {
        let archive = images.join(format!("{name}.tar"));
        let version = version_of(&archive);
        let reference = push(&registry, &archive, name);
        let started = Instant::now();
        let out = m
            .ssh
            .run(&format!("sudo berth os upgrade --insecure {reference}"))
            .expect("ssh");
        let said = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains("on trial"),
            "{name}: {said}\n{}",
            berth_lines(&vm.transcript())
        );
        expect(&mut vm, "berth.trial=1", BOOT_TIMEOUT);
        expect(&mut vm, shown, BOOT_TIMEOUT);
        // Back on the committed slot with no help: GRUB's try was used up.
        expect(&mut vm, "berth.slot=A", BOOT_TIMEOUT);
        expect(&mut vm, READY_MARKER, BOOT_TIMEOUT);
        eprintln!(
            "{name}: back on the committed version {:.0}s after the upgrade",
            started.elapsed().as_secs_f64()
        );
        m.wait_ssh(&vm);
        assert_eq!(ok(&vm, &m.ssh, "berth os version"), v1);
        let list = m.slots(&vm);
        let b = slot(&list, "B");
        assert_eq!(b["status"], "failed", "{name}: {list}");
        assert_eq!(b["version"], version.as_str(), "{name}: {list}");
        assert!(
            b["reason"].as_str().is_some_and(|r| r.contains(reason)),
            "{name}: the reason should say `{reason}`: {list}"
        );
        assert_eq!(slot(&list, "A")["default"], true, "{name}: {list}");
        // Not tried again on its own.
        let said = refused(
            &vm,
            &m.ssh,
            &format!("sudo berth os upgrade --insecure {reference}"),
        );
        assert!(said.contains("failed here before"), "{name}: {said}");
    }
    let text = ok(&vm, &m.ssh, "sudo berth os list");
    assert!(text.contains("failed"), "{text}");
}

/// A tiny deterministic generator for the kill moments (xorshift64*), so a
/// failing run can be repeated with the seed it prints.
struct Moments(u64);

impl Moments {
    fn next_in(&mut self, lo: u64, hi: u64) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        lo + x.wrapping_mul(0x2545_F491_4F6C_DD1D) % (hi - lo).max(1)
    }
}

#[test]
fn power_cuts_during_upgrades_always_leave_a_machine_that_boots() {
    const TEST: &str = "power_cuts_during_upgrades_always_leave_a_machine_that_boots";
    let (Some(qcow2), Some(images)) = (Artifacts::get(Artifacts::QCOW2, TEST), test_os(TEST))
    else {
        return;
    };
    let m = Machine::new("upgrade-cuts", &qcow2, false);
    let registry = registry(m.dir.path());
    let next = push(&registry, &images.join("next.tar"), "next");
    let os_tar = std::env::var_os("BERTH_OS_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| qcow2.with_file_name("berth-os.tar"));
    let first = push(&registry, &os_tar, "first");
    let seed = std::env::var("BERTH_CUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        // A new seed each run: five cuts a run, at moments that differ from
        // run to run, cover more of the upgrade over the runs than the same
        // ten every time. The seed is printed, so a failure can be repeated;
        // `| 1` because xorshift never leaves a zero state.
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x9E37_79B9_7F4A_7C15)
                | 1
        });
    eprintln!("kill moments from seed {seed} (BERTH_CUT_SEED repeats them)");
    let mut moments = Moments(seed);
    let cuts: u64 = std::env::var("BERTH_CUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        // One of each kind (three anywhere, one after arming, one in the
        // trial); BERTH_CUTS=10 for two rounds.
        .unwrap_or(5);

    // Cut 0: a few seconds after the first boot is ready, while what it
    // wrote (host keys, the user's home) may still be only in memory. Keys
    // written without a sync came back empty, and sshd never started again.
    let vm = m.boot();
    std::thread::sleep(Duration::from_secs(3));
    eprintln!("cut 0: QEMU killed 3s after the first boot was ready");
    drop(vm);
    let mut vm = m.boot();
    check_files_whole(&m, &vm);
    // What such a cut left on machines of older Berths: the next boot makes
    // the empty key again.
    ok(
        &vm,
        &m.ssh,
        "sudo truncate -s 0 /var/lib/berth/ssh/ssh_host_ed25519_key",
    );
    for cut in 0..cuts {
        // Whichever version runs, upgrade to the other one.
        let running = ok(&vm, &m.ssh, "berth os version -o json");
        let reference = if running.contains("-next") {
            &first
        } else {
            &next
        };
        // Most cuts fall anywhere in the pull, the slot write, the reboot
        // and the trial boot; every fourth comes right after arming, every
        // fifth during the trial's way to its commit.
        match cut % 5 {
            3 => {
                ok(
                    &vm,
                    &m.ssh,
                    &format!("sudo berth os upgrade --insecure --force --no-reboot {reference}"),
                );
                eprintln!("cut {}: QEMU killed right after arming", cut + 1);
            }
            4 => {
                let ssh = m.ssh.clone();
                let command = format!("sudo berth os upgrade --insecure --force {reference}");
                let upgrade = std::thread::spawn(move || ssh.run(&command));
                expect(&mut vm, "berth: trial boot of", BOOT_TIMEOUT);
                let after = Duration::from_millis(moments.next_in(0, 12_000));
                std::thread::sleep(after);
                eprintln!(
                    "cut {}: QEMU killed {:.1}s into the trial boot",
                    cut + 1,
                    after.as_secs_f64()
                );
                let _ = upgrade.join();
            }
            _ => {
                let after = Duration::from_millis(moments.next_in(2_000, 130_000));
                let ssh = m.ssh.clone();
                let command = format!("sudo berth os upgrade --insecure --force {reference}");
                let upgrade = std::thread::spawn(move || ssh.run(&command));
                std::thread::sleep(after);
                eprintln!(
                    "cut {}: QEMU killed {:.1}s into an upgrade to {reference}",
                    cut + 1,
                    after.as_secs_f64()
                );
                drop(vm);
                let _ = upgrade.join();
                vm = Vm::start(&m.config()).expect("start qemu");
                expect(&mut vm, READY_MARKER, BOOT_TIMEOUT);
                if vm.transcript().contains("berth.trial=1") {
                    expect(&mut vm, "is healthy and committed", BOOT_TIMEOUT);
                }
                m.wait_ssh(&vm);
                check_committed(&m, &vm, cut);
                continue;
            }
        }
        drop(vm);
        // The next boot reaches ready on a committed version; a trial that
        // was armed and not cut commits.
        vm = Vm::start(&m.config()).expect("start qemu");
        expect(&mut vm, READY_MARKER, BOOT_TIMEOUT);
        if vm.transcript().contains("berth.trial=1") {
            expect(&mut vm, "is healthy and committed", BOOT_TIMEOUT);
        }
        m.wait_ssh(&vm);
        check_committed(&m, &vm, cut);
    }
}

/// The slot running is committed, and the config still loads (no config
/// file was left half-written).
fn check_committed(m: &Machine, vm: &Vm, cut: u64) {
    let list = m.slots(vm);
    let running = list["slots"]
        .as_array()
        .and_then(|s| s.iter().find(|e| e["running"] == true))
        .unwrap_or_else(|| panic!("no running slot: {list}"));
    assert_eq!(
        running["status"],
        "committed",
        "cut {}: the machine runs a version that is not committed: {list}",
        cut + 1
    );
    ok(vm, &m.ssh, "sudo berth config get hostname");
    check_files_whole(m, vm);
}

/// The host keys and the user's shell profile are not empty.
fn check_files_whole(m: &Machine, vm: &Vm) {
    ok(
        vm,
        &m.ssh,
        "for f in /var/lib/berth/ssh/ssh_host_ed25519_key /var/lib/berth/ssh/ssh_host_ed25519_key.pub /home/berth/.profile; do sudo test -s $f || { echo \"$f is empty\" >&2; exit 1; }; done",
    );
}

/// `berth.kernel_args` on an installed disk: armed by the config, tried once
/// by GRUB, kept when that boot is healthy; an argument that stops the boot
/// (the kernel panics: no such `rdinit`) or keeps it from coming up healthy
/// (`berth.rescue`: a shell instead of berthd) costs one boot, and the
/// machine comes back by itself on the arguments from before.
#[test]
fn kernel_arguments_are_tried_once_then_kept_or_dropped() {
    const TEST: &str = "kernel_arguments_are_tried_once_then_kept_or_dropped";
    let Some(qcow2) = Artifacts::get(Artifacts::QCOW2, TEST) else {
        return;
    };
    // Berth's own `cryptomgr.notests=1` comes first; the kept argument comes
    // after it and wins, so the kernel runs its crypto self-tests again.
    let m = Machine::with(
        "kernel-args",
        &qcow2,
        false,
        "  kernel_args: [cryptomgr.notests=0]\n",
    );
    let mut vm = m.boot();
    let logs = ok(&vm, &m.ssh, "sudo berth logs berthd");
    assert!(
        logs.contains("the next boot tries `cryptomgr.notests=0` once"),
        "{logs}"
    );
    let kargs = |vm: &Vm| m.slots(vm)["kernel_args"].clone();
    // After a failed trial of `cryptomgr.notests=0 BAD`: booted on the kept
    // argument alone, nothing armed, the failure recorded; the state, for more.
    let back_on_the_kept_argument = |vm: &Vm, bad: &str| {
        m.wait_ssh(vm);
        let cmdline = ok(vm, &m.ssh, "cat /proc/cmdline");
        assert!(
            cmdline.contains("cryptomgr.notests=0") && !cmdline.contains(bad),
            "{cmdline}"
        );
        let now = kargs(vm);
        assert_eq!(now["committed"], "cryptomgr.notests=0", "{now}");
        assert_eq!(now["armed"], false, "not armed again: {now}");
        assert_eq!(
            now["failed"]["args"],
            format!("cryptomgr.notests=0 {bad}").as_str(),
            "{now}"
        );
        now
    };
    let now = kargs(&vm);
    assert_eq!(now["next"], "cryptomgr.notests=0", "{now}");
    assert_eq!(now["armed"], true, "{now}");
    assert_eq!(now["committed"], "", "{now}");
    let text = ok(&vm, &m.ssh, "sudo berth os list");
    assert!(
        text.contains("next boot:      `cryptomgr.notests=0` (once, on trial)"),
        "{text}"
    );

    // The trial: GRUB adds the argument and the trial flag, once.
    let _ = m.ssh.run("sudo berth reboot");
    expect(
        &mut vm,
        "berth.args_trial=1 cryptomgr.notests=0",
        BOOT_TIMEOUT,
    );
    expect(
        &mut vm,
        "trial boot of the kernel arguments `cryptomgr.notests=0`",
        BOOT_TIMEOUT,
    );
    expect(&mut vm, READY_MARKER, BOOT_TIMEOUT);
    expect(
        &mut vm,
        "the kernel arguments `cryptomgr.notests=0` are healthy and kept",
        BOOT_TIMEOUT,
    );
    m.wait_ssh(&vm);
    let now = kargs(&vm);
    assert_eq!(now["committed"], "cryptomgr.notests=0", "{now}");
    assert_eq!(now["armed"], false, "{now}");
    assert_eq!(now["next"], serde_json::Value::Null, "{now}");

    // No boot so far failed, so GRUB never showed its menu nor waited for a key.
    assert_eq!(vm.transcript().matches(GRUB_MENU).count(), 0);

    // Kept: the next boot has it without a trial, and the kernel took it.
    // `--menu` asks GRUB for its menu on that boot, which then boots the
    // default entry by itself.
    let _ = m.ssh.run("sudo berth reboot --menu");
    expect(&mut vm, GRUB_MENU, BOOT_TIMEOUT);
    expect(&mut vm, "Kernel command line:", BOOT_TIMEOUT);
    expect(&mut vm, READY_MARKER, BOOT_TIMEOUT);
    m.wait_ssh(&vm);
    let cmdline = ok(&vm, &m.ssh, "cat /proc/cmdline");
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    assert_eq!(words.last(), Some(&"cryptomgr.notests=0"), "{cmdline}");
    assert!(words.contains(&"cryptomgr.notests=1"), "{cmdline}");
    assert!(!cmdline.contains("args_trial"), "{cmdline}");
    let dmesg = ok(&vm, &m.ssh, "sudo dmesg");
    assert!(
        !dmesg.contains("alg: self-tests disabled"),
        "the later cryptomgr.notests=0 should win:\n{dmesg}"
    );

    // An argument that stops the boot: the trial panics, GRUB's try is used
    // up, and the machine is back on the kept arguments by itself.
    ok(
        &vm,
        &m.ssh,
        "sudo berth config set berth.kernel_args '[cryptomgr.notests=0, rdinit=/no-such-init]'",
    );
    let now = kargs(&vm);
    assert_eq!(
        now["next"], "cryptomgr.notests=0 rdinit=/no-such-init",
        "armed on the config's change: {now}"
    );
    let _ = m.ssh.run("sudo berth reboot");
    expect(&mut vm, "rdinit=/no-such-init", BOOT_TIMEOUT);
    expect(&mut vm, "Kernel panic", BOOT_TIMEOUT);
    // That boot never got as far as berthd: this one shows GRUB's menu.
    expect(&mut vm, GRUB_MENU, BOOT_TIMEOUT);
    expect(&mut vm, READY_MARKER, BOOT_TIMEOUT);
    back_on_the_kept_argument(&vm, "rdinit=/no-such-init");
    let logs = ok(&vm, &m.ssh, "sudo berth logs berthd");
    assert!(
        logs.contains(
            "berth.kernel_args: `cryptomgr.notests=0 rdinit=/no-such-init` failed their trial boot"
        ),
        "{logs}"
    );
    let text = ok(&vm, &m.ssh, "sudo berth os list");
    assert!(
        text.contains("failed:         `cryptomgr.notests=0 rdinit=/no-such-init`"),
        "{text}"
    );

    // Arguments that boot but never come up healthy (a rescue shell instead
    // of berthd): PID 1 gives the trial its health timeout, records why,
    // drops them and reboots onto the kept ones.
    ok(
        &vm,
        &m.ssh,
        "sudo berth config set berth.kernel_args '[cryptomgr.notests=0, berth.rescue]'",
    );
    let _ = m.ssh.run("sudo berth reboot");
    expect(
        &mut vm,
        "berth.args_trial=1 cryptomgr.notests=0 berth.rescue",
        BOOT_TIMEOUT,
    );
    expect(
        &mut vm,
        "the trial of the kernel arguments `cryptomgr.notests=0 berth.rescue` failed: not healthy within",
        BOOT_TIMEOUT + Duration::from_secs(HEALTH_TIMEOUT_SECS),
    );
    expect(&mut vm, READY_MARKER, BOOT_TIMEOUT);
    let now = back_on_the_kept_argument(&vm, "berth.rescue");
    let reason = now["failed"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("berthd does not answer"), "{now}");
}
