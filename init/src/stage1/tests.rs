use super::assemble::*;
use super::state::*;
use super::*;
use crate::sys::Recording;

fn plan(cmdline: &str) -> BootPlan {
    crate::plan::plan(cmdline)
}

/// Drivers that load nothing: the initramfs of a kernel with everything built in.
fn no_drivers(root: &Path) -> Drivers {
    Drivers::in_dir(None, root)
}

fn fake_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let nr = dir.path().join(NEWROOT);
    for d in [
        "usr/bin",
        "usr/sbin",
        "usr/share/berth/etc/ssh",
        "etc",
        "var",
        "home",
        "opt",
        "srv",
        "mnt",
        "media",
        "tmp",
        "dev",
        "proc",
        "sys",
        "run",
    ] {
        std::fs::create_dir_all(nr.join(d)).expect("mkdir");
    }
    std::fs::write(nr.join(BERTH), b"").expect("berth");
    std::fs::write(nr.join("usr/sbin/mkfs.ext4"), b"").expect("mkfs");
    std::fs::write(nr.join("usr/share/berth/etc/hostname"), b"berth\n").expect("etc");
    std::fs::write(nr.join("usr/share/berth/etc/ssh/sshd_config"), b"x").expect("etc");
    std::os::unix::fs::symlink("/proc/self/mounts", nr.join("usr/share/berth/etc/fstab"))
        .expect("symlink");
    std::fs::create_dir_all(dir.path().join("sys/class/block")).expect("sys");
    dir
}

fn add_disk(root: &Path, name: &str, size: u64) -> PathBuf {
    let sys = root.join("sys/class/block").join(name);
    std::fs::create_dir_all(&sys).expect("mkdir");
    std::fs::write(
        sys.join("uevent"),
        format!("DEVTYPE=disk\nDEVNAME={name}\n"),
    )
    .expect("w");
    std::fs::write(sys.join("size"), (size / 512).to_string()).expect("w");
    let node = root.join("dev").join(name);
    std::fs::create_dir_all(root.join("dev")).expect("dev");
    std::fs::File::create(&node)
        .and_then(|f| f.set_len(size))
        .expect("disk");
    node
}

fn rel(root: &Path, calls: &[String]) -> Vec<String> {
    let r = root.to_string_lossy().to_string();
    calls.iter().map(|c| c.replace(&r, "")).collect()
}

#[test]
fn early_mounts_tolerate_already_mounted() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut sys = Recording {
        mount_fails: vec![(root.path().join("dev"), libc::EBUSY)],
        ..Recording::default()
    };
    early_mounts(&mut sys, root.path()).expect("mounts");
    assert_eq!(
        rel(root.path(), &sys.calls),
        [
            "mount proc /proc proc [nosuid,nodev,noexec] ",
            "mount sysfs /sys sysfs [nosuid,nodev,noexec] ",
            "mount devtmpfs /dev devtmpfs [nosuid] mode=0755",
            "mount tmpfs /run tmpfs [nosuid,nodev] mode=0755",
        ]
    );
    let mut sys = Recording {
        mount_fails: vec![(root.path().join("sys"), libc::ENODEV)],
        ..Recording::default()
    };
    assert!(early_mounts(&mut sys, root.path()).is_err());
}

#[test]
fn no_iso_is_an_error_that_names_what_was_seen() {
    let root = fake_root();
    add_disk(root.path(), "vda", 1 << 20);
    let mut sys = Recording::default();
    let e = mount_image(
        &mut sys,
        root.path(),
        &plan("berth.wait=0"),
        &mut no_drivers(root.path()),
    )
    .expect_err("no iso");
    let text = e.to_string();
    assert!(text.contains("BERTH_ISO") && text.contains("vda"), "{text}");
}

#[test]
fn iso_then_loop_then_squashfs() {
    let root = fake_root();
    // A crafted ISO descriptor on "sr0".
    let node = add_disk(root.path(), "sr0", 64 * 2048);
    let mut img = std::fs::read(&node).expect("read");
    let p = 16 * 2048;
    img[p] = 1;
    img[p + 1..p + 6].copy_from_slice(b"CD001");
    img[p + 40..p + 72].copy_from_slice(format!("{:<32}", "BERTH_ISO").as_bytes());
    std::fs::write(&node, img).expect("write");
    let mut sys = Recording::default();
    mount_image(
        &mut sys,
        root.path(),
        &plan(""),
        &mut no_drivers(root.path()),
    )
    .expect("image");
    assert_eq!(
        rel(root.path(), &sys.calls),
        [
            "mount /dev/sr0 /run/berth/iso iso9660 [ro,nosuid,nodev] ",
            "loop /run/berth/iso/berth/rootfs.squashfs",
            "mount /dev/loop0 /sysroot squashfs [ro] ",
        ]
    );
}

#[test]
fn slot_partition_by_name() {
    let root = fake_root();
    let sysdir = root.path().join("sys/class/block/vda2");
    std::fs::create_dir_all(&sysdir).expect("mkdir");
    std::fs::write(
        sysdir.join("uevent"),
        "DEVTYPE=partition\nDEVNAME=vda2\nPARTNAME=BERTH_B\n",
    )
    .expect("w");
    std::fs::write(sysdir.join("size"), "1000").expect("w");
    let mut sys = Recording::default();
    mount_image(
        &mut sys,
        root.path(),
        &plan("berth.slot=b"),
        &mut no_drivers(root.path()),
    )
    .expect("image");
    assert_eq!(
        rel(root.path(), &sys.calls),
        ["mount /dev/vda2 /sysroot squashfs [ro] "]
    );
    let e = mount_image(
        &mut sys,
        root.path(),
        &plan("berth.slot=A berth.wait=0"),
        &mut no_drivers(root.path()),
    )
    .expect_err("no A");
    assert!(e.to_string().contains("BERTH_A"));
}

#[test]
fn state_falls_back_to_ram_and_says_so() {
    let root = fake_root();
    let mut sys = Recording::default();
    let s = mount_state(
        &mut sys,
        root.path(),
        &plan("berth.state.wait=false"),
        &mut no_drivers(root.path()),
    )
    .expect("state");
    assert_eq!(s, State::Ram);
    assert_eq!(
        rel(root.path(), &sys.calls),
        ["mount tmpfs /run/berth/state tmpfs [nosuid,nodev] mode=0755"]
    );
    let e = mount_state(
        &mut sys,
        root.path(),
        &plan("berth.state.wait=false berth.state.required=true"),
        &mut no_drivers(root.path()),
    )
    .expect_err("required");
    assert!(matches!(e, Error::StateRequired { .. }));
}

#[test]
fn autoformat_refuses_a_disk_with_data() {
    let root = fake_root();
    let disk = add_disk(root.path(), "vda", 128 << 20);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .expect("open");
    use std::io::{Seek, SeekFrom, Write};
    f.seek(SeekFrom::Start(700 << 10)).expect("seek");
    f.write_all(b"precious").expect("write");
    drop(f);
    let before = std::fs::read(&disk).expect("read");
    let mut sys = Recording::default();
    let s = mount_state(
        &mut sys,
        root.path(),
        &plan("berth.state.wait=false berth.state.autoformat=/dev/vda"),
        &mut no_drivers(root.path()),
    )
    .expect("state");
    assert_eq!(s, State::Ram);
    assert_eq!(
        std::fs::read(&disk).expect("read"),
        before,
        "not one byte changed"
    );
    assert!(!sys.calls.iter().any(|c| c.contains("mkfs")));
}

#[test]
fn autoformat_partitions_and_formats_a_blank_disk() {
    let root = fake_root();
    let disk = add_disk(root.path(), "vda", 128 << 20);
    // The partition node the kernel would create after BLKRRPART.
    std::fs::write(root.path().join("dev/vda1"), b"").expect("part");
    let mut sys = Recording::default();
    let s = mount_state(
        &mut sys,
        root.path(),
        &plan("berth.state.wait=false berth.state.autoformat=/dev/vda"),
        &mut no_drivers(root.path()),
    )
    .expect("state");
    assert_eq!(s, State::Formatted(root.path().join("dev/vda1")));
    assert_eq!(
        rel(root.path(), &sys.calls),
        [
            "rereadpt /dev/vda",
            "mount /dev /sysroot/dev  [bind,rec] ",
            "mount /proc /sysroot/proc  [bind,rec] ",
            "mount /sys /sysroot/sys  [bind,rec] ",
            "chroot-run /sysroot /usr/sbin/mkfs.ext4 -q -F -E nodiscard -L BERTH_STATE /dev/vda1",
            "umount /sysroot/sys detach",
            "umount /sysroot/proc detach",
            "umount /sysroot/dev detach",
            "mount /dev/vda1 /run/berth/state ext4 [nosuid,nodev] ",
        ]
    );
    let data = std::fs::read(&disk).expect("read");
    assert_eq!(&data[512..520], b"EFI PART");
}

#[test]
fn assemble_seeds_etc_binds_state_and_moves_api_mounts() {
    let root = fake_root();
    let mut sys = Recording::default();
    assemble(&mut sys, root.path()).expect("assemble");
    assert_eq!(
        rel(root.path(), &sys.calls),
        [
            "mount tmpfs /sysroot/etc tmpfs [nosuid,nodev] mode=0755",
            "mount /run/berth/state/var /sysroot/var  [bind] ",
            "mount /run/berth/state/home /sysroot/home  [bind] ",
            "mount /run/berth/state/opt /sysroot/opt  [bind] ",
            "mount /run/berth/state/srv /sysroot/srv  [bind] ",
            "mount /run/berth/state/mnt /sysroot/mnt  [bind] ",
            "mount /run/berth/state/media /sysroot/media  [bind] ",
            "mount /sysroot/var/lib/docker /sysroot/var/lib/docker  [bind] ",
            "mount none /sysroot/home  [shared] ",
            "mount none /sysroot/opt  [shared] ",
            "mount none /sysroot/srv  [shared] ",
            "mount none /sysroot/mnt  [shared] ",
            "mount none /sysroot/media  [shared] ",
            "mount none /sysroot/var/lib/docker  [shared] ",
            "mount tmpfs /sysroot/tmp tmpfs [nosuid,nodev] mode=1777",
            "mount none /sysroot/tmp  [shared] ",
            "mount /dev /sysroot/dev  [move] ",
            "mount /proc /sysroot/proc  [move] ",
            "mount /sys /sysroot/sys  [move] ",
            "mount /run /sysroot/run  [move] ",
        ]
    );
    let etc = root.path().join(NEWROOT).join("etc");
    assert_eq!(
        std::fs::read_to_string(etc.join("hostname")).expect("hostname"),
        "berth\n"
    );
    assert!(etc.join("ssh/sshd_config").exists());
    assert_eq!(
        std::fs::read_link(etc.join("fstab")).expect("link"),
        Path::new("/proc/self/mounts")
    );
    assert!(std::fs::symlink_metadata(etc.join("mtab")).is_ok());
}

#[test]
fn assemble_refuses_a_root_without_berth() {
    let root = fake_root();
    std::fs::remove_file(root.path().join(NEWROOT).join(BERTH)).expect("rm");
    let e = assemble(&mut Recording::default(), root.path()).expect_err("not berth");
    assert!(e.to_string().contains("usr/bin/berth"), "{e}");
}

#[test]
fn switch_root_frees_the_initramfs_and_stays_in_this_process() {
    let root = fake_root();
    std::fs::write(root.path().join("init"), b"binary").expect("init");
    std::fs::create_dir_all(root.path().join("lib/modules/6.1/kernel")).expect("mkdir");
    std::fs::write(root.path().join("lib/modules/6.1/modules.dep"), b"").expect("w");
    let mut sys = Recording::default();
    switch_root(&mut sys, root.path(), true).expect("switch");
    assert_eq!(
        rel(root.path(), &sys.calls),
        [
            "chdir /sysroot",
            // The target is the (temporary) root itself.
            "mount .   [move] ",
            "chroot .",
            "chdir /",
        ]
    );
    let left: Vec<_> = std::fs::read_dir(root.path())
        .expect("read")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from(NEWROOT)]);
    assert!(
        root.path().join(NEWROOT).join(BERTH).exists(),
        "the new root is kept"
    );
}

#[test]
fn only_nvme_usb_and_mmc_controllers_make_the_state_search_wait() {
    let root = fake_root();
    // The fake root has block devices and SCSI hosts' classes, nothing late.
    std::fs::create_dir_all(root.path().join("sys/class/scsi_host/host0")).expect("scsi");
    assert!(!late_disks_possible(root.path()));
    for dir in [
        "sys/class/nvme/nvme0",
        "sys/bus/usb/devices/usb1",
        "sys/class/mmc_host/mmc0",
    ] {
        let root = fake_root();
        // An empty class directory (the driver loaded, no controller) is not one.
        let class = root.path().join(dir);
        std::fs::create_dir_all(class.parent().expect("parent")).expect("class");
        assert!(!late_disks_possible(root.path()), "{dir} without a device");
        std::fs::create_dir_all(&class).expect("device");
        assert!(late_disks_possible(root.path()), "{dir}");
    }
}
