//! An OS image's layer read as the registry sends it (`pull::Remote`), as
//! `berth os upgrade` writes it into a slot: from Debian's `docker-registry`
//! on 127.0.0.1, through a proxy the test controls where a test needs the
//! connection cut.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use berth_images::os_image::{self, OsImage};
use berth_images::pull::{PullError, PullOptions, Quiet, Remote};
use berth_images::{Reference, Store};
use berth_testkit::registry::Registry;

mod support;
use support::proxy::{Fault, FaultyProxy};
use support::push::noise;

const ROOTFS_BYTES: usize = 6 << 20;

/// Builds an OS image of version 2.0 and pushes it as `berth/os:2.0`;
/// returns the reference and what its three files hold.
fn push_os_image(dir: &Path, registry: &Registry) -> (String, BTreeMap<String, Vec<u8>>) {
    let p = |n: &str| dir.join(n);
    let files = BTreeMap::from([
        ("vmlinuz".to_string(), b"a kernel".to_vec()),
        ("initrd".to_string(), b"an initrd".to_vec()),
        ("rootfs.squashfs".to_string(), noise(ROOTFS_BYTES)),
    ]);
    for (name, data) in &files {
        std::fs::write(p(name), data).expect("write");
    }
    let store = Store::open(p("source")).expect("store");
    os_image::build(
        &store,
        "berth/os:2.0",
        "2.0",
        "console=ttyS0",
        [&p("vmlinuz"), &p("initrd"), &p("rootfs.squashfs")],
    )
    .expect("build");
    let archive = p("os.tar");
    berth_images::archive::export(&store, "berth/os:2.0", &archive).expect("export");
    let reference = registry
        .push(&archive, "berth/os:2.0")
        .unwrap_or_else(|e| panic!("{e}"));
    (reference, files)
}

fn options(port: u16) -> PullOptions {
    PullOptions {
        insecure: vec![format!("127.0.0.1:{port}")],
        credentials: None,
        attempts: 3,
        // Short, for the stalled connection's test.
        stall_timeout: Some(Duration::from_secs(2)),
        ..PullOptions::default()
    }
}

/// Streams `reference`'s layer the way an upgrade does; returns the files
/// it held, or where it failed.
fn stream(
    dir: &Path,
    reference: &str,
    port: u16,
) -> Result<(OsImage, BTreeMap<String, Vec<u8>>), String> {
    let store = Store::open(dir.join("download")).expect("store");
    let parsed = Reference::parse(reference).expect("reference");
    let remote =
        Remote::connect(&store, &parsed, &options(port), &Quiet).map_err(|e| e.to_string())?;
    let image = remote.image().map_err(|e| e.to_string())?;
    let os = os_image::describe(&image).map_err(|e| e.to_string())?;
    let mut reader = remote.layer(&image.manifest.layers[0]);
    let mut got = BTreeMap::new();
    os_image::extract_from(&mut reader, &os, |name, size, r| {
        let mut data = Vec::new();
        r.read_to_end(&mut data)?;
        assert_eq!(data.len() as u64, size);
        got.insert(name.to_string(), data);
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    reader.finish().map_err(|e| e.to_string())?;
    assert!(
        store.list().expect("list").is_empty(),
        "nothing is named in the download store"
    );
    assert!(
        !store.has_blob(&os.layer),
        "the layer never goes into the store"
    );
    Ok((os, got))
}

#[test]
fn an_os_image_streams_from_the_registry_into_what_reads_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = Registry::start(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let (reference, files) = push_os_image(dir.path(), &registry);
    let (os, got) = stream(dir.path(), &reference, registry.port).expect("stream");
    assert_eq!(os.version, "2.0");
    assert_eq!(os.kernel_args.as_deref(), Some("console=ttyS0"));
    assert_eq!(got, files);
}

#[test]
fn a_layer_changed_in_the_registry_fails_at_its_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = Registry::start(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let (reference, _) = push_os_image(dir.path(), &registry);
    // The largest blob is the layer; one bit flipped in the middle of the rootfs.
    let blob = largest_file(&registry.data.join("docker/registry/v2/blobs"));
    let mut bytes = std::fs::read(&blob).expect("blob");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&blob, bytes).expect("corrupt");

    let err = stream(dir.path(), &reference, registry.port).expect_err("a changed layer");
    assert!(err.contains("digest"), "{err}");
}

#[test]
fn a_connection_cut_in_the_layer_goes_on_from_where_it_stopped() {
    goes_on_after(Fault::Cut);
}

#[test]
fn a_connection_that_stalls_in_the_layer_goes_on_from_where_it_stopped() {
    goes_on_after(Fault::Stall);
}

/// The layer's connection broken by `fault` a third of the way into the
/// rootfs: the stream asks again from the byte it stopped at, and the files
/// come out whole.
fn goes_on_after(fault: Fault) {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = Registry::start(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let (reference, files) = push_os_image(dir.path(), &registry);
    let proxy = FaultyProxy::start(registry.port, ROOTFS_BYTES / 3, fault);
    let through_proxy = reference.replace(
        &format!("127.0.0.1:{}", registry.port),
        &format!("127.0.0.1:{}", proxy.port),
    );
    let (done, outcome) = std::sync::mpsc::channel();
    let (scratch, port) = (dir.path().to_path_buf(), proxy.port);
    std::thread::spawn(move || {
        let _ = done.send(stream(&scratch, &through_proxy, port));
    });
    let (_, got) = outcome
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("the stream never went on after a {fault:?}"))
        .expect("stream");
    assert_eq!(got, files);
    assert!(proxy.connections.load(Ordering::SeqCst) >= 2);
    let from = proxy.resumed_from().unwrap_or_else(|| {
        panic!(
            "no request went on from where the {fault:?} was: {:#?}",
            proxy.requests.lock().expect("requests")
        )
    });
    assert!(from < ROOTFS_BYTES, "{from}");
}

#[test]
fn a_registry_that_cannot_be_reached_is_one_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = berth_testkit::free_port().expect("port");
    let store = Store::open(dir.path().join("download")).expect("store");
    let parsed = Reference::parse(&format!("127.0.0.1:{port}/berth/os:2.0")).expect("reference");
    let remote = Remote::connect(&store, &parsed, &options(port), &Quiet).expect("connect");
    let err = remote.image().expect_err("nothing listens");
    assert!(matches!(err, PullError::Unreachable { .. }), "{err:?}");
}

fn largest_file(dir: &Path) -> std::path::PathBuf {
    let mut best = (0, None);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let path = entry.path();
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                stack.push(path);
            } else if meta.len() > best.0 {
                best = (meta.len(), Some(path));
            }
        }
    }
    best.1.expect("a blob")
}
