//! Pulling from a real registry: Debian's `docker-registry`, started on 127.0.0.1
//! by the test, with the test image pushed there by skopeo.

use std::path::{Path, PathBuf};

use berth_images::pull::{pull, PullError, PullOptions, Quiet};
use berth_images::Store;
use berth_testkit::registry::Registry;

mod support;
use support::proxy::{Fault, FaultyProxy};
use support::push::{noise, push_image};

fn start_registry(dir: &Path) -> Registry {
    Registry::start(dir).unwrap_or_else(|e| panic!("{e}"))
}

/// Builds a two-layer image in a scratch store and pushes it as `test/img:1`;
/// returns the reference to pull and the store it was built in.
fn push_test_image(dir: &Path, registry: &Registry) -> (String, Store) {
    push_image(
        dir,
        registry,
        "test/img:1",
        &[("etc/one", b"1".to_vec()), ("etc/two", b"2".to_vec())],
    )
}

fn options(port: u16) -> PullOptions {
    PullOptions {
        insecure: vec![format!("127.0.0.1:{port}")],
        credentials: None,
        attempts: 2,
        ..PullOptions::default()
    }
}

#[test]
fn pull_from_a_local_registry_verifies_and_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = start_registry(dir.path());
    let (reference, source) = push_test_image(dir.path(), &registry);
    let expected = source.resolve("test/img:1").expect("source image");

    let store = Store::open(dir.path().join("store")).expect("open");
    let name = pull(&store, &reference, &options(registry.port), &Quiet).expect("pull");
    assert_eq!(name, reference);
    let pulled = store.resolve(&reference).expect("resolve");
    assert_eq!(
        pulled.config.rootfs.diff_ids,
        expected.config.rootfs.diff_ids
    );
    assert_eq!(pulled.manifest.layers.len(), 2);

    // An interrupted pull: the image unnamed, one layer gone, a partial temp file.
    let resumed = Store::open(dir.path().join("resumed")).expect("open");
    pull(&resumed, &reference, &options(registry.port), &Quiet).expect("pull");
    resumed.remove(&reference).expect("unname");
    std::fs::remove_file(resumed.blob_path(&pulled.manifest.layers[1].digest)).expect("drop layer");
    std::fs::write(
        resumed.layout_dir().join("tmp/blob-partial"),
        b"half a layer",
    )
    .expect("partial");
    pull(&resumed, &reference, &options(registry.port), &Quiet).expect("pull again");
    assert!(resumed.has_blob(&pulled.manifest.layers[1].digest));
    assert!(resumed.resolve(&reference).is_ok());

    // Plain http to a registry not listed as insecure is refused (https only).
    let strict = PullOptions {
        insecure: Vec::new(),
        attempts: 1,
        ca_certs: Vec::new(),
        ..PullOptions::default()
    };
    let err = pull(
        &Store::open(dir.path().join("s")).expect("open"),
        &reference,
        &strict,
        &Quiet,
    )
    .expect_err("https to an http registry");
    assert!(!err.to_string().is_empty());
}

#[test]
fn a_corrupt_blob_in_the_registry_is_rejected_and_nothing_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = start_registry(dir.path());
    let (reference, _) = push_test_image(dir.path(), &registry);
    // skopeo may recompress layers on push, so find the registry's largest blob: a layer.
    let mut blobs = Vec::new();
    collect_files(&registry.data.join("docker/registry/v2/blobs"), &mut blobs);
    let blob = blobs
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a blob in the registry");
    let mut bytes = std::fs::read(&blob).expect("registry blob");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&blob, bytes).expect("corrupt");

    let store = Store::open(dir.path().join("store")).expect("open");
    let err = pull(&store, &reference, &options(registry.port), &Quiet).expect_err("corrupt layer");
    assert!(
        err.to_string().contains("sha256") || err.to_string().contains("digest"),
        "{err}"
    );
    assert!(store.list().expect("list").is_empty(), "nothing is named");
}

#[test]
fn missing_images_and_unreachable_registries_are_one_clear_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = start_registry(dir.path());
    let store = Store::open(dir.path().join("store")).expect("open");
    let missing = format!("127.0.0.1:{}/no/such:image", registry.port);
    let err = pull(&store, &missing, &options(registry.port), &Quiet).expect_err("missing");
    assert!(matches!(err, PullError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("no/such"), "{err}");

    let port = berth_testkit::free_port().expect("port");
    let err = pull(
        &store,
        &format!("127.0.0.1:{port}/x:1"),
        &options(port),
        &Quiet,
    )
    .expect_err("unreachable");
    assert!(matches!(err, PullError::Unreachable { .. }), "{err:?}");
    assert!(!err.to_string().contains('\n'), "{err}");
}

/// A layer's connection cut, or stalled, partway: the pull asks again from
/// the byte it stopped at and stores the layer whole.
#[test]
fn a_pull_broken_in_a_layer_goes_on_from_where_it_stopped() {
    for fault in [Fault::Cut, Fault::Stall] {
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = start_registry(dir.path());
        let big = noise(6 << 20);
        let (reference, source) = push_image(dir.path(), &registry, "test/big:1", &[("big", big)]);
        let layer = source
            .resolve("test/img:1")
            .expect("source")
            .manifest
            .layers[0]
            .clone();
        let proxy = FaultyProxy::start(registry.port, 2 << 20, fault);
        let through = reference.replace(
            &format!("127.0.0.1:{}", registry.port),
            &format!("127.0.0.1:{}", proxy.port),
        );
        let options = PullOptions {
            attempts: 3,
            stall_timeout: Some(std::time::Duration::from_secs(2)),
            ..options(proxy.port)
        };
        let store = Store::open(dir.path().join("store")).expect("open");
        let (done, outcome) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let pulled = pull(&store, &through, &options, &Quiet).map(|_| store);
            let _ = done.send(pulled);
        });
        let store = outcome
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the pull never went on after a {fault:?}"))
            .expect("pull");
        assert!(store.has_blob(&layer.digest), "{fault:?}");
        let from = proxy
            .resumed_from()
            .unwrap_or_else(|| panic!("the pull started the layer again after a {fault:?}"));
        assert!(from < layer.size as usize, "{from}");
    }
}

/// A registry that accepts connections and then says nothing fails each
/// attempt after the stall timeout, instead of holding the pull forever.
#[test]
fn a_registry_that_answers_nothing_fails_after_the_stall_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        // Held open, never answered.
        let held: Vec<_> = silent.incoming().flatten().collect();
        drop(held);
    });
    let options = PullOptions {
        stall_timeout: Some(std::time::Duration::from_secs(1)),
        ..options(port)
    };
    let store = Store::open(dir.path().join("store")).expect("open");
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(pull(
            &store,
            &format!("127.0.0.1:{port}/x:1"),
            &options,
            &Quiet,
        ));
    });
    let err = outcome
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the pull gave up on a silent registry")
        .expect_err("nothing was sent");
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}
