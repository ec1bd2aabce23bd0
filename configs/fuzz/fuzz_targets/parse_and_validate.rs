//! Fuzzes the whole config path: YAML parse with limits, normalization and type
//! checks (`parse_document`), merge over the built-in defaults and validation
//! (`load`), and the kernel command line form (`cmdline::parse`) of the same text,
//! whose documents are then merged and validated as more sources.
//! None of it may panic, hang or run out of memory, whatever the input.

#![no_main]

use std::sync::{Arc, OnceLock};

use berth_configs::{cmdline, Document};
use libfuzzer_sys::fuzz_target;

fn source() -> &'static Arc<str> {
    static SOURCE: OnceLock<Arc<str>> = OnceLock::new();
    SOURCE.get_or_init(|| Arc::from("fuzz.yml"))
}

/// The built-in defaults never change; parse them once.
fn defaults() -> Document {
    static DEFAULTS: OnceLock<Document> = OnceLock::new();
    DEFAULTS.get_or_init(berth_configs::defaults).clone()
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    // The document on its own, over the defaults.
    let doc = berth_configs::parse_document(source(), &text);
    let loaded = berth_configs::load(vec![defaults(), doc.clone()]);
    for d in &loaded.diagnostics {
        let _ = d.to_string();
    }
    let _ = loaded.tree.to_json();

    // The same text as a kernel command line, loaded the way `Layout::documents`
    // does: the `berth.cloud_config=` document, then the single keys.
    let cmdline = cmdline::parse(&text);
    for d in &cmdline.diagnostics {
        let _ = d.to_string();
    }
    let single_keys = cmdline.tree.as_map().is_some_and(|m| !m.is_empty());
    if cmdline.embedded.is_some() || single_keys {
        let mut docs = vec![defaults(), doc];
        docs.extend(cmdline.embedded);
        docs.push(Document {
            source: Arc::from(cmdline::SOURCE),
            tree: Some(cmdline.tree),
            diagnostics: cmdline.diagnostics,
        });
        let loaded = berth_configs::load(docs);
        let _ = loaded.tree.to_json();
    }
});
