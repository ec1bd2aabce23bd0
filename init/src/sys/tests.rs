use super::*;

#[test]
fn mountinfo_targets_and_types() {
    let text = "22 1 0:21 / / ro,relatime - squashfs /dev/loop0 ro\n\
                23 22 0:5 / /dev rw - devtmpfs devtmpfs rw\n\
                40 22 8:1 /var /var rw - ext4 /dev/vda1 rw\n\
                41 22 0:40 / /mnt/a\\040b rw - tmpfs tmpfs rw\n";
    let m = parse_mountinfo(text);
    assert_eq!(m.len(), 4);
    assert_eq!(m[0].target, Path::new("/"));
    assert_eq!(m[0].fstype, "squashfs");
    assert_eq!(m[2].target, Path::new("/var"));
    assert_eq!(m[3].target, Path::new("/mnt/a b"));
}

mod privileged {
    use super::*;

    /// Root with loop devices: attach a real file and read it back through the device.
    #[test]
    fn attach_loop_reads_the_file() {
        if !Path::new("/dev/loop-control").exists() || unsafe_is_not_root() {
            berth_testkit::skip!("needs root and /dev/loop-control");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("img");
        let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&file, &data).expect("write");
        let dev = Linux.attach_loop(&file, Path::new("/dev")).expect("attach");
        let node = dev.node.clone();
        let name = node
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let size = std::fs::read_to_string(format!("/sys/block/{name}/size")).expect("size");
        let back = std::fs::read(&node).expect("read device");
        let ro = std::fs::read_to_string(format!("/sys/block/{name}/ro")).expect("ro");
        assert_eq!(size.trim(), "2048");
        assert_eq!(ro.trim(), "1");
        assert!(back == data);
        // Autoclear frees the device once its last user is gone, i.e. now.
        drop(dev);
        let size = std::fs::read_to_string(format!("/sys/block/{name}/size")).expect("size");
        assert_eq!(size.trim(), "0");
    }

    fn unsafe_is_not_root() -> bool {
        // SAFETY: geteuid cannot fail.
        unsafe { libc::geteuid() != 0 }
    }
}
