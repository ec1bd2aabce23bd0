//! `berth image pull` killed midway (SIGKILL, as a power cut or OOM would) and run
//! again completes, with the layer verified; one whose connection breaks says so
//! and goes on. A real registry on 127.0.0.1.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_images::progress::Quiet;
use berth_images::unpack::Limits;
use berth_images::Store;

#[path = "../../images/tests/support/mod.rs"]
mod support;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

fn pull(root: &Path, config_root: &Path, reference: &str) -> Command {
    let mut command = Command::new(BERTH);
    command
        .args(["image", "pull", "--insecure", "--root"])
        .arg(root)
        .arg("--config-root")
        .arg(config_root)
        .arg(reference)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

#[test]
fn a_pull_killed_midway_completes_when_run_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry =
        berth_testkit::registry::Registry::start(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    // Incompressible, so the pull takes long enough to be interrupted.
    let content = support::push::noise(128 << 20);
    let (reference, _) = support::push::push_image(
        dir.path(),
        &registry,
        "test/big:1",
        &[("big", content.clone())],
    );

    let root = dir.path().join("store");
    let config_root = dir.path().join("config-root");
    std::fs::create_dir_all(&config_root).expect("config root");
    let store = Store::open(&root).expect("open");
    let mut child = pull(&root, &config_root, &reference)
        .spawn()
        .expect("berth image pull");
    // Kill it as soon as the layer is partly on disk.
    let tmp = store.layout_dir().join("tmp");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let partial = std::fs::read_dir(&tmp)
            .expect("tmp")
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .any(|m| m.len() > 8 << 20);
        if partial {
            break;
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the pull finished before it could be killed"
        );
        assert!(
            Instant::now() < deadline,
            "the pull never started writing the layer"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().expect("kill");
    let status = child.wait().expect("wait");
    assert!(!status.success(), "the pull was killed, not finished");
    assert!(
        store.list().expect("list").is_empty(),
        "a killed pull names nothing"
    );

    let again = pull(&root, &config_root, &reference)
        .status()
        .expect("berth image pull");
    assert!(again.success(), "the second pull failed: {again}");
    let image = store
        .resolve(&reference)
        .expect("named after the second pull");
    let layers = store
        .unpack_image(&image, &Limits::default(), &Quiet)
        .expect("digest and diff_id verify");
    let pulled = std::fs::read(layers[0].join("big")).expect("unpacked file");
    assert!(
        pulled == content,
        "the layer's content survived the interruption"
    );
    store.prune().expect("prune leftovers");
    assert_eq!(std::fs::read_dir(&tmp).expect("tmp").count(), 0);
}

/// A connection cut in the layer is asked again, and the user sees why the
/// progress stopped: the retry is a warning on stderr, not silence.
#[test]
fn a_pull_whose_connection_breaks_says_so_and_goes_on() {
    use support::proxy::{Fault, FaultyProxy};
    let dir = tempfile::tempdir().expect("tempdir");
    let registry =
        berth_testkit::registry::Registry::start(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let (reference, _) = support::push::push_image(
        dir.path(),
        &registry,
        "test/big:1",
        &[("big", support::push::noise(6 << 20))],
    );
    let proxy = FaultyProxy::start(registry.port, 2 << 20, Fault::Cut);
    let through = reference.replace(
        &format!("127.0.0.1:{}", registry.port),
        &format!("127.0.0.1:{}", proxy.port),
    );
    let config_root = dir.path().join("config-root");
    std::fs::create_dir_all(&config_root).expect("config root");
    let output = pull(&dir.path().join("store"), &config_root, &through)
        .stderr(Stdio::piped())
        .output()
        .expect("berth image pull");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("berth: warn: ") && l.contains("asking again in")),
        "no warning of the retry:\n{stderr}"
    );
    assert!(proxy.resumed_from().is_some(), "the layer was asked again");
}
