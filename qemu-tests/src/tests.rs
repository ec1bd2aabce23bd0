use super::*;
use crate::vm::find;

#[test]
fn uefi_command_uses_pflash_and_a_private_vars_copy() {
    if ovmf().is_err() {
        berth_testkit::skip!("no OVMF installed (cargo xtask installs ovmf)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cmd = Config::new("t", Boot::Cdrom("/x.iso".into()))
        .firmware(Firmware::Uefi)
        .forward(2222, 22)
        .command(dir.path())
        .expect("command");
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let joined = args.join(" ");
    assert!(joined.contains("if=pflash,format=raw,unit=0,readonly=on"));
    assert!(joined.contains(&dir.path().join("OVMF_VARS.fd").display().to_string()));
    assert!(joined.contains("hostfwd=tcp:127.0.0.1:2222-:22"));
    assert!(joined.contains("media=cdrom"));
    assert!(dir.path().join("OVMF_VARS.fd").exists());
}

#[test]
fn links_are_dgram_pairs_with_swapped_ports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Link::new("52:54:00:09:09:01")
        .expect("ports")
        .dump(&dir.path().join("a.pcap"));
    let b = a.peer("52:54:00:09:09:02");
    assert_eq!((b.local_port, b.remote_port), (a.remote_port, a.local_port));
    let args = |link: Link| {
        Config::new("t", Boot::Disk)
            .link(link)
            .command(dir.path())
            .expect("command")
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let joined = args(a.clone());
    assert!(joined.contains(&format!(
            "dgram,id=link0,local.type=inet,local.host=127.0.0.1,local.port={},remote.type=inet,remote.host=127.0.0.1,remote.port={}",
            a.local_port, a.remote_port
        )), "{joined}");
    assert!(joined.contains("virtio-net-pci,netdev=link0,mac=52:54:00:09:09:01,romfile="));
    assert!(joined.contains("filter-dump,id=dump0,netdev=link0,file="));
    assert!(!args(b).contains("filter-dump"));
}

#[test]
fn free_ports_are_nonzero() {
    assert_ne!(free_port().expect("port"), 0);
}

#[test]
fn blank_disk_is_sparse_and_sized() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("d.img");
    blank_disk(&p, 1 << 30).expect("disk");
    let meta = std::fs::metadata(&p).expect("meta");
    assert_eq!(meta.len(), 1 << 30);
    use std::os::unix::fs::MetadataExt;
    assert!(meta.blocks() < 64, "not sparse: {} blocks", meta.blocks());
}

#[test]
fn find_locates_needles() {
    assert_eq!(find(b"abcdef", b"cd"), Some(2));
    assert_eq!(find(b"abc", b"x"), None);
}
