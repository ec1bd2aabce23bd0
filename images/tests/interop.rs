//! Interop with the tools people already have: layouts written by `umoci` and
//! `skopeo` (and skopeo's docker-archive) import; what Berth exports, skopeo reads.
//! No network: the images are built here from a directory of files.

use std::path::Path;
use std::process::Command;

use berth_images::{archive, Store};

/// Runs a tool, failing the test with its output if it fails. A missing tool
/// fails too: `cargo xtask test` installs them, so absence is a broken setup.
fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{tool}` ({e}); `cargo xtask test` installs it"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An OCI layout made by umoci from a small directory tree, tagged `t`.
fn umoci_layout(dir: &Path) -> std::path::PathBuf {
    let layout = dir.join("umoci-layout");
    let bundle = dir.join("bundle");
    let l = layout.to_str().expect("utf8");
    run("umoci", &["init", "--layout", l]);
    run("umoci", &["new", "--image", &format!("{l}:t")]);
    run(
        "umoci",
        &[
            "unpack",
            "--rootless",
            "--image",
            &format!("{l}:t"),
            bundle.to_str().expect("utf8"),
        ],
    );
    std::fs::create_dir_all(bundle.join("rootfs/etc")).expect("mkdir");
    std::fs::write(bundle.join("rootfs/etc/berth-test"), "from umoci\n").expect("write");
    run(
        "umoci",
        &[
            "repack",
            "--image",
            &format!("{l}:t"),
            bundle.to_str().expect("utf8"),
        ],
    );
    run(
        "umoci",
        &[
            "config",
            "--image",
            &format!("{l}:t"),
            "--config.entrypoint",
            "/bin/true",
        ],
    );
    layout
}

#[test]
fn layouts_from_umoci_and_skopeo_import_and_exports_are_read_by_skopeo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let umoci = umoci_layout(dir.path());
    let store = Store::open(dir.path().join("store")).expect("open");

    // umoci's layout names the image by tag alone; Berth names it after the directory.
    let imported =
        archive::import(&store, &umoci, Some("test/umoci")).expect("import umoci layout");
    assert_eq!(imported.references, ["test/umoci:t"]);
    let image = store.resolve("test/umoci:t").expect("resolve");
    assert_eq!(
        image.config.config.entrypoint.as_deref(),
        Some(&["/bin/true".to_string()][..])
    );

    // skopeo copies it to a layout of its own and to a docker-archive (docker save format).
    let skopeo_layout = dir.path().join("skopeo-layout");
    let docker_archive = dir.path().join("docker.tar");
    let oci_archive = dir.path().join("skopeo-oci.tar");
    let src = format!("oci:{}:t", umoci.display());
    run(
        "skopeo",
        &[
            "copy",
            "--quiet",
            &src,
            &format!("oci:{}:s", skopeo_layout.display()),
        ],
    );
    run(
        "skopeo",
        &[
            "copy",
            "--quiet",
            &src,
            &format!("docker-archive:{}:test/docker:d", docker_archive.display()),
        ],
    );
    run(
        "skopeo",
        &[
            "copy",
            "--quiet",
            &src,
            &format!("oci-archive:{}:a", oci_archive.display()),
        ],
    );

    let imported =
        archive::import(&store, &skopeo_layout, Some("test/skopeo")).expect("skopeo layout");
    assert_eq!(imported.references, ["test/skopeo:s"]);
    let imported = archive::import(&store, &docker_archive, None).expect("docker-archive");
    assert_eq!(imported.references, ["test/docker:d"]);
    let imported =
        archive::import(&store, &oci_archive, Some("test/ociarchive")).expect("oci-archive");
    assert_eq!(imported.references, ["test/ociarchive:a"]);
    let docker = store.resolve("test/docker:d").expect("resolve");
    assert_eq!(
        docker.config.rootfs.diff_ids, image.config.rootfs.diff_ids,
        "same content"
    );

    // Berth's export is an oci-archive skopeo inspects and copies.
    let exported = dir.path().join("berth-export.tar");
    archive::export(&store, "test/docker:d", &exported).expect("export");
    let inspect = run(
        "skopeo",
        &["inspect", &format!("oci-archive:{}", exported.display())],
    );
    let inspect: serde_json::Value = serde_json::from_str(&inspect).expect("json");
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(
        inspect["Layers"].as_array().map(Vec::len),
        Some(image.manifest.layers.len())
    );
    let out = dir.path().join("copied");
    run(
        "skopeo",
        &[
            "copy",
            "--quiet",
            &format!("oci-archive:{}", exported.display()),
            &format!("oci:{}:x", out.display()),
        ],
    );
    let again =
        archive::import(&store, &out, Some("test/roundtrip")).expect("import skopeo's copy");
    assert_eq!(again.references, ["test/roundtrip:x"]);
}
