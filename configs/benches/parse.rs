//! How much Berth's config pipeline costs next to plain YAML parsing.
//!
//! Baseline: `yaml_rust2::YamlLoader::load_from_str` of the same documents,
//! measured in the same run, alternating with Berth's own passes so both see the
//! same machine load. Run with `cargo xtask bench config`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn corpus() -> Vec<(Arc<str>, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("default.yml")];
    for dir in [
        "examples",
        "tests/realworld/cloud-init",
        "tests/realworld/rancheros",
    ] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir)) {
            let mut found: Vec<_> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
                .collect();
            found.sort();
            files.extend(found);
        }
    }
    files
        .into_iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(&p).ok()?;
            Some((Arc::from(p.display().to_string()), text))
        })
        .collect()
}

/// Median time per pass over the corpus.
fn measure(rounds: usize, mut pass: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            pass();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let docs = corpus();
    let bytes: usize = docs.iter().map(|(_, t)| t.len()).sum();
    println!("corpus: {} documents, {bytes} bytes", docs.len());
    let defaults = berth_configs::defaults();
    let rounds = 200;

    let mut baseline = Vec::new();
    let mut parse = Vec::new();
    let mut full = Vec::new();
    // Alternate so drift in machine load hits all three alike.
    for _ in 0..5 {
        baseline.push(measure(rounds, || {
            for (_, text) in &docs {
                let v = yaml_rust2::YamlLoader::load_from_str(text);
                std::hint::black_box(v.is_ok());
            }
        }));
        parse.push(measure(rounds, || {
            for (name, text) in &docs {
                std::hint::black_box(berth_configs::parse_document(name, text).is_valid());
            }
        }));
        full.push(measure(rounds, || {
            for (name, text) in &docs {
                let doc = berth_configs::parse_document(name, text);
                let loaded = berth_configs::load(vec![defaults.clone(), doc]);
                std::hint::black_box(loaded.rejected.len());
            }
        }));
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (b, p, f) = (median(&mut baseline), median(&mut parse), median(&mut full));
    let per_doc = |d: Duration| d.as_secs_f64() * 1e6 / docs.len() as f64;
    println!(
        "yaml_rust2 YamlLoader parse  {:>9.1} µs/doc (baseline)",
        per_doc(b)
    );
    println!("berth parse+types+normalize  {:>9.1} µs/doc", per_doc(p));
    println!("berth parse+merge+validate   {:>9.1} µs/doc", per_doc(f));
    println!(
        "RESULT config_parse_vs_yaml_rust2 {:.2} ratio",
        p.as_secs_f64() / b.as_secs_f64()
    );
    println!(
        "RESULT config_load_vs_yaml_rust2 {:.2} ratio",
        f.as_secs_f64() / b.as_secs_f64()
    );
    println!("RESULT config_load_per_doc {:.1} us", per_doc(f));
}
