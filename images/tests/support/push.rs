//! Test images pushed to a registry with skopeo.

use std::path::Path;

use berth_images::archive::{self, single_layer_config};
use berth_images::oci::{self, Descriptor};
use berth_images::Store;
use berth_testkit::registry::Registry;

/// Builds an image of one file per layer in a scratch store and pushes it to
/// `registry` as `name`; returns the reference it is pulled by and the store.
pub fn push_image(
    dir: &Path,
    registry: &Registry,
    name: &str,
    files: &[(&str, Vec<u8>)],
) -> (String, Store) {
    let store = Store::open(dir.join("source")).expect("open");
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (name, content) in files {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, name, &content[..])
            .expect("append");
        let tar = builder.into_inner().expect("tar");
        diff_ids.push(berth_images::Digest::of(&tar));
        // Compressed already, so skopeo pushes the layer as is instead of gzipping it.
        let zstd = zstd::encode_all(&tar[..], 1).expect("zstd");
        let (digest, size) = store.put_blob(&zstd[..], None, None).expect("layer");
        layers.push(Descriptor::new(oci::OCI_LAYER_ZSTD, digest, size));
    }
    let mut config = single_layer_config(diff_ids[0].clone());
    config.rootfs.diff_ids = diff_ids;
    store
        .put_image("test/img:1", &config, layers)
        .expect("image");
    let archive_path = dir.join("img.tar");
    archive::export(&store, "test/img:1", &archive_path).expect("export");
    let reference = registry
        .push(&archive_path, name)
        .unwrap_or_else(|e| panic!("{e}"));
    (reference, store)
}

/// Incompressible bytes, quickly: a pull of them takes long enough to interrupt.
pub fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}
