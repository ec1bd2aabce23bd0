//! Config sources, state and shutdown, end to end: a NoCloud seed and the
//! kernel command line configure the machine; autoformat takes a blank disk
//! and never one with data; state survives a power cycle; the ACPI power
//! button and `berth poweroff` leave the state filesystem clean; bad user-data
//! never stops a boot. Networking rides along on the NoCloud boot: names
//! resolve through the DNS server QEMU's DHCP leased, and a second NIC gets
//! the static address the seed gives it.
//!
//! What happens inside the guest is reported by a check service, a busybox
//! container declared in the user-data that prints `check: …` lines on the
//! serial console (the LinuxKit way). Run by `cargo xtask test` as root.

use std::path::Path;

use base64::Engine as _;

use qemu_tests::steps::{expect, expect_anywhere, BOOT_TIMEOUT, SHUTDOWN_TIMEOUT};
use qemu_tests::{
    state_superblock, superblock_is_clean, Artifacts, Boot, Config, DnsNetns, Vm, READY_MARKER,
};

/// The second NIC: a MAC the seed matches on, on an isolated user network.
const SECOND_MAC: &str = "52:54:00:b3:00:02";
/// Two more NICs, bonded, with a VLAN on the bond.
const BOND_MACS: [&str; 2] = ["52:54:00:b3:00:03", "52:54:00:b3:00:04"];
/// The name the DNS server in the test's namespace answers.
const TEST_NAME: &str = "registry.berth-test.internal";
const TEST_ADDR: &str = "192.0.2.7";

fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The check service's shell script: hostname and environment, a boot count
/// kept on the state partition, the second NIC's address and a DNS lookup;
/// then, on the second boot, `berth poweroff` from inside the container.
const CHECK_SCRIPT: &str = r#"exec > /dev/ttyS0 2>&1
echo "check: hostname=$(hostname) greeting=$GREETING"
echo "check: earlier boots=$(cat /data/boots 2>/dev/null | wc -l)"
echo "check: devkmsg=$(cat /proc/sys/kernel/printk_devkmsg)"
echo "check: modules loop.max_part=$(cat /sys/module/loop/parameters/max_part) overlay.redirect_max=$(cat /sys/module/overlay/parameters/redirect_max) virtio_rng=$(test -d /sys/module/virtio_rng && echo loaded || echo absent)"
echo boot >> /data/boots
sync
echo "check: eth1 $(ip -4 -o addr show dev eth1 | awk '{print $4}')"
i=0; until ip -4 -o addr show dev bond0.100 2>/dev/null | grep -q inet || [ $i -ge 60 ]; do i=$((i+1)); sleep 0.5; done
echo "check: bond0 $(cat /sys/class/net/bond0/bonding/mode) slaves=$(cat /sys/class/net/bond0/bonding/slaves)"
echo "check: bond0.100 $(ip -4 -o addr show dev bond0.100 | awk '{print $4}')"
echo "check: dns $(nslookup registry.berth-test.internal 2>&1 | tr '\n' ' ')"
if [ "$(wc -l < /data/boots)" -ge 2 ]; then echo "check: powering off"; berth poweroff; fi
echo "check: done"
"#;

fn check_service(greeting: &str) -> String {
    let script = CHECK_SCRIPT
        .lines()
        .map(|l| format!("          {l}\n"))
        .collect::<String>();
    format!(
        r#"    check:
      image: berth/busybox:latest
      network_mode: host
      uts: host
      pid: host
      devices: [/dev/ttyS0]
      environment:
        GREETING: {greeting}
      volumes:
        - /var/lib/berth-check:/data
        - /etc/resolv.conf:/etc/resolv.conf:ro
      depends_on:
        network:
          condition: service_healthy
      restart: "no"
      command:
        - /bin/sh
        - -c
        - |
{script}"#
    )
}

/// `docker pull` of a name only the DNS server of the test's namespace knows,
/// through the docker CLI of the docker image: the engine must resolve it
/// with the VM's resolver (the lease's DNS server), not the one of the machine
/// that built the image. Nothing listens at the address, so the pull fails,
/// and its error names the address the name resolved to.
const PULL_SERVICE: &str = r#"    pull:
      image: berth/docker:latest
      entrypoint: [/bin/sh, -c]
      command:
        - |
          docker -H unix:///run/docker/docker.sock pull registry.berth-test.internal/berth/none:1 > /tmp/pull 2>&1
          echo "check: pull $(tr '\n' ' ' < /tmp/pull)" > /dev/ttyS0
          # The serial line may arrive in pieces: this one says the last is whole.
          echo "check: pull-done" > /dev/ttyS0
      devices: [/dev/ttyS0]
      volumes:
        - /run/docker:/run/docker
      depends_on:
        docker:
          condition: service_healthy
      restart: "no"
"#;

/// berthd's line for a service killed after its grace period.
const KILLED_AFTER_GRACE: &str = "still running after its grace period";

/// The rest of the line after `prefix`, from the transcript so far.
fn line_after(vm: &Vm, prefix: &str) -> String {
    let transcript = vm.transcript();
    transcript
        .lines()
        .rev()
        .find_map(|l| {
            l.split_once(prefix)
                .map(|(_, rest)| rest.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no `{prefix}` line:\n{transcript}"))
}

fn assert_clean(disk: &Path, after: &str) {
    let sb = state_superblock(disk).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        superblock_is_clean(&sb),
        "the state filesystem is not clean after {after}:\n{sb}"
    );
}

/// Boot 1 from the ISO with a NoCloud seed on a blank disk: autoformat,
/// hostname and environment from the seed, DNS and the static second NIC,
/// then the ACPI power button. Boot 2 from the kernel command line on the
/// same disk: its config wins over the cached seed, the first boot's state
/// is there, and `berth poweroff` from a container shuts down cleanly.
#[test]
fn nocloud_then_cmdline_config_with_state_across_power_cycles() {
    const TEST: &str = "nocloud_then_cmdline_config_with_state_across_power_cycles";
    let (Some(iso), Some(kernel), Some(initrd)) = (
        Artifacts::get(Artifacts::ISO, TEST),
        Artifacts::get(Artifacts::VMLINUZ, TEST),
        Artifacts::get(Artifacts::INITRD, TEST),
    ) else {
        return;
    };
    if !is_root() {
        berth_testkit::skip!("the DNS namespace and the disk check need root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.img");
    qemu_tests::blank_disk(&state, 2 << 30).expect("state disk");
    let seed = dir.path().join("seed.iso");
    let user_data = format!(
        r#"#cloud-config
hostname: seeded-by-nocloud
berth:
  state:
    autoformat: [/dev/vda]
  network:
    interfaces:
      "mac:{SECOND_MAC}":
        address: 10.9.0.15/24
      "mac:{bond_a}":
        bond: bond0
      "mac:{bond_b}":
        bond: bond0
      bond0:
        bond_opts:
          mode: active-backup
          miimon: 100
        vlans: "100"
      bond0.100:
        address: 10.77.0.5/24
  services:
{}{}"#,
        check_service("hello-from-nocloud"),
        PULL_SERVICE,
        bond_a = BOND_MACS[0],
        bond_b = BOND_MACS[1],
    );
    qemu_tests::nocloud_seed(&seed, &user_data, "instance-id: berth-test-1\n").expect("seed");
    let netns = DnsNetns::start("berth-qemu-dns", &[(TEST_NAME, TEST_ADDR)]).expect("dns netns");

    let config = Config::new("nocloud", Boot::Cdrom(iso.clone()))
        .drive(&state, false)
        .drive(&seed, true)
        .nic(SECOND_MAC, "10.9.0.0/24")
        .nic(BOND_MACS[0], "10.10.0.0/24")
        .nic(BOND_MACS[1], "10.11.0.0/24")
        .netns(netns.name());
    let mut vm = Vm::start(&config).expect("start qemu");
    expect(&mut vm, "berth: NoCloud seed on /dev/vdb", BOOT_TIMEOUT);
    expect(&mut vm, "autoformat: /dev/vda is blank", BOOT_TIMEOUT);
    expect(&mut vm, READY_MARKER, BOOT_TIMEOUT);
    expect_anywhere(&mut vm, "check: done", BOOT_TIMEOUT);
    assert_eq!(
        line_after(&vm, "check: hostname="),
        "seeded-by-nocloud greeting=hello-from-nocloud"
    );
    assert_eq!(line_after(&vm, "check: earlier boots="), "0");
    // Without berth.debug the kernel's rate limit for /dev/kmsg stays.
    assert_eq!(line_after(&vm, "check: devkmsg="), "ratelimit");
    // The modules' own defaults (the second boot's command line sets them).
    assert_eq!(
        line_after(&vm, "check: modules "),
        "loop.max_part=0 overlay.redirect_max=256 virtio_rng=loaded"
    );
    assert_eq!(line_after(&vm, "check: eth1"), "10.9.0.15/24");
    // The kernel loads bonding and 8021q on demand through berth's modprobe.
    assert_eq!(
        line_after(&vm, "check: bond0 "),
        "active-backup 1 slaves=eth2 eth3"
    );
    assert_eq!(line_after(&vm, "check: bond0.100"), "10.77.0.5/24");
    let dns = line_after(&vm, "check: dns");
    assert!(
        dns.contains(TEST_ADDR),
        "{TEST_NAME} did not resolve through the leased DNS server: {dns}"
    );
    expect_anywhere(&mut vm, "check: pull-done", BOOT_TIMEOUT);
    let pull = line_after(&vm, "check: pull ");
    assert!(
        pull.contains(TEST_ADDR),
        "dockerd did not resolve {TEST_NAME} through the VM's DNS server: {pull}"
    );
    vm.monitor("system_powerdown").expect("power button");
    expect(&mut vm, "berth: power button pressed", SHUTDOWN_TIMEOUT);
    vm.wait_exit(SHUTDOWN_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    // Every service stops on SIGTERM (netconf and chronyd run as PID 1 of
    // their containers); none waits out its grace period to be killed.
    let transcript = vm.transcript();
    assert!(
        !transcript.contains(KILLED_AFTER_GRACE),
        "a service had to be killed at shutdown:\n{}",
        qemu_tests::berth_lines(&transcript)
    );
    drop(vm);
    assert_clean(&state, "the ACPI power button");

    let config_yaml = "#cloud-config\nhostname: set-on-the-cmdline\nberth:\n  services:\n    check:\n      environment:\n        GREETING: hello-from-cmdline\n";
    // Module parameters and a blacklist on the kernel command line, as
    // modprobe reads them: loop is loaded by stage 1, overlay by stage 2,
    // and virtio_rng would be by either for the VM's RNG device.
    let append = format!(
        "console=ttyS0 panic=-1 berth.debug loop.max_part=7 overlay.redirect_max=1000 \
         modprobe.blacklist=virtio_rng berth.cloud_config={}",
        base64::engine::general_purpose::STANDARD.encode(config_yaml)
    );
    let config = Config::new(
        "cmdline",
        Boot::Kernel {
            kernel,
            initrd,
            append,
        },
    )
    // The state disk moves to the IDE controller, whose driver stage 1 holds
    // back while the other disks are searched: the ISO is found on virtio and
    // there is no seed, so the miss loads it and the state is found there.
    .ide_disk(&state)
    .drive(&iso, true);
    let mut vm = Vm::start(&config).expect("start qemu");
    expect(
        &mut vm,
        "state /dev/sda1 was cleanly unmounted",
        BOOT_TIMEOUT,
    );
    // The check service powers the machine off as soon as it has reported,
    // which may be before every other service has settled (no ready line).
    expect_anywhere(&mut vm, "check: powering off", BOOT_TIMEOUT);
    assert_eq!(
        line_after(&vm, "check: hostname="),
        "set-on-the-cmdline greeting=hello-from-cmdline"
    );
    assert_eq!(line_after(&vm, "check: earlier boots="), "1");
    // berth.debug: PID 1's debug lines all reach dmesg.
    assert_eq!(line_after(&vm, "check: devkmsg="), "on");
    assert_eq!(
        line_after(&vm, "check: modules "),
        "loop.max_part=7 overlay.redirect_max=1000 virtio_rng=absent"
    );
    vm.wait_exit(SHUTDOWN_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    drop(vm);
    assert_clean(&state, "`berth poweroff`");
}

/// Invalid YAML in the seed and a disk with data named for autoformat: the
/// machine still boots to ready on the defaults, the console says what is
/// wrong with the user-data (with its line), and the disk is untouched. Its
/// only network is isolated: a DHCP lease without a router, which is enough
/// for ready.
#[test]
fn bad_user_data_and_a_disk_with_data_still_boot() {
    const TEST: &str = "bad_user_data_and_a_disk_with_data_still_boot";
    let (Some(iso), Some(kernel), Some(initrd)) = (
        Artifacts::get(Artifacts::ISO, TEST),
        Artifacts::get(Artifacts::VMLINUZ, TEST),
        Artifacts::get(Artifacts::INITRD, TEST),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = dir.path().join("data.img");
    qemu_tests::blank_disk(&disk, 2 << 30).expect("disk");
    // Somebody's data, well inside the first MiB.
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&disk)
            .expect("open");
        f.seek(SeekFrom::Start(512 * 1024)).expect("seek");
        f.write_all(&data).expect("write");
    }
    let before = std::fs::read(&disk).expect("read");
    let seed = dir.path().join("seed.iso");
    qemu_tests::nocloud_seed(
        &seed,
        "#cloud-config\nhostname: never\nberth:\n  services: [unclosed\n",
        "instance-id: berth-test-2\n",
    )
    .expect("seed");
    let config = Config::new(
        "bad-user-data",
        Boot::Kernel {
            kernel,
            initrd,
            append: format!(
                "{} berth.state.autoformat=/dev/vda",
                qemu_tests::berth_append()
            ),
        },
    )
    .drive(&disk, false)
    .drive(&seed, true)
    .drive(&iso, true)
    // An isolated network: its DHCP lease has no router. A lease without a
    // router is a complete configuration; the network service still gets ready.
    .restricted_network();
    let mut vm = Vm::start(&config).expect("start qemu");
    expect(&mut vm, "autoformat: /dev/vda", BOOT_TIMEOUT);
    expect(&mut vm, READY_MARKER, BOOT_TIMEOUT);
    let transcript = vm.transcript();
    assert!(
        transcript.contains("user-data.yml:5:1: error: YAML syntax error"),
        "the console does not name the bad line of the user-data:\n{transcript}"
    );
    assert!(
        !transcript.contains("hostname: never"),
        "the bad user-data was applied:\n{transcript}"
    );
    drop(vm);
    let after = std::fs::read(&disk).expect("read");
    assert!(before == after, "autoformat wrote to a disk that had data");
}
