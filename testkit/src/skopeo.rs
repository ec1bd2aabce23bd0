//! The busybox test image handed to an engine: copied with skopeo out of
//! the image store that holds it into the archive the engine loads, the
//! same way by the QEMU tests and the podman engine test.

use std::path::{Path, PathBuf};
use std::process::Command;

/// How a test hands the busybox image to an engine.
#[derive(Debug, Clone, Copy)]
pub enum Archive<'a> {
    /// A `docker load` archive tagged `tag` with gzip layers: docker 20.10
    /// reads neither zstd layers nor OCI archives.
    Docker { tag: &'a str },
    /// An oci-archive, as `berth` and podman load it.
    Oci,
}

/// The image `reference` of the Berth image store `store` (its OCI layout
/// is `store/images`), written into `dir` as `archive` says; returns the
/// archive's path. A skopeo that fails fails the test, with its own words.
pub fn busybox_archive(store: &Path, reference: &str, dir: &Path, archive: Archive) -> PathBuf {
    let built = format!("oci:{}:{reference}", store.join("images").display());
    match archive {
        Archive::Docker { tag } => {
            let gzipped = dir.join("busybox-gzip");
            let out = dir.join(format!("{}.tar", tag.replace(['/', ':'], "-")));
            let gzipped_ref = format!("oci:{}:busybox", gzipped.display());
            copy(&[
                "--dest-compress-format".into(),
                "gzip".into(),
                built,
                gzipped_ref.clone(),
            ]);
            copy(&[
                gzipped_ref,
                format!("docker-archive:{}:{tag}", out.display()),
            ]);
            out
        }
        Archive::Oci => {
            let out = dir.join("busybox-oci.tar");
            copy(&[
                built,
                format!("oci-archive:{}:busybox:latest", out.display()),
            ]);
            out
        }
    }
}

fn copy(args: &[String]) {
    let run = Command::new("skopeo")
        .args(["copy", "--quiet"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run skopeo: {e}"));
    assert!(
        run.status.success(),
        "skopeo copy {args:?}: {}: {}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
}
