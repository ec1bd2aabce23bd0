//! Image benchmarks, against baselines measured in the same run:
//!
//! - unpack: Berth's safe unpacker (both digests verified, every entry resolved
//!   with openat2) on the layers of the `docker` system image, against
//!   `zstd -dc LAYER | tar -x` of the same blobs;
//! - pull: `berth_images::pull` of the same image from Debian's docker-registry
//!   on 127.0.0.1, against `skopeo copy` of it from the same registry.
//!
//! Run with `cargo xtask bench images`, which builds the docker image first and
//! names its store in `BERTH_IMAGE_STORE`. Needs root (whiteouts, ownership).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_images::pull::{pull, PullOptions, Quiet};
use berth_images::unpack::{compression_of, unpack_layer, Limits};
use berth_images::{archive, Image, Store};

#[path = "../tests/support/mod.rs"]
mod support;

const IMAGE: &str = "berth/docker:latest";
const ROUNDS: usize = 3;

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn run(command: &mut Command) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(status.success(), "{command:?} failed: {status}");
}

fn unpack_berth(store: &Store, image: &Image, scratch: &Path) -> Duration {
    let start = Instant::now();
    for (i, (layer, diff_id)) in image
        .manifest
        .layers
        .iter()
        .zip(&image.config.rootfs.diff_ids)
        .enumerate()
    {
        let blob = store.open_blob(&layer.digest).expect("layer blob");
        let compression = compression_of(&layer.media_type).expect("media type");
        unpack_layer(
            std::io::BufReader::new(blob),
            compression,
            diff_id,
            &scratch.join(format!("berth-{i}")),
            &Limits::default(),
        )
        .expect("unpack");
    }
    start.elapsed()
}

fn unpack_tar(store: &Store, image: &Image, scratch: &Path) -> Duration {
    let start = Instant::now();
    for (i, layer) in image.manifest.layers.iter().enumerate() {
        let dest = scratch.join(format!("tar-{i}"));
        std::fs::create_dir(&dest).expect("dest");
        let blob = store.blob_path(&layer.digest);
        run(Command::new("sh").arg("-c").arg(format!(
            "zstd -dc '{}' | tar --numeric-owner -xpf - -C '{}'",
            blob.display(),
            dest.display()
        )));
    }
    start.elapsed()
}

fn main() {
    let root = std::env::var("BERTH_IMAGE_STORE")
        .expect("BERTH_IMAGE_STORE: run this with `cargo xtask bench images`");
    let store = Store::open(root).expect("image store");
    let image = store
        .resolve(IMAGE)
        .expect("the docker image: `cargo xtask images docker`");
    let compressed = image.size();
    let unpacked: u64 = {
        let scratch = tempfile::tempdir_in("/var/tmp").expect("scratch");
        unpack_berth(&store, &image, scratch.path());
        du(scratch.path())
    };
    println!(
        "{IMAGE}: {} layers, {:.1} MiB compressed, {:.1} MiB unpacked",
        image.manifest.layers.len(),
        mib(compressed),
        mib(unpacked)
    );

    // Alternate the two so drift in machine load hits both alike; drop the
    // page cache's dirty pages between rounds so neither pays for the other.
    let (mut berth, mut tar) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let scratch = tempfile::tempdir_in("/var/tmp").expect("scratch");
        run(&mut Command::new("sync"));
        berth.push(unpack_berth(&store, &image, scratch.path()));
        run(&mut Command::new("sync"));
        tar.push(unpack_tar(&store, &image, scratch.path()));
    }
    let (berth, tar) = (median(berth), median(tar));
    let rate = |d: Duration| mib(unpacked) / d.as_secs_f64();
    println!(
        "unpack: berth {:.2}s ({:.0} MiB/s), zstd -dc | tar -x {:.2}s ({:.0} MiB/s)",
        berth.as_secs_f64(),
        rate(berth),
        tar.as_secs_f64(),
        rate(tar)
    );

    let pull_times = bench_pull(&store);
    let rate = |d: Duration| mib(compressed) / d.as_secs_f64();
    println!(
        "pull: berth {:.2}s ({:.0} MiB/s), skopeo copy {:.2}s ({:.0} MiB/s)",
        pull_times.0.as_secs_f64(),
        rate(pull_times.0),
        pull_times.1.as_secs_f64(),
        rate(pull_times.1)
    );

    println!(
        "RESULT unpack_vs_tar {:.2} ratio",
        tar.as_secs_f64() / berth.as_secs_f64()
    );
    println!(
        "RESULT unpack_throughput {:.0} MiB/s",
        mib(unpacked) / berth.as_secs_f64()
    );
    println!(
        "RESULT pull_vs_skopeo {:.2} ratio",
        pull_times.1.as_secs_f64() / pull_times.0.as_secs_f64()
    );
    println!(
        "RESULT pull_throughput {:.0} MiB/s",
        mib(compressed) / pull_times.0.as_secs_f64()
    );
}

/// Median times of (berth pull, skopeo copy) from a loopback registry.
fn bench_pull(store: &Store) -> (Duration, Duration) {
    let dir = tempfile::tempdir_in("/var/tmp").expect("scratch");
    let registry =
        berth_testkit::registry::Registry::start(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let archive_path = dir.path().join("docker.tar");
    archive::export(store, IMAGE, &archive_path).expect("export");
    let reference = registry
        .push(&archive_path, "berth/docker:latest")
        .unwrap_or_else(|e| panic!("{e}"));
    let options = PullOptions {
        insecure: vec![format!("127.0.0.1:{}", registry.port)],
        credentials: None,
        attempts: 1,
        ..PullOptions::default()
    };
    let (mut berth, mut skopeo) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let target = Store::open(dir.path().join(format!("pulled-{round}"))).expect("store");
        let start = Instant::now();
        pull(&target, &reference, &options, &Quiet).expect("pull");
        berth.push(start.elapsed());

        let layout = dir.path().join(format!("skopeo-{round}"));
        let start = Instant::now();
        run(Command::new("skopeo")
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .arg(format!("oci:{}:latest", layout.display()))
            .stdout(Stdio::null()));
        skopeo.push(start.elapsed());
    }
    (median(berth), median(skopeo))
}

fn du(path: &Path) -> u64 {
    let out = Command::new("du")
        .args(["-sb"])
        .arg(path)
        .output()
        .expect("du");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
