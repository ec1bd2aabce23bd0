//! Installing Berth and launching its disk images, as operators do: the
//! cloud image on a bigger volume under BIOS then UEFI, `berth install` over
//! SSH from the live ISO (with its refusals), and the unattended install
//! from the kernel command line. Every disk then boots alone, from real GRUB.

use std::time::Duration;

use qemu_tests::ssh::Ssh;
use qemu_tests::steps::{
    boot_ready, busybox_archive, docker_load, expect, ok, poweroff, refused, Archive, BOOT_TIMEOUT,
    GIB,
};
use qemu_tests::{berth_lines, Artifacts, Boot, Config, Firmware, Vm, READY_MARKER};

/// The state filesystem's size and its partition's, in bytes, and how far
/// the partition ends from the end of the disk.
fn state_sizes(vm: &Vm, ssh: &Ssh) -> (u64, u64, u64) {
    let out = ok(
        vm,
        ssh,
        "df -B1 --output=size /home | tail -1; cat /sys/class/block/vda5/size /sys/class/block/vda5/start /sys/class/block/vda/size",
    );
    let n: Vec<u64> = out
        .split_whitespace()
        .map(|w| w.parse().expect("a number"))
        .collect();
    let (fs, part, start, disk) = (n[0], n[1] * 512, n[2] * 512, n[3] * 512);
    (fs, part, disk - (start + part))
}

fn cloud_config(hostname: &str, key: &str) -> String {
    format!("#cloud-config\nhostname: {hostname}\nssh_authorized_keys:\n  - {key}\n")
}

/// The same without the docker engine, for the machines here that never run a
/// container (the cloud image's and the live system's).
fn cloud_config_no_engine(hostname: &str, key: &str) -> String {
    cloud_config(hostname, key) + qemu_tests::no_engine!()
}

#[test]
fn the_cloud_image_boots_under_bios_and_uefi_and_grows_with_its_volume() {
    const TEST: &str = "the_cloud_image_boots_under_bios_and_uefi_and_grows_with_its_volume";
    let Some(qcow2) = Artifacts::get(Artifacts::QCOW2, TEST) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let port = qemu_tests::free_port().expect("port");
    let ssh = Ssh::new(dir.path(), port, "berth").expect("ssh key");
    // The image is 4 GiB; the volume it is launched on is 2 GiB bigger.
    let disk = dir.path().join("vm.qcow2");
    qemu_tests::overlay(&qcow2, &disk, 6 * GIB).expect("overlay");
    let seed = dir.path().join("seed.iso");
    qemu_tests::nocloud_seed(
        &seed,
        &cloud_config_no_engine("berth-cloud", ssh.public_key()),
        "instance-id: cloud-1\n",
    )
    .expect("seed");
    let config = |name: &str, firmware: Firmware| {
        Config::new(name, Boot::Disk)
            .firmware(firmware)
            .drive(&disk, false)
            .drive(&seed, true)
            .forward(port, 22)
    };

    let vm = boot_ready(&config("cloud-bios", Firmware::Bios), &ssh);
    assert!(
        vm.transcript()
            .contains("BERTH_STATE grew to the end of /dev/vda"),
        "{}",
        berth_lines(&vm.transcript())
    );
    assert_eq!(ok(&vm, &ssh, "hostname").trim(), "berth-cloud");
    let (fs, part, left) = state_sizes(&vm, &ssh);
    eprintln!("state: filesystem {fs}, partition {part}, {left} bytes after it");
    assert!(left < 2 << 20, "the partition ends at the disk's end");
    assert!(fs > part / 100 * 95, "the filesystem fills its partition");
    assert!(part > 4 * GIB + GIB / 2, "the 2 GiB more are used");
    ok(&vm, &ssh, "echo kept > /home/berth/kept.txt");
    poweroff(vm, &ssh);

    // Bigger again, and under UEFI: the partition and the mounted ext4 grow,
    // the data stays.
    qemu_tests::run_checked(
        "qemu-img",
        &["resize", "-q", &disk.to_string_lossy(), "+1G"],
    )
    .expect("resize");
    let vm = boot_ready(&config("cloud-uefi", Firmware::Uefi), &ssh);
    let (fs2, part2, left2) = state_sizes(&vm, &ssh);
    eprintln!("state after +1 GiB: filesystem {fs2}, partition {part2}, {left2} after it");
    assert!(left2 < 2 << 20);
    assert!(part2 >= part + GIB - (1 << 20), "the partition grew");
    assert!(fs2 >= fs + GIB - (64 << 20), "the filesystem grew online");
    assert_eq!(ok(&vm, &ssh, "cat /home/berth/kept.txt").trim(), "kept");
    assert!(vm
        .transcript()
        .contains("the state filesystem grew to fill BERTH_STATE"));
    poweroff(vm, &ssh);
}

#[test]
fn berth_install_over_ssh_refuses_what_it_must_and_the_disk_boots_alone() {
    const TEST: &str = "berth_install_over_ssh_refuses_what_it_must_and_the_disk_boots_alone";
    let Some(iso) = Artifacts::get(Artifacts::ISO, TEST) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let port = qemu_tests::free_port().expect("port");
    let ssh = Ssh::new(dir.path(), port, "berth").expect("ssh key");
    let target = dir.path().join("target.img");
    qemu_tests::blank_disk(&target, 5 * GIB).expect("target");
    // A disk holding a filesystem: refused, then installed over with --force.
    let other = dir.path().join("other.img");
    qemu_tests::blank_disk(&other, 9 * GIB / 2).expect("other");
    qemu_tests::run_checked("mkfs.ext4", &["-q", "-F", &other.to_string_lossy()]).expect("mkfs");
    let seed = dir.path().join("seed.iso");
    qemu_tests::nocloud_seed(
        &seed,
        &cloud_config_no_engine("berth-live", ssh.public_key()),
        "instance-id: live-1\n",
    )
    .expect("seed");
    let live = Config::new("install-live", Boot::Cdrom(iso))
        .drive(&target, false)
        .drive(&other, false)
        .drive(&seed, true)
        .forward(port, 22);
    let vm = boot_ready(&live, &ssh);

    let installed_config = dir.path().join("installed.yml");
    std::fs::write(
        &installed_config,
        cloud_config("berth-installed", ssh.public_key()),
    )
    .expect("config");
    let copied = ssh
        .run_with_input("cat > /home/berth/installed.yml", Some(&installed_config))
        .expect("ssh");
    assert!(copied.status.success(), "{copied:?}");

    // The refusals, each before anything is written.
    let head = "sudo head -c 64M /dev/vdb | sha256sum; sudo tail -c 1M /dev/vdb | sha256sum";
    let before = ok(&vm, &ssh, head);
    let said = refused(
        &vm,
        &ssh,
        "sudo berth install --disk /dev/vdb --config /home/berth/installed.yml --no-reboot",
    );
    assert!(
        said.contains("ext2/3/4")
            && said.contains("--force")
            && said.contains("nothing was written"),
        "{said}"
    );
    assert_eq!(ok(&vm, &ssh, head), before, "the refused disk is untouched");
    let said = refused(&vm, &ssh, "sudo berth install --disk /dev/sr0 --no-reboot");
    assert!(said.contains("Berth booted from it"), "{said}");
    let said = refused(&vm, &ssh, "sudo berth install --disk /dev/vdz --no-reboot");
    assert!(said.contains("No such file"), "{said}");
    let said = refused(&vm, &ssh, "sudo berth install --disk /dev/vdc --no-reboot");
    assert!(said.contains("Berth needs at least 4 GiB"), "{said}");
    let bad = refused(
        &vm,
        &ssh,
        "printf '#cloud-config\\nberth:\\n  services:\\n    x: {image: 1, restart: sometimes}\\n' > /tmp/bad.yml && sudo berth install --disk /dev/vda --config /tmp/bad.yml --no-reboot",
    );
    assert!(bad.contains("not a valid cloud-config"), "{bad}");

    let out = ok(
        &vm,
        &ssh,
        "sudo berth install --disk /dev/vda --config /home/berth/installed.yml --no-reboot 2>&1",
    );
    eprintln!("{out}");
    assert!(out.contains("installed Berth on /dev/vda"), "{out}");
    assert!(out.contains("rootfs → BERTH_A"), "progress is shown: {out}");
    // No udev, yet the usual places to look work.
    // console-init looks for new devices every 2 s.
    let lsblk = ssh
        .wait_for(
            "lsblk -o NAME,LABEL,PARTLABEL /dev/vda | grep BERTH_EFI.*BERTH_EFI && lsblk -o NAME,LABEL,PARTLABEL /dev/vda",
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", berth_lines(&vm.transcript())));
    for name in ["BERTH_EFI", "BERTH_A", "BERTH_B", "BERTH_STATE"] {
        assert!(lsblk.contains(name), "{name} in\n{lsblk}");
    }
    let by = ssh
        .wait_for(
            "readlink /dev/disk/by-partlabel/BERTH_A /dev/disk/by-label/BERTH_EFI /dev/disk/by-label/BERTH_ISO",
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", berth_lines(&vm.transcript())));
    assert_eq!(
        by.split_whitespace().collect::<Vec<_>>(),
        ["../../vda3", "../../vda2", "../../sr0"],
        "/dev/disk/by-* in the console"
    );
    let out = ok(
        &vm,
        &ssh,
        "sudo berth install --disk /dev/vdb --force --no-reboot 2>&1",
    );
    assert!(out.contains("installed Berth on /dev/vdb"), "{out}");
    poweroff(vm, &ssh);
    let table =
        qemu_tests::run_checked("sfdisk", &["--dump", &other.to_string_lossy()]).expect("sfdisk");
    assert!(
        table.contains("BERTH_A"),
        "--force installed over it:\n{table}"
    );

    // The installed disk alone: BIOS, then UEFI, its own config, a container
    // that outlives the reboot.
    let installed = |name: &str, firmware: Firmware| {
        Config::new(name, Boot::Disk)
            .firmware(firmware)
            .drive(&target, false)
            .forward(port, 22)
    };
    let vm = boot_ready(&installed("installed-bios", Firmware::Bios), &ssh);
    assert_eq!(ok(&vm, &ssh, "hostname").trim(), "berth-installed");
    assert!(
        ok(&vm, &ssh, "berth os version").contains("(slot A)"),
        "the installed system runs slot A"
    );
    let archive = busybox_archive(
        dir.path(),
        Archive::Docker {
            tag: "busybox:latest",
        },
    );
    docker_load(&vm, &ssh, &archive);
    ok(
        &vm,
        &ssh,
        "docker run -d --restart=always --name keeper busybox:latest sleep 86400",
    );
    poweroff(vm, &ssh);
    let vm = boot_ready(&installed("installed-uefi", Firmware::Uefi), &ssh);
    assert_eq!(ok(&vm, &ssh, "hostname").trim(), "berth-installed");
    let running = ssh
        .wait_for(
            "docker ps --filter name=keeper --format '{{.Status}}' | grep ^Up",
            Duration::from_secs(120),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", berth_lines(&vm.transcript())));
    eprintln!("keeper after the reboot: {}", running.trim());
    poweroff(vm, &ssh);
}

#[test]
fn an_unattended_install_from_the_kernel_command_line_then_the_disk_boots() {
    const TEST: &str = "an_unattended_install_from_the_kernel_command_line_then_the_disk_boots";
    let (Some(iso), Some(kernel), Some(initrd)) = (
        Artifacts::get(Artifacts::ISO, TEST),
        Artifacts::get(Artifacts::VMLINUZ, TEST),
        Artifacts::get(Artifacts::INITRD, TEST),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("target.img");
    qemu_tests::blank_disk(&target, 4 * GIB).expect("target");
    // As a PXE boot would: the kernel and initrd given directly, the live
    // root from the ISO's volume, the install asked for on the command line.
    let config = Config::new(
        "unattended",
        Boot::Kernel {
            kernel,
            initrd,
            append: format!(
                "console=ttyS0,115200n8 panic=10 {} berth.install.disk=/dev/vda \
                 berth.install.then=poweroff",
                berth_iso::grub::KERNEL_ARGS
            ),
        },
    )
    .drive(&target, false)
    .drive(&iso, true);
    let mut vm = Vm::start(&config).expect("start qemu");
    expect(
        &mut vm,
        "berth.install: installed onto /dev/vda",
        BOOT_TIMEOUT,
    );
    let status = vm
        .wait_exit(Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("the live system powered off: {status}");
    drop(vm);

    let mut vm = Vm::start(&Config::new("unattended-installed", Boot::Disk).drive(&target, false))
        .expect("start qemu");
    expect(&mut vm, "berth: OS image: slot A", BOOT_TIMEOUT);
    expect(&mut vm, READY_MARKER, BOOT_TIMEOUT);
}
