//! The engine catalogue (`configs/engines/NAME.yml`, shipped in
//! /usr/share/berth/engines): each file is a valid compose-style service file
//! whose one service is named after the file, and it fits with the built-in
//! defaults (its `depends_on: network` resolves there).

use std::path::Path;
use std::sync::Arc;

#[test]
fn every_engine_file_is_valid_on_top_of_the_defaults() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("engines");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("configs/engines") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "yml") {
            continue;
        }
        seen += 1;
        let name = path
            .file_stem()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&path).expect("read");
        let source: Arc<str> = Arc::from(path.display().to_string());
        let doc = berth_configs::parse_compose(&source, &text);
        let services: Vec<String> = doc
            .tree
            .as_ref()
            .and_then(|t| t.as_map())
            .and_then(|m| m.iter().find(|e| e.key == "berth"))
            .and_then(|b| b.value.as_map())
            .and_then(|m| m.iter().find(|e| e.key == "services"))
            .and_then(|s| s.value.as_map())
            .map(|m| m.iter().map(|e| e.key.to_string()).collect())
            .unwrap_or_default();
        assert_eq!(services, vec![name], "{}", path.display());
        let findings = berth_configs::check(vec![berth_configs::defaults(), doc]);
        assert!(findings.is_empty(), "{}: {findings:#?}", path.display());
    }
    assert!(seen > 0, "no engine files in {}", dir.display());
}

/// A user engine names itself after the machine (`docker info`, swarm node
/// names): the default engine and every engine of the catalogue share the
/// host's UTS namespace, so they see the hostname and its changes.
#[test]
fn every_engine_shares_the_hosts_hostname() {
    let defaults = berth_configs::load(vec![berth_configs::defaults()]);
    assert_eq!(
        defaults.config.berth.services["docker"].uts.as_deref(),
        Some("host"),
        "the default engine, docker"
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("engines");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("configs/engines") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "yml") {
            continue;
        }
        seen += 1;
        let name = path
            .file_stem()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&path).expect("read");
        let source: Arc<str> = Arc::from(path.display().to_string());
        let loaded = berth_configs::load(vec![
            berth_configs::defaults(),
            berth_configs::parse_compose(&source, &text),
        ]);
        assert_eq!(
            loaded.config.berth.services[&name].uts.as_deref(),
            Some("host"),
            "{}",
            path.display()
        );
    }
    assert!(seen > 0, "no engine files in {}", dir.display());
}
