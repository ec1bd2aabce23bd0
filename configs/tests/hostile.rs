//! Hostile YAML must be refused quickly, with an error diagnostic: never a hang,
//! an out-of-memory abort or a stack overflow. A bad user-data must not stop a
//! boot (ARCHITECTURE.md §6), and "bad" includes "written to hurt".
//!
//! Every case here should finish in well under a second. The assertions allow
//! 5 s ([`BUDGET`]) of the test thread's own CPU time — not wall-clock time, which
//! a machine busy with other builds stretches at will — so that the unoptimized
//! test profile does not make them flaky; anything near the budget is a real
//! problem (a quadratic loop, an unbounded expansion), not noise.
//!
//! The cases after "Found while building the fuzz target" were quadratic or
//! unbounded before the budgets in `node.rs` and `validate.rs` existed.

use std::sync::Arc;
use std::time::Duration;

use berth_configs::{cmdline, defaults, load, parse_document, Document, Severity};

/// Generous on purpose: see the module comment.
const BUDGET: Duration = Duration::from_secs(5);

/// CPU time this thread has used so far.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant
    // every Linux kernel supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

const HEAD: &str = "#cloud-config\n";

/// Parses `text` as the source `name`, loads it over the built-in defaults and
/// checks that it was refused in time, with an error whose message contains one of
/// `expected`. Returns the error messages.
fn refused(name: &str, text: &str, expected: &[&str]) -> Vec<String> {
    let source: Arc<str> = Arc::from(name);
    let start = thread_cpu_time();
    let doc = parse_document(&source, text);
    let errors: Vec<String> = doc
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(ToString::to_string)
        .collect();
    let loaded = load(vec![defaults(), doc]);
    let elapsed = thread_cpu_time() - start;

    assert!(
        elapsed < BUDGET,
        "{name}: took {elapsed:?} of CPU time (budget {BUDGET:?})"
    );
    assert!(!errors.is_empty(), "{name}: accepted without an error");
    assert!(
        errors
            .iter()
            .any(|e| expected.iter().any(|x| e.contains(x))),
        "{name}: no error mentions any of {expected:?}; got {:?}",
        first_few(&errors)
    );
    // The document is left out, and the defaults still load on their own.
    assert!(
        loaded.rejected.iter().any(|s| &**s == name),
        "{name}: not rejected"
    );
    assert!(
        loaded.config.berth.services.contains_key("network"),
        "{name}: the defaults did not survive"
    );
    errors
}

/// Error messages can be as long as the hostile input; keep assertion output short.
fn first_few(errors: &[String]) -> Vec<String> {
    errors
        .iter()
        .take(3)
        .map(|e| e.chars().take(200).collect())
        .collect()
}

fn timed<T>(name: &str, f: impl FnOnce() -> T) -> T {
    let start = thread_cpu_time();
    let out = f();
    let elapsed = thread_cpu_time() - start;
    assert!(
        elapsed < BUDGET,
        "{name}: took {elapsed:?} of CPU time (budget {BUDGET:?})"
    );
    out
}

// Flow collections past 256 levels are stopped by yaml-rust2 itself.
const TOO_DEEP: &[&str] = &["deeper than", "recursion limit"];

#[test]
fn flow_sequences_nested_10k_deep() {
    let text = format!("{HEAD}a: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    refused("deep-flow-seq", &text, TOO_DEEP);
}

#[test]
fn flow_mappings_nested_10k_deep() {
    let text = format!(
        "{HEAD}a: {}x{}\n",
        "{a: ".repeat(10_000),
        "}".repeat(10_000)
    );
    refused("deep-flow-map", &text, TOO_DEEP);
}

#[test]
fn block_mappings_nested_10k_deep() {
    // One more space per level: 10k levels is ~50 MB of indentation, over the size
    // limit before the depth limit is reached.
    let text = (0..10_000).fold(String::from(HEAD), |mut s, i| {
        s.push_str(&" ".repeat(i));
        s.push_str("k:\n");
        s
    });
    refused("deep-block-map-10k", &text, &["limit is"]);
}

#[test]
fn block_mappings_nested_2k_deep() {
    // ~2 MB: under the size limit, so the depth limit has to catch it.
    let text = (0..2_000).fold(String::from(HEAD), |mut s, i| {
        s.push_str(&" ".repeat(i));
        s.push_str("k:\n");
        s
    });
    refused("deep-block-map-2k", &text, TOO_DEEP);
}

#[test]
fn block_sequences_nested_10k_deep() {
    // `- - - x`: compact nested block sequences, 10k deep on one line.
    let text = format!("{HEAD}runcmd:\n  {}x\n", "- ".repeat(10_000));
    refused("deep-block-seq", &text, TOO_DEEP);
}

#[test]
fn billion_laughs() {
    // 9 levels of 10 aliases each: 10^9 values if expanded.
    let mut text = format!("{HEAD}a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..=9 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    refused("billion-laughs", &text, &["expands to more than"]);
}

#[test]
fn billion_laughs_through_merge_keys() {
    let mut text =
        format!("{HEAD}m0: &m0 {{a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, i: 9, j: 10}}\n");
    for i in 1..=9 {
        let entries: Vec<String> = (0..10).map(|j| format!("k{j}: *m{}", i - 1)).collect();
        text.push_str(&format!(
            "m{i}: &m{i} {{{}, <<: *m{}}}\n",
            entries.join(", "),
            i - 1
        ));
    }
    refused("merge-key-bomb", &text, &["expands to more than"]);
}

#[test]
fn scalar_of_50_mb_is_refused_by_size() {
    let text = format!("{HEAD}hostname: {}\n", "x".repeat(50 << 20));
    refused("huge-scalar", &text, &["limit is"]);
}

#[test]
fn quoted_scalar_of_50_mb_is_refused_by_size() {
    let text = format!("{HEAD}hostname: \"{}\"\n", "x".repeat(50 << 20));
    refused("huge-quoted-scalar", &text, &["limit is"]);
}

#[test]
fn mapping_with_100k_keys() {
    // Unknown top-level keys, so the document must be refused (with 100k errors).
    let text = (0..100_000).fold(String::from(HEAD), |mut s, i| {
        s.push_str(&format!("k{i}: {i}\n"));
        s
    });
    let errors = refused("many-keys", &text, &["unknown key"]);
    assert!(errors.len() >= 100_000, "{}", errors.len());
}

#[test]
fn mapping_with_1k_keys() {
    // The same shape at a size the quadratic duplicate-key check still handles.
    let text = (0..1_000).fold(String::from(HEAD), |mut s, i| {
        s.push_str(&format!("k{i}: {i}\n"));
        s
    });
    refused("some-keys", &text, &["unknown key"]);
}

#[test]
fn duplicate_keys_warn_and_the_later_wins() {
    // As in cloud-init's loader: not an error, but the user is told.
    let source: Arc<str> = Arc::from("duplicate-keys");
    let text = format!("{HEAD}hostname: a\nberth:\n  ssh: {{port: 22}}\nhostname: b\n");
    let doc = timed("duplicate keys", || parse_document(&source, &text));
    assert!(doc.is_valid(), "{:?}", doc.diagnostics);
    assert!(
        doc.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Warning && d.message.contains("duplicate key")),
        "{:?}",
        doc.diagnostics
    );
    let loaded = load(vec![defaults(), doc]);
    assert_eq!(loaded.config.hostname.as_deref(), Some("b"));
}

#[test]
fn the_same_key_many_times() {
    // Every repeat replaces the previous entry: still one key, and still quick.
    let text = (0..50_000).fold(format!("{HEAD}berth:\n  sysctl:\n"), |mut s, i| {
        s.push_str(&format!("    k: {i}\n"));
        s
    });
    let source: Arc<str> = Arc::from("same-key");
    let doc = timed("same key", || parse_document(&source, &text));
    let loaded = load(vec![defaults(), doc]);
    assert_eq!(loaded.config.berth.sysctl.len(), 1);
}

#[test]
fn long_line_of_dashes() {
    // 1M characters of `-` on one line: a plain scalar at the top level.
    let text = "-".repeat(1_000_000);
    refused("dashes", &text, &["must be a mapping"]);
}

#[test]
fn long_line_of_dashes_after_the_header() {
    let text = format!("{HEAD}{}\n", "-".repeat(1_000_000));
    refused("dashes-after-header", &text, &["must be a mapping"]);
}

#[test]
fn tabs_in_indentation() {
    let text = format!("{HEAD}berth:\n\tssh:\n\t\tport: 22\n");
    refused("tabs", &text, &["YAML syntax error"]);
}

#[test]
fn more_than_one_document() {
    let text = format!("{HEAD}hostname: a\n---\nhostname: b\n");
    refused("two-documents", &text, &["more than one YAML document"]);
}

#[test]
fn kernel_cmdline_values_are_bounded_too() {
    let deep = format!("berth.modules={}", "[".repeat(10_000));
    let c = timed("cmdline deep", || cmdline::parse(&deep));
    assert!(
        c.diagnostics.iter().any(|d| d.severity == Severity::Error),
        "{:?}",
        c.diagnostics
    );

    let dashes = "-".repeat(1_000_000);
    let c = timed("cmdline dashes", || cmdline::parse(&dashes));
    assert!(c.diagnostics.is_empty(), "{:?}", c.diagnostics);
}

// Found while building the fuzz target (see configs/fuzz/README.md).

#[test]
fn aliases_of_a_large_scalar() {
    // 512 KiB × 1000 aliases = 512 MiB of copies from a 516 KiB document. With 250k
    // aliases of a 2 MiB scalar (still under 4 MiB of text) it is 500 GB.
    let big = "x".repeat(512 << 10);
    let refs = vec!["*h"; 1_000].join(", ");
    let text = format!("{HEAD}hostname: &h \"{big}\"\nberth:\n  modules: [{refs}]\n");
    refused("aliased-scalar", &text, &["expands to more than"]);
}

#[test]
fn aliases_of_a_gzip_bomb() {
    use std::io::Write as _;

    use base64::Engine as _;
    // 1 MiB of zeros is ~1 KiB of gzip; 5000 files pointing at it are 5 GiB to
    // decompress while validating (and to write at boot). A real bomb decompresses
    // to the 64 MiB cap from ~64 KiB.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![0u8; 1 << 20]).expect("gzip");
    let b64 = base64::engine::general_purpose::STANDARD.encode(gz.finish().expect("gzip"));
    let mut text =
        format!("{HEAD}write_files:\n  - {{path: /f, encoding: gz+b64, content: &c \"{b64}\"}}\n");
    for i in 0..5_000 {
        text.push_str(&format!(
            "  - {{path: /f{i}, encoding: gz+b64, content: *c}}\n"
        ));
    }
    // Within the parser's budgets: the decode budget of validation refuses it.
    let source: Arc<str> = Arc::from("gzip-bomb");
    let loaded = timed("gzip bomb", || {
        load(vec![defaults(), parse_document(&source, &text)])
    });
    assert!(loaded.rejected.iter().any(|s| **s == *source));
    assert!(
        loaded
            .diagnostics
            .iter()
            .any(|d| d.is_error() && d.message.contains("decode to more than")),
        "{:?}",
        loaded.diagnostics.iter().take(3).collect::<Vec<_>>()
    );
}

/// Found by reading `Duration::parse` while writing the fuzz target; fixed in 255f135.
#[test]
fn duration_overflow_is_an_error_not_a_panic() {
    let text = format!(
        "{HEAD}berth:\n  services:\n    x:\n      image: a\n      stop_grace_period: 10000000000000000000s10000000000000000000s\n"
    );
    // A type error is expected, not a panic.
    refused("duration-overflow", &text, &["duration"]);
}

#[test]
fn dependency_chain_with_back_edges() {
    // s0 -> s1 -> ... -> sN, and every service also depends on s0: N cycles of
    // length up to N. 10k services: ~26 s and 3 GB in release.
    let n = 5_000;
    let mut text = format!("{HEAD}berth:\n  services:\n");
    for i in 0..n {
        text.push_str(&format!(
            "    s{i}: {{image: x, depends_on: [s{}, s0]}}\n",
            i + 1
        ));
    }
    text.push_str(&format!("    s{n}: {{image: x, depends_on: [s0]}}\n"));
    let source: Arc<str> = Arc::from("cycles");
    let loaded = timed("cycles", || {
        load(vec![defaults(), parse_document(&source, &text)])
    });
    assert!(loaded.rejected.iter().any(|s| **s == *source));
}

#[test]
fn many_missing_dependencies() {
    // 3k services: ~35 s unoptimized; 5k: ~10 s in release.
    let n = 3_000;
    let mut text = format!("{HEAD}berth:\n  services:\n");
    for i in 0..n {
        text.push_str(&format!(
            "    service-{i}: {{image: x, depends_on: [missing-{i}]}}\n"
        ));
    }
    let source: Arc<str> = Arc::from("missing-deps");
    let loaded = timed("missing deps", || {
        load(vec![defaults(), parse_document(&source, &text)])
    });
    assert!(loaded.rejected.iter().any(|s| **s == *source));
}

/// A document that is fine must still load, so the limits above are not simply
/// refusing everything.
#[test]
fn an_ordinary_document_still_loads() {
    let source: Arc<str> = Arc::from("ok");
    let text =
        format!("{HEAD}hostname: node-1\nx-base: &base {{image: busybox, restart: always}}\n");
    let doc: Document = timed("ok", || parse_document(&source, &text));
    // `x-base` is not a known key: this is the one expected error.
    let errors: Vec<_> = doc
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");

    let text = format!(
        "{HEAD}hostname: node-1\nberth:\n  services:\n    a: &a {{image: busybox, restart: always}}\n    b:\n      <<: *a\n      image: alpine\n"
    );
    let doc = timed("ok", || parse_document(&source, &text));
    assert!(doc.is_valid(), "{:?}", doc.diagnostics);
    let loaded = load(vec![defaults(), doc]);
    assert!(loaded.rejected.is_empty(), "{:?}", loaded.diagnostics);
    assert_eq!(loaded.config.hostname.as_deref(), Some("node-1"));
}
