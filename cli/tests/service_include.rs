//! `berth service enable|disable`: optional services from the catalogue, switched
//! on in the local config and applied by a running berthd (real containers; root).

mod common;

use std::time::Duration;

use common::{is_root, stdout, text, wait_until, Daemon};

#[test]
fn enable_and_disable_a_catalogue_service_on_a_running_daemon() {
    if !is_root() {
        berth_testkit::skip!("berthd runs real containers, which needs root");
        return;
    }
    let (store, image) = common::busybox();
    let dir = tempfile::Builder::new()
        .prefix("berth-cli-include-")
        .tempdir()
        .expect("tempdir");
    let root = dir.path().join("root");
    let catalogue = root.join("usr/share/berth/services");
    std::fs::create_dir_all(&catalogue).expect("catalogue");
    std::fs::write(
        catalogue.join("ticker.yml"),
        format!(
            "services:\n  ticker:\n    image: {image}\n    command: [/bin/sh, -c, 'echo tick; exec sleep 1000']\n    restart: always\n"
        ),
    )
    .expect("service file");
    std::fs::write(
        catalogue.join("broken.yml"),
        format!("services:\n  broken:\n    image: {image}\n    restart: sometimes\n"),
    )
    .expect("service file");
    // The built-in system services need the OS's images; this test is about the catalogue.
    let config_dir = root.join("var/lib/berth/config");
    std::fs::create_dir_all(&config_dir).expect("config dir");
    std::fs::write(
        config_dir.join("local.yml"),
        "#cloud-config\nberth:\n  services:\n    network: null\n    ntp: null\n    console: null\n    docker: null\n",
    )
    .expect("local config");
    let daemon = Daemon::start_on_root(dir.path(), &store, &root);
    assert!(daemon.ps().is_empty(), "{:?}", daemon.ps());
    let r = root.to_str().expect("utf-8");

    let enabled = stdout(&daemon.berth(&["service", "enable", "--root", r, "ticker"]));
    assert!(enabled.contains("enabled ticker"), "{enabled}");
    assert!(enabled.contains("berthd: started ticker"), "{enabled}");
    wait_until("ticker running", Duration::from_secs(60), || {
        daemon
            .ps()
            .iter()
            .any(|s| s["name"] == "ticker" && s["state"] == "running")
    });
    let local = std::fs::read_to_string(config_dir.join("local.yml")).expect("local");
    assert!(local.contains("ticker: true"), "{local}");

    // Unknown names list what the catalogue has; invalid files change nothing.
    let unknown = daemon.berth(&["service", "enable", "--root", r, "nosuch"]);
    assert_eq!(unknown.status.code(), Some(1), "{}", text(&unknown));
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        err.contains("no service `nosuch`") && err.contains("broken, ticker"),
        "{err}"
    );
    let broken = daemon.berth(&["service", "enable", "--root", r, "broken"]);
    assert_eq!(broken.status.code(), Some(1), "{}", text(&broken));
    assert!(
        String::from_utf8_lossy(&broken.stderr).contains("sometimes"),
        "{}",
        text(&broken)
    );
    assert_eq!(
        std::fs::read_to_string(config_dir.join("local.yml")).expect("local"),
        local,
        "a refused enable writes nothing"
    );

    // A local.yml broken by hand: the reload is refused (400) with what is
    // wrong, and the running services stay as they are.
    let good = std::fs::read_to_string(config_dir.join("local.yml")).expect("local");
    std::fs::write(
        config_dir.join("local.yml"),
        format!("{good}    ticker:\n      restart: sometimes\n"),
    )
    .expect("broken local config");
    let refused = berth_api::Client::new(&daemon.socket)
        .reload()
        .expect_err("an invalid config is refused");
    assert_eq!(refused.status(), Some(400), "{refused}");
    let message = refused.to_string();
    assert!(
        message.contains("the config is invalid") && message.contains("local.yml"),
        "{message}"
    );
    assert!(message.contains("ticker"), "{message}");
    assert!(daemon
        .ps()
        .iter()
        .any(|s| s["name"] == "ticker" && s["state"] == "running"));
    std::fs::write(config_dir.join("local.yml"), &good).expect("local config");

    let disabled = stdout(&daemon.berth(&["service", "disable", "--root", r, "ticker"]));
    assert!(disabled.contains("berthd: stopped ticker"), "{disabled}");
    assert!(daemon.ps().iter().all(|s| s["name"] != "ticker"));
}
