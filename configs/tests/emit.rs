//! What `berth config show|export` print and `local.yml` holds is YAML that
//! reads back as the same tree: same keys in the same order, same scalars,
//! and every value keeps its meaning (a quoted `"0644"` stays a string, a
//! plain `0644` stays the plain scalar a mode field reads as octal).

use std::sync::Arc;

use berth_configs::node::{self, resolve_plain, Node, Plain, Value};

/// Structural equality, ignoring positions: a quoted string may come back
/// plain only where plain reads as the same string.
fn same(a: &Node, b: &Node, at: &str) {
    assert_eq!(a.binary, b.binary, "binary tag at {at}");
    match (&a.value, &b.value) {
        (Value::Null, Value::Null) => {}
        (
            Value::Scalar {
                text: t1,
                quoted: q1,
            },
            Value::Scalar {
                text: t2,
                quoted: q2,
            },
        ) => {
            assert_eq!(t1, t2, "text at {at}");
            let meaning = |t: &str, q: bool| if q { Plain::Str } else { resolve_plain(t) };
            assert_eq!(
                format!("{:?}", meaning(t1, *q1)),
                format!("{:?}", meaning(t2, *q2)),
                "meaning of `{t1}` at {at}"
            );
        }
        (Value::Seq(x), Value::Seq(y)) => {
            assert_eq!(x.len(), y.len(), "length at {at}");
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                same(p, q, &format!("{at}[{i}]"));
            }
        }
        (Value::Map(x), Value::Map(y)) => {
            let keys = |m: &[node::Entry]| m.iter().map(|e| e.key.clone()).collect::<Vec<_>>();
            assert_eq!(keys(x), keys(y), "keys at {at}");
            for (p, q) in x.iter().zip(y) {
                same(&p.value, &q.value, &format!("{at}.{}", p.key));
            }
        }
        (p, q) => panic!("at {at}: {p:?} came back as {q:?}"),
    }
}

fn round_trip(text: &str) -> String {
    let source: Arc<str> = Arc::from("in");
    let tree = node::parse(&source, text, &Default::default()).expect("input parses");
    let out = berth_configs::emit::to_yaml(&tree);
    let back = node::parse(&Arc::from("out"), &out, &Default::default())
        .unwrap_or_else(|d| panic!("{d}\n--- emitted:\n{out}"));
    same(&tree, &back, "");
    // Emitting is stable: the second pass prints the same text.
    assert_eq!(berth_configs::emit::to_yaml(&back), out);
    out
}

#[test]
fn tricky_scalars_round_trip() {
    let out = round_trip(
        r##"
mode: 0644
quoted_mode: "0644"
version: 1.10
quoted_true: "true"
yes_string: "yes"
plain_true: true
nothing: null
empty: ""
tilde: "~"
negative: -500
dash: "- not a list"
colon: "a: b"
hash: "a #b"
trailing: "space "
leading: " space"
indicator: "*star"
brackets: "[x]"
quotes: "she said \"hi\" and 'bye'"
backslash: 'C:\path'
tab: "a\tb"
control: "bell\u0007"
unicode: "naïve ☃"
doc_marker: "---"
hex_like: "0x1F"
number_key_map: {"8080": web, "true": x}
empty_map: {}
empty_list: []
nested:
  - a: 1
    b: [x, [y, z], {k: v}]
  - - deep
    - "- dash"
  - null
script: |
  #!/bin/sh
  echo "hi: there" # comment-like

  exit 0
no_trailing_newline: |-
  one
  two
kept: |+
  text


binary: !!binary aGVsbG8=
"##,
    );
    assert!(out.contains("mode: 0644\n"), "{out}");
    assert!(out.contains("quoted_mode: \"0644\"\n"), "{out}");
    assert!(out.contains("script: |\n  #!/bin/sh\n"), "{out}");
}

#[test]
fn config_files_round_trip() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for dir in [
        "examples",
        "services",
        "engines",
        "consoles",
        "tests/realworld",
    ] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
                let text = std::fs::read_to_string(&path).expect("read");
                if node::parse(&Arc::from("x"), &text, &Default::default()).is_ok() {
                    round_trip(&text);
                    seen += 1;
                }
            }
        }
    }
    round_trip(berth_configs::DEFAULT_YML);
    assert!(seen >= 5, "only {seen} files found");
}

#[test]
fn rendered_config_is_a_cloud_config_that_loads_the_same() {
    let doc = berth_configs::defaults();
    let tree = doc.tree.expect("defaults parse");
    let text = berth_configs::sources::render(&tree);
    assert!(text.starts_with("#cloud-config\n"));
    let again = berth_configs::parse_document(&Arc::from("rendered"), &text);
    assert!(again.is_valid(), "{:#?}", again.diagnostics);
    let a = berth_configs::load(vec![berth_configs::defaults()]).config;
    let b = berth_configs::load(vec![again]).config;
    assert_eq!(a, b);
}
