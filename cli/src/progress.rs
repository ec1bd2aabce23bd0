//! Progress of pulls and unpacks: bars on a terminal, a line per event otherwise
//! (logs and CI keep a readable record instead of carriage returns).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

use berth_images::progress::Progress;
use berth_images::Digest;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::image::human;

/// The bars on the terminal now, if any: a line printed while they are drawn
/// goes above them ([`eprint_above_bars`]), else the next redraw tears it.
static DRAWN: Mutex<Option<Drawn>> = Mutex::new(None);

/// indicatif's two kinds of drawing, each of which can hide its bars for a line.
#[derive(Clone)]
pub(crate) enum Drawn {
    Many(MultiProgress),
    One(ProgressBar),
}

/// Makes `drawn` the bars that lines go above, until the next call.
pub(crate) fn drawing(drawn: Drawn) {
    if let Ok(mut slot) = DRAWN.lock() {
        *slot = Some(drawn);
    }
}

/// Prints `line` on stderr, above the bars being drawn.
pub fn eprint_above_bars(line: &str) {
    // Cloned out (both are handles), so the lock is not held while drawing.
    let drawn = DRAWN.lock().ok().and_then(|d| d.clone());
    match drawn {
        Some(Drawn::Many(m)) => m.suspend(|| eprintln!("{line}")),
        Some(Drawn::One(b)) => b.suspend(|| eprintln!("{line}")),
        None => eprintln!("{line}"),
    }
}

/// The reporter for this process's stderr.
pub fn reporter() -> Box<dyn Progress> {
    if std::io::stderr().is_terminal() {
        let bars = Bars::default();
        drawing(Drawn::Many(bars.multi.clone()));
        Box::new(bars)
    } else {
        Box::new(Lines(Tenths::new()))
    }
}

fn short(digest: &Digest) -> &str {
    &digest.hex()[..12]
}

#[derive(Default)]
struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
}

impl Progress for Bars {
    fn blob_started(&self, what: &str, digest: &Digest, size: u64) {
        let bar = self.multi.add(ProgressBar::new(size));
        let style = ProgressStyle::with_template(
            "{prefix:<8} {msg} [{bar:30}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(what.to_string());
        bar.set_message(short(digest).to_string());
        if let Ok(mut bars) = self.bars.lock() {
            bars.insert(digest.clone(), bar);
        }
    }

    fn blob_progress(&self, digest: &Digest, done: u64, _size: u64) {
        if let Some(bar) = self.bars.lock().ok().and_then(|b| b.get(digest).cloned()) {
            bar.set_position(done);
        }
    }

    fn blob_done(&self, digest: &Digest, cached: bool) {
        if let Some(bar) = self.bars.lock().ok().and_then(|mut b| b.remove(digest)) {
            let what = if cached { "already present" } else { "done" };
            bar.set_style(
                ProgressStyle::with_template("{prefix:<8} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.finish_with_message(format!("{} {what}", short(digest)));
        }
    }
}

impl std::fmt::Debug for Bars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bars").finish_non_exhaustive()
    }
}

/// A line each time a transfer passes another tenth, with its rate: what
/// long pulls, installs and upgrades print where there is no terminal for a
/// bar (over `ssh host cmd`, in logs, in CI).
#[derive(Debug)]
pub(crate) struct Tenths(Mutex<(String, u64, Instant)>);

impl Tenths {
    pub(crate) fn new() -> Tenths {
        Tenths(Mutex::new((String::new(), 0, Instant::now())))
    }

    /// The line to print for `done` of `total` bytes of `what`, if any.
    pub(crate) fn line(&self, what: &str, done: u64, total: u64) -> Option<String> {
        let mut state = self.0.lock().ok()?;
        if state.0 != what {
            *state = (what.to_string(), 0, Instant::now());
        }
        let tenth = (done * 10 / total.max(1)).min(10);
        if tenth <= state.1 && (done != total || state.1 == 10) {
            return None;
        }
        state.1 = tenth;
        let secs = state.2.elapsed().as_secs_f64().max(0.001);
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        Some(format!(
            "{what}: {:.0}/{:.0} MiB ({:.1} MiB/s)",
            mib(done),
            mib(total),
            mib(done) / secs
        ))
    }
}

/// Blobs smaller than this arrive too fast for progress lines to say anything.
const LINES_FROM: u64 = 4 << 20;

#[derive(Debug)]
struct Lines(Tenths);

impl Progress for Lines {
    fn blob_started(&self, what: &str, digest: &Digest, size: u64) {
        eprintln!("{what:<8} {} {:>10}", short(digest), human(size));
    }

    fn blob_progress(&self, digest: &Digest, done: u64, size: u64) {
        if size < LINES_FROM {
            return;
        }
        let what = format!("{:<8} {}", "", short(digest));
        if let Some(line) = self.0.line(&what, done, size) {
            eprintln!("{line}");
        }
    }

    fn blob_done(&self, digest: &Digest, cached: bool) {
        let what = if cached { "already present" } else { "done" };
        eprintln!("{:<8} {} {what}", "", short(digest));
    }
}

#[cfg(test)]
mod tests {
    use super::Tenths;

    #[test]
    fn a_line_per_tenth_and_one_at_the_end() {
        let tenths = Tenths::new();
        let total = 100 << 20;
        let lines: Vec<String> = (0..=400u64)
            .filter_map(|i| tenths.line("layer", i * total / 400, total))
            .collect();
        assert_eq!(lines.len(), 10, "{lines:?}");
        assert!(lines[0].starts_with("layer: 10/100 MiB ("), "{lines:?}");
        assert!(lines[9].starts_with("layer: 100/100 MiB ("), "{lines:?}");
        assert_eq!(tenths.line("layer", total, total), None, "the end once");
        assert!(
            tenths.line("rootfs", 50 << 20, total).is_some(),
            "another transfer starts over"
        );
    }
}
