//! The store and import/export, on real files: digests checked, nothing half
//! written ever named, unreferenced data collected.

use std::io::Write;
use std::path::Path;

use berth_images::archive::{self, single_layer_config};
use berth_images::oci::{self, Descriptor, Manifest};
use berth_images::{Digest, Store, StoreError};

/// An uncompressed layer tar holding `files`.
fn layer(files: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, content) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, name, content.as_bytes())
            .expect("append");
    }
    builder.into_inner().expect("tar")
}

/// Stores a one-layer image and names it.
fn add_image(store: &Store, reference: &str, files: &[(&str, &str)]) -> Descriptor {
    let tar = layer(files);
    let (digest, size) = store.put_blob(&tar[..], None, None).expect("layer");
    let layer = Descriptor::new(oci::OCI_LAYER, digest.clone(), size);
    store
        .put_image(reference, &single_layer_config(digest), vec![layer])
        .expect("image")
}

fn blob_count(store: &Store) -> usize {
    std::fs::read_dir(store.layout_dir().join("blobs/sha256"))
        .expect("blobs")
        .count()
}

#[test]
fn put_blob_verifies_digest_and_size_and_leaves_nothing_on_mismatch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let good = Digest::of(b"hello");
    let (digest, size) = store
        .put_blob(&b"hello"[..], Some(&good), Some(5))
        .expect("put");
    assert_eq!((digest, size), (good.clone(), 5));
    assert!(store.has_blob(&good));

    let err = store
        .put_blob(&b"hellO"[..], Some(&Digest::of(b"other")), None)
        .expect_err("mismatch");
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    let err = store
        .put_blob(&b"hello"[..], Some(&good), Some(6))
        .expect_err("size");
    assert!(matches!(err, StoreError::SizeMismatch { .. }), "{err}");
    assert_eq!(blob_count(&store), 1, "a rejected blob is never in blobs/");
    let tmp = std::fs::read_dir(store.layout_dir().join("tmp"))
        .expect("tmp")
        .count();
    assert_eq!(tmp, 0, "temp files are cleaned up");
}

#[test]
fn tag_resolve_list_remove_and_prune() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    add_image(&store, "berth/a", &[("etc/a", "a")]);
    add_image(&store, "localhost:5000/b:v1", &[("etc/b", "b")]);
    let images = store.list().expect("list");
    let names: Vec<_> = images.iter().map(|i| i.reference.as_str()).collect();
    assert_eq!(names, ["berth/a:latest", "localhost:5000/b:v1"]);
    let a = store.resolve("berth/a:latest").expect("resolve");
    assert_eq!(a.config.rootfs.diff_ids.len(), 1);
    assert_eq!(
        store
            .resolve("berth/a")
            .expect("default tag")
            .manifest_digest,
        a.manifest_digest
    );

    // A layer dir for `a` survives prune while `a` is named; one for nothing goes.
    std::fs::create_dir_all(store.layer_dir(&a.config.rootfs.diff_ids[0])).expect("mkdir");
    std::fs::create_dir_all(store.layer_dir(&Digest::of(b"orphan"))).expect("mkdir");
    let report = store.prune().expect("prune");
    assert_eq!((report.blobs_removed, report.layers_removed), (0, 1));

    store.remove("berth/a").expect("remove");
    assert!(matches!(
        store.resolve("berth/a"),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.remove("berth/a"),
        Err(StoreError::NotFound { .. })
    ));
    let report = store.prune().expect("prune");
    assert_eq!(report.blobs_removed, 3, "layer, config and manifest of `a`");
    assert_eq!(report.layers_removed, 1);
    assert!(
        store.resolve("localhost:5000/b:v1").is_ok(),
        "b is untouched"
    );
}

#[test]
fn a_crash_before_the_index_is_written_leaves_the_store_as_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    add_image(&store, "kept", &[("x", "x")]);
    let index_before = std::fs::read(store.layout_dir().join("index.json")).expect("index");
    // What an interrupted import leaves: blobs and a half-written temp file, no index change.
    store
        .put_blob(&b"orphan blob"[..], None, None)
        .expect("blob");
    std::fs::write(store.layout_dir().join("tmp/blob-partial"), b"half").expect("tmp");
    let reopened = Store::open(dir.path()).expect("reopen");
    assert_eq!(
        std::fs::read(reopened.layout_dir().join("index.json")).expect("index"),
        index_before
    );
    assert_eq!(reopened.list().expect("list").len(), 1);
    let report = reopened.prune().expect("prune");
    assert_eq!(report.blobs_removed, 1);
    assert_eq!(
        std::fs::read_dir(reopened.layout_dir().join("tmp"))
            .expect("tmp")
            .count(),
        0
    );
}

#[test]
fn export_then_import_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("a")).expect("open");
    add_image(&store, "berth/busybox:1", &[("bin/sh", "#!")]);
    let archive = dir.path().join("bb.tar");
    archive::export(&store, "berth/busybox:1", &archive).expect("export");

    let other = Store::open(dir.path().join("b")).expect("open");
    let imported = archive::import(&other, &archive, None).expect("import");
    assert_eq!(imported.references, ["berth/busybox:1"]);
    assert_eq!(
        other
            .resolve("berth/busybox:1")
            .expect("resolve")
            .manifest_digest,
        store
            .resolve("berth/busybox:1")
            .expect("resolve")
            .manifest_digest
    );
}

#[test]
fn a_corrupted_blob_is_rejected_and_nothing_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("a")).expect("open");
    let descriptor = add_image(&store, "img", &[("f", "data")]);
    let manifest: Manifest =
        serde_json::from_slice(&store.read_json_blob(&descriptor.digest).expect("manifest"))
            .expect("json");
    // Copy the layout and flip one byte of the layer.
    let copy = dir.path().join("layout");
    copy_dir(&store.layout_dir(), &copy);
    let layer = copy
        .join("blobs/sha256")
        .join(manifest.layers[0].digest.hex());
    let mut bytes = std::fs::read(&layer).expect("layer");
    bytes[600] ^= 1;
    std::fs::write(&layer, bytes).expect("corrupt");

    let other = Store::open(dir.path().join("b")).expect("open");
    let err = archive::import(&other, &copy, None).expect_err("corrupt");
    assert!(
        err.to_string().contains(manifest.layers[0].digest.hex()),
        "{err}"
    );
    assert!(other.list().expect("list").is_empty(), "nothing was named");
}

#[test]
fn docker_save_archives_import_and_a_bad_layer_is_caught_by_its_diff_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layer_tar = layer(&[("hello", "world")]);
    let diff_id = Digest::of(&layer_tar);
    let config = serde_json::to_vec(&single_layer_config(diff_id)).expect("config");
    let save = |layer: &[u8], path: &Path| {
        let manifest = serde_json::json!([{
            "Config": "cfg.json",
            "RepoTags": ["example/app:1.0"],
            "Layers": ["abc/layer.tar"],
        }]);
        let mut builder = tar::Builder::new(std::fs::File::create(path).expect("create"));
        for (name, data) in [
            ("abc/layer.tar", layer),
            ("cfg.json", &config[..]),
            (
                "manifest.json",
                &serde_json::to_vec(&manifest).expect("json")[..],
            ),
        ] {
            let mut header = tar::Header::new_ustar();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            builder
                .append_data(&mut header, name, data)
                .expect("append");
        }
        builder
            .into_inner()
            .expect("finish")
            .flush()
            .expect("flush");
    };
    let good = dir.path().join("good.tar");
    save(&layer_tar, &good);
    let store = Store::open(dir.path().join("store")).expect("open");
    let imported = archive::import(&store, &good, None).expect("import");
    assert_eq!(imported.references, ["example/app:1.0"]);
    let image = store.resolve("example/app:1.0").expect("resolve");
    assert_eq!(image.manifest.layers[0].media_type, oci::OCI_LAYER);

    let mut bad_layer = layer_tar.clone();
    bad_layer[600] ^= 1;
    let bad = dir.path().join("bad.tar");
    save(&bad_layer, &bad);
    let store = Store::open(dir.path().join("store2")).expect("open");
    let err = archive::import(&store, &bad, None).expect_err("bad layer");
    assert!(err.to_string().contains("abc/layer.tar"), "{err}");
    assert!(store.list().expect("list").is_empty());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Two writers naming images at once (as two `berth image pull` would, each
/// with its own handle on the store) lose no name and never leave a
/// half-written index; a writer removing names meanwhile removes only its own.
#[test]
fn concurrent_index_writers_lose_nothing() {
    const WRITERS: usize = 2;
    const IMAGES: usize = 25;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let root = root.clone();
            std::thread::spawn(move || {
                let store = Store::open(&root).expect("open");
                for i in 0..IMAGES {
                    let name = format!("test/w{w}:{i}");
                    add_image(&store, &name, &[("file", &name)]);
                    // Every other one is named twice and the spare removed:
                    // removes interleave with the other writer's tags.
                    if i % 2 == 0 {
                        let spare = format!("test/w{w}-spare:{i}");
                        add_image(&store, &spare, &[("file", &spare)]);
                        store.remove(&spare).expect("remove");
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    let store = Store::open(&root).expect("open");
    let mut names: Vec<String> = store
        .list()
        .expect("the index parses")
        .into_iter()
        .map(|i| i.reference)
        .collect();
    names.sort();
    let mut expected: Vec<String> = (0..WRITERS)
        .flat_map(|w| (0..IMAGES).map(move |i| format!("test/w{w}:{i}")))
        .map(|n| berth_images::Reference::parse(&n).expect("ref").to_string())
        .collect();
    expected.sort();
    assert_eq!(names, expected);
    let leftovers = std::fs::read_dir(store.layout_dir().join("tmp"))
        .expect("tmp")
        .count();
    assert_eq!(leftovers, 0, "temporary files left behind");
}

/// A prune beside a writer that is still adding blobs (as a pull does,
/// naming the image only at the end) removes nothing the writer then names.
#[test]
fn prune_beside_a_writer_keeps_what_it_is_adding() {
    const IMAGES: usize = 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (pruning, started) = std::sync::mpsc::channel();
    let pruner = {
        let (root, done) = (root.clone(), std::sync::Arc::clone(&done));
        std::thread::spawn(move || {
            let store = Store::open(&root).expect("open");
            let mut prunes = 0;
            loop {
                store.prune().expect("prune");
                prunes += 1;
                let _ = pruning.send(());
                if done.load(std::sync::atomic::Ordering::SeqCst) {
                    return prunes;
                }
            }
        })
    };
    // The writer starts once the pruner is pruning, so they overlap.
    started.recv().expect("the pruner started");
    let store = Store::open(&root).expect("open");
    for i in 0..IMAGES {
        let name = format!("test/pulled:{i}");
        let _adding = store.adding().expect("adding");
        add_image(&store, &name, &[("file", &name)]);
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let prunes = pruner.join().expect("pruner");
    eprintln!("{prunes} prunes beside the writer");
    for i in 0..IMAGES {
        let name = format!("test/pulled:{i}");
        let image = store.resolve(&name).expect("named");
        for layer in &image.manifest.layers {
            assert!(store.has_blob(&layer.digest), "{name}: layer gone");
        }
        assert!(
            store.has_blob(&image.manifest.config.digest),
            "{name}: config gone"
        );
    }
}
