//! Deleted containers' bundles, removed off the caller's path.
//!
//! Once a container is deleted nothing needs its bundle, but unmounting its
//! root waits for an RCU grace period (about 1.5 ms, most of what the host
//! side of a delete costs) and a written upper layer can take long to remove.
//! So `delete` renames the bundle out of `containers/` — the id is free at
//! once — and a thread of its own unmounts and removes it. A berthd that
//! stops waits for those threads ([`Removals::finish`]); what one that
//! crashed left is removed when the next one starts ([`Removals::new`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use super::bundle::unmount;

/// Removals under way, and the place their bundles wait.
#[derive(Debug)]
pub(super) struct Removals {
    dir: PathBuf,
    next: AtomicU64,
    pending: Arc<Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    count: Mutex<usize>,
    done: Condvar,
}

impl Pending {
    fn add(&self) {
        *self.count.lock().unwrap_or_else(PoisonError::into_inner) += 1;
    }

    fn finished_one(&self) {
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        *count = count.saturating_sub(1);
        self.done.notify_all();
    }
}

impl Removals {
    /// Keeps bundles being removed in `dir` (created if missing), and removes
    /// what an earlier process left there. Starts no thread: the caller may
    /// not have forked yet.
    pub(super) fn new(dir: PathBuf) -> std::io::Result<Removals> {
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)?.flatten() {
            if let Err(e) = remove(&entry.path()) {
                log::warn!(
                    "{}: an earlier removal's bundle: {e}",
                    entry.path().display()
                );
            }
        }
        Ok(Removals {
            dir,
            next: AtomicU64::new(0),
            pending: Arc::default(),
        })
    }

    /// Takes `bundle` out of its place now and removes it on a thread. The
    /// thread inherits the caller's signal mask (berthd's block the signals
    /// its main thread waits for). Where the bundle cannot be moved or no
    /// thread started, it is removed here.
    pub(super) fn remove(&self, bundle: &Path) -> std::io::Result<()> {
        let name = bundle
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // The pid keeps names unique across berthd's restarts, should a
        // removal have failed and left its directory.
        let parked = self.dir.join(format!("{}.{n}.{name}", std::process::id()));
        if let Err(e) = std::fs::rename(bundle, &parked) {
            log::debug!(
                "{}: not moved aside ({e}); removing it in place",
                bundle.display()
            );
            return remove(bundle);
        }
        self.pending.add();
        let pending = Arc::clone(&self.pending);
        let thread = std::thread::Builder::new()
            .name("bundle-removal".into())
            .stack_size(64 << 10)
            .spawn({
                let parked = parked.clone();
                move || {
                    if let Err(e) = remove(&parked) {
                        log::warn!(
                            "{}: removing a deleted container's bundle: {e}",
                            parked.display()
                        );
                    }
                    pending.finished_one();
                }
            });
        if let Err(e) = thread {
            self.pending.finished_one();
            log::debug!(
                "no thread to remove {} ({e}); removing it here",
                parked.display()
            );
            return remove(&parked);
        }
        Ok(())
    }

    /// Waits at most `timeout` for every removal begun to end; false when
    /// some have not.
    pub(super) fn finish(&self, timeout: Duration) -> bool {
        let count = self
            .pending
            .count
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (count, _) = self
            .pending
            .done
            .wait_timeout_while(count, timeout, |count| *count > 0)
            .unwrap_or_else(PoisonError::into_inner);
        *count == 0
    }
}

/// Unmounts a bundle's root and removes the bundle. The empty mount point is
/// removed on its own first, so a root still mounted (stacked mounts) fails
/// the removal instead of being removed through.
fn remove(bundle: &Path) -> std::io::Result<()> {
    let rootfs = bundle.join("rootfs");
    if rootfs.symlink_metadata().is_ok() {
        unmount(&rootfs)?;
        std::fs::remove_dir(&rootfs)?;
    }
    match std::fs::remove_dir_all(bundle) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
