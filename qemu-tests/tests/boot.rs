//! End-to-end boots. Run by `cargo xtask test`, which builds the artifacts and
//! passes their paths in BERTH_VMLINUZ / BERTH_INITRD / BERTH_ISO; without
//! them every test here prints why it skips and passes.
//!
//! Timeouts are generous (TCG on two shared cores); nothing sleeps in place
//! of waiting for a console line.

use std::time::Duration;

use qemu_tests::{
    baseline_append, baseline_initrd, berth_lines, Artifacts, Boot, Config, Firmware, Vm,
    BASELINE_MARKER, INIT_MARKER, KERNEL_HANDOVER, READY_MARKER, STAGE2_MARKER,
};

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// The same kernel with a busybox `/init` that prints a marker and powers
/// off: proves the kernel, QEMU and the harness work, whatever state init is in.
#[test]
fn kernel_only_baseline_boots_to_marker() {
    let Some(kernel) = Artifacts::get(Artifacts::VMLINUZ, "kernel_only_baseline_boots_to_marker")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let initrd = baseline_initrd(dir.path()).expect("baseline initrd");
    let config = Config::new(
        "baseline",
        Boot::Kernel {
            kernel,
            initrd,
            append: baseline_append(),
        },
    );
    let mut vm = Vm::start(&config).expect("start qemu");
    let at = vm
        .expect(BASELINE_MARKER, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("baseline marker after {:.1}s", at.as_secs_f64());
    // `poweroff -f` ends the VM; a panic would too, but after the marker.
    let status = vm
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("baseline QEMU exited: {status}");
}

/// Boots the ISO and follows it through GRUB, the kernel and into `/init`.
fn iso_boots(firmware: Firmware, test: &str) {
    let Some(iso) = Artifacts::get(Artifacts::ISO, test) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.img");
    qemu_tests::blank_disk(&state, 4 << 30).expect("state disk");
    let config = Config::new(test, Boot::Cdrom(iso))
        .firmware(firmware)
        .drive(&state, false);
    let mut vm = Vm::start(&config).expect("start qemu");
    // The kernel's own banner proves GRUB loaded it with our command line.
    let linux = vm
        .expect("Linux version", BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    vm.expect("console=ttyS0", BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    // The kernel took Berth's own arguments (`grub::KERNEL_ARGS`): its per-CPU
    // areas are mapped page by page (the default allocator says "Embedded"),
    // and it says so the first time it registers a crypto algorithm untested.
    vm.expect("4K pages/cpu", BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    vm.expect("alg: self-tests disabled", BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let handover = vm
        .expect(KERNEL_HANDOVER, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    // Stage 1's first line proves the initramfs' /init (the berth binary)
    // runs as PID 1.
    let init = vm
        .expect(INIT_MARKER, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "{test}: kernel banner {:.1}s, /init handover {:.1}s, stage 1 {:.1}s",
        linux.as_secs_f64(),
        handover.as_secs_f64(),
        init.as_secs_f64()
    );
    // Stage 2 runs from the squashfs root and berthd starts the default services
    // from the pre-unpacked system images (real containers under cgroup v2);
    // PID 1 says the system is ready once every service has come to rest, and
    // the network service is ready only when netconf got a DHCP lease from
    // QEMU's user network (which needs stage 2 to load the NIC's driver).
    for marker in [STAGE2_MARKER, SERVICE_STARTED, READY_MARKER] {
        let at = vm
            .expect(marker, Duration::from_secs(180))
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("{test}: `{marker}` at {:.1}s", at.as_secs_f64());
    }
    // The ready line's summary is whole once PID 1's next line has arrived.
    vm.expect("PID 1 resident memory", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    // berthd told PID 1 of its services' changes through the notify pipe
    // (PID 1 logs how often, once the line is out); without it the line
    // waits for PID 1's slow poll.
    vm.expect(
        "berthd told PID 1 of service changes",
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{test}: {e}"));
    let transcript = vm.transcript();
    // Kernel messages may interleave with PID 1's line, so look at the whole
    // transcript for its summary rather than one line.
    let ready: Vec<&str> = transcript
        .lines()
        .filter_map(|l| {
            l.split_once("system ready (services: ")?
                .1
                .split_once(" ready: ")
        })
        .flat_map(|(_, rest)| {
            rest.split([';', ')'])
                .next()
                .unwrap_or_default()
                .split(", ")
        })
        .collect();
    for service in DEFAULT_SERVICES {
        assert!(
            ready.contains(service),
            "{test}: the default service {service} is not ready (ready: {ready:?}):\n{}",
            berth_lines(&transcript)
        );
    }
    // ntp (`after_ready`) is created only once the line is out, and the
    // line says so.
    assert!(
        transcript.contains("; starting after it: ntp)"),
        "{test}: the ready line does not name ntp as starting after it:\n{}",
        berth_lines(&transcript)
    );
    vm.expect_anywhere(AFTER_READY_STARTED, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    let transcript = vm.transcript();
    let (ready_at, ntp_at) = (
        transcript.find(READY_MARKER),
        transcript.find(AFTER_READY_STARTED),
    );
    assert!(
        ready_at.is_some() && ntp_at > ready_at,
        "{test}: ntp started before the ready line:\n{}",
        berth_lines(&transcript)
    );
    eprintln!("{}", berth_lines(&transcript));
}

/// The services of `configs/default.yml` the ready line waits for: every one
/// must be ready.
const DEFAULT_SERVICES: &[&str] = &["console", "docker", "network"];

/// berthd's log line when ntp, kept for after the ready line, is running.
const AFTER_READY_STARTED: &str = "ntp: started";

/// berthd's log line when the network service's container is running.
const SERVICE_STARTED: &str = "network: started";

#[test]
fn iso_boots_under_bios() {
    iso_boots(Firmware::Bios, "iso_boots_under_bios");
}

#[test]
fn iso_boots_under_uefi() {
    iso_boots(Firmware::Uefi, "iso_boots_under_uefi");
}

/// The boot menu on a serial console: GRUB waits a second for Esc on either
/// terminal, and its menu boots the entry chosen there (the debug one here,
/// whose `berth.debug` shows on the kernel's command line). A cloud VM's
/// serial console is often the only way to reach the rescue entry of a machine
/// that does not come up.
#[test]
fn esc_on_the_serial_console_opens_the_boot_menu() {
    let test = "esc_on_the_serial_console_opens_the_boot_menu";
    let Some(iso) = Artifacts::get(Artifacts::ISO, test) else {
        return;
    };
    let mut vm = Vm::start(&Config::new(test, Boot::Cdrom(iso))).expect("start qemu");
    // Typed again and again from QEMU's start, as a user does: GRUB drops
    // what came before it set up the serial port, and looks for a key during
    // its one-second window.
    let deadline = std::time::Instant::now() + BOOT_TIMEOUT;
    let menu = loop {
        vm.send("\x1b").expect("type Esc");
        match vm.expect("(rescue shell)", Duration::from_millis(250)) {
            Ok(at) => break at,
            Err(e) if std::time::Instant::now() >= deadline => panic!("no boot menu: {e}"),
            Err(_) => {}
        }
    };
    eprintln!("{test}: the menu after {:.1}s", menu.as_secs_f64());
    // Down to the debug entry with Ctrl-N (one byte; an arrow key is an Esc
    // sequence), until GRUB redraws it highlighted. An Esc typed just before
    // the menu came may still be on its way in, and GRUB takes a key that
    // follows an Esc within 100 ms of its coarse clock as part of one
    // sequence, dropping both: on a loaded machine the first Ctrl-N can be
    // lost that way, so it is typed again.
    let mut highlighted = false;
    for _ in 0..5 {
        vm.send("\x0e").expect("Ctrl-N");
        if vm.expect("(debug)", Duration::from_secs(20)).is_ok() {
            highlighted = true;
            break;
        }
    }
    assert!(
        highlighted,
        "Ctrl-N did not move GRUB's menu:\n{}",
        vm.transcript()
    );
    vm.send("\r").expect("enter");
    vm.expect("Command line:", BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    // The serial port delivers the line in pieces: read it only once its end
    // has come.
    vm.expect("\n", BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let line = vm
        .transcript()
        .lines()
        .find(|l| l.contains("Command line:"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        line.contains("berth.debug"),
        "the debug entry was not booted: {line}"
    );
}
