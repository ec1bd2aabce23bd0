//! The busybox recipe builds with mmdebstrap into a runnable, reproducible image.

use std::path::Path;

use berth_images::recipe::{build, LoadedRecipe};
use berth_images::Store;

fn busybox() -> LoadedRecipe {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/busybox.yml");
    LoadedRecipe::load(&path).expect("recipe")
}

#[test]
fn busybox_builds_reproducibly_and_is_cached() {
    if !rustix::process::geteuid().is_root() {
        berth_testkit::skip!("mmdebstrap builds need root (cargo xtask test runs as root)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let recipe = busybox();
    let a = Store::open(dir.path().join("a")).expect("open");
    let b = Store::open(dir.path().join("b")).expect("open");
    let built = build(&a, &recipe, 1_700_000_000).expect("build");
    assert!(!built.cached);
    assert!(
        build(&a, &recipe, 1_700_000_000).expect("rebuild").cached,
        "unchanged recipes are cached"
    );
    build(&b, &recipe, 1_700_000_000).expect("build again");
    let (ia, ib) = (
        a.resolve("berth/busybox").expect("a"),
        b.resolve("berth/busybox").expect("b"),
    );
    assert_eq!(
        ia.manifest_digest, ib.manifest_digest,
        "same recipe and epoch, same image"
    );

    let config = &ia.config.config;
    assert_eq!(config.cmd.as_deref(), Some(&["/bin/sh".to_string()][..]));
    assert_eq!(
        ia.manifest.layers[0].media_type,
        berth_images::oci::OCI_LAYER_ZSTD
    );
    // The layer holds busybox and its applet links, and no device nodes.
    let layer = std::fs::File::open(a.blob_path(&ia.manifest.layers[0].digest)).expect("layer");
    let mut archive = tar::Archive::new(zstd::Decoder::new(layer).expect("zstd"));
    let mut names = Vec::new();
    for entry in archive.entries().expect("entries") {
        let entry = entry.expect("entry");
        let kind = entry.header().entry_type();
        assert!(
            !kind.is_character_special() && !kind.is_block_special(),
            "device node in an image"
        );
        names.push(
            entry
                .path()
                .expect("path")
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string(),
        );
    }
    for wanted in ["bin/busybox", "bin/sh", "bin/ls"] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} missing from {} entries",
            names.len()
        );
    }
}

/// Recipes are read by configs' parser: every shipped recipe loads, and a bad
/// one is reported at its file, line and column.
#[test]
fn recipes_load_and_bad_ones_are_located() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
    let mut loaded = 0;
    for entry in std::fs::read_dir(&dir).expect("recipes dir").flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "yml") {
            let recipe = LoadedRecipe::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!recipe.recipe.name.is_empty());
            loaded += 1;
        }
    }
    assert!(loaded >= 5, "only {loaded} recipes");
    let tmp = tempfile::tempdir().expect("tempdir");
    let bad = tmp.path().join("bad.yml");
    let shown = bad.display().to_string();
    let error_for = |text: &str| {
        std::fs::write(&bad, text).expect("write");
        LoadedRecipe::load(&bad)
            .expect_err("bad recipe")
            .to_string()
    };
    let err = error_for("name: x\npackages: [a]\nbusybox_applets: maybe\n");
    assert!(err.contains(&format!("{shown}:3:18")), "{err}");
    assert!(err.contains("busybox_applets"), "{err}");
    let err = error_for("name: x\npackagse: [b]\n");
    assert!(err.contains(&format!("{shown}:2:1")), "{err}");
    assert!(err.contains("`packages`"), "did you mean: {err}");
}
