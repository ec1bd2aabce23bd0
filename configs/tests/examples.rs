//! The examples shipped in `configs/examples/` are what users copy: they must be
//! valid with no warnings at all.

use std::sync::Arc;

#[test]
fn examples_are_strictly_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("examples dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "yml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let source: Arc<str> = Arc::from(path.display().to_string());
        let doc = berth_configs::parse_document(&source, &text);
        let findings: Vec<_> = berth_configs::check(vec![berth_configs::defaults(), doc])
            .into_iter()
            .filter(|d| d.severity != berth_configs::Severity::Note)
            .collect();
        assert!(findings.is_empty(), "{}: {findings:#?}", path.display());
        count += 1;
    }
    assert!(count >= 4, "expected the examples, found {count}");
}
