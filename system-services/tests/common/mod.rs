//! Shared by berthd's tests and benches that run real containers (`#[path]`
//! from benches/): the busybox test image.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use berth_images::progress::Quiet;
use berth_images::recipe::{build, LoadedRecipe};
use berth_images::unpack::Limits;
use berth_images::Store;
use berthd::runtime::{ImageLayers, Youki, YoukiConfig};

/// The busybox recipe image, built (or found cached) and unpacked with the
/// store's own unpacker: (store, reference, layers). The store is kept in the
/// target dir, shared with the CLI's tests, so reruns reuse the build (the
/// recipe code caches by hash).
pub fn busybox() -> Result<(PathBuf, String, ImageLayers), String> {
    let recipe_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/recipes/busybox.yml");
    let recipe = LoadedRecipe::load(&recipe_path).map_err(|e| e.to_string())?;
    let store_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("berthd-runtime-images");
    let store = Store::open(&store_dir).map_err(|e| e.to_string())?;
    let built = build(&store, &recipe, 1_700_000_000).map_err(|e| e.to_string())?;
    let image = store.resolve(&built.reference).map_err(|e| e.to_string())?;
    let layers = store
        .unpack_image(&image, &Limits::default(), &Quiet)
        .map_err(|e| format!("unpack: {e}"))?;
    Ok((
        store_dir,
        built.reference,
        ImageLayers {
            layers,
            config: image.config.config.clone(),
        },
    ))
}

/// [`busybox`]'s layers alone.
pub fn busybox_image() -> Result<ImageLayers, String> {
    busybox().map(|(_, _, layers)| layers)
}

/// The runtime with its state under `dir` (its forker forked now: call this
/// before any thread exists), then the busybox image; either failing fails
/// the test binary.
pub fn runtime_and_image(dir: &Path, berth_binary: Option<PathBuf>) -> (Youki, ImageLayers) {
    let runtime = Youki::new(YoukiConfig {
        root: dir.join("run"),
        volumes_dir: dir.join("volumes"),
        berth_binary,
    })
    .unwrap_or_else(|e| panic!("runtime: {e}"));
    let image = busybox_image().unwrap_or_else(|e| panic!("busybox image: {e}"));
    (runtime, image)
}
