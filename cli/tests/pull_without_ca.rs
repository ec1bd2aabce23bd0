//! `berth image pull` where the system has no CA certificates (the busybox
//! console has none) says so and fails; the TLS stack panicked there.

use std::process::Command;

#[test]
fn a_pull_without_ca_certificates_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["image", "pull", "--root"])
        .arg(dir.path().join("root"))
        .arg("--config-root")
        .arg(dir.path())
        .arg("127.0.0.1:9/test/none:1")
        .env("SSL_CERT_FILE", dir.path().join("no-bundle.crt"))
        .output()
        .expect("run berth");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no CA certificates"), "{stderr}");
    assert!(stderr.contains("no-bundle.crt"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
