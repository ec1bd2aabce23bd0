//! The memory allocator of Berth's own binaries: Doug Lea's malloc (the
//! `dlmalloc` crate, pure Rust) behind one process-wide lock, instead of
//! musl's. musl's allocator hands back to the kernel every group of one to
//! four pages the moment it empties, so a process that reads many small files
//! (stage 1's coldplug reads hundreds from sysfs) maps and unmaps memory
//! thousands of times, and each new mapping is faulted in and zeroed again:
//! under one emulated CPU the boot's `berth` processes made 2,600 such calls
//! before the ready line. dlmalloc keeps freed memory for the next allocation
//! and gives the top of its heap back once more than 2 MiB is free there;
//! [`trim`] gives back what it can at once, for a process that is done
//! starting (docs/benchmarks.md, "An allocator that keeps what it frees").

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};

/// The allocator; a binary installs it with `#[global_allocator]`.
#[derive(Debug)]
pub struct Allocator;

struct Heap(UnsafeCell<dlmalloc::Dlmalloc>);

// SAFETY: the heap is only reached through `with_heap`, under `LOCK`.
unsafe impl Sync for Heap {}

static HEAP: Heap = Heap(UnsafeCell::new(dlmalloc::Dlmalloc::new()));

struct Lock(UnsafeCell<libc::pthread_mutex_t>);

// SAFETY: a pthread mutex is made to be shared between threads.
unsafe impl Sync for Lock {}

static LOCK: Lock = Lock(UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER));
static AT_FORK: AtomicBool = AtomicBool::new(false);

extern "C" fn lock() {
    // SAFETY: LOCK is a valid, statically initialised mutex that is never
    // moved or destroyed.
    unsafe { libc::pthread_mutex_lock(LOCK.0.get()) };
}

extern "C" fn unlock() {
    // SAFETY: as in `lock`; only called by the thread that holds it.
    unsafe { libc::pthread_mutex_unlock(LOCK.0.get()) };
}

/// Runs `f` on the heap under the lock. The first call registers fork
/// handlers that hold the lock across `fork()`, so a child of a threaded
/// process never starts with it taken by a thread it does not have.
fn with_heap<T>(f: impl FnOnce(&mut dlmalloc::Dlmalloc) -> T) -> T {
    if !AT_FORK.swap(true, Ordering::AcqRel) {
        // SAFETY: the handlers are plain functions that stay valid for the
        // life of the process; registering allocates nothing of ours.
        unsafe { libc::pthread_atfork(Some(lock), Some(unlock), Some(unlock)) };
    }
    lock();
    // SAFETY: the lock is held, so this is the only reference to the heap.
    let result = f(unsafe { &mut *HEAP.0.get() });
    unlock();
    result
}

// SAFETY: every call goes to dlmalloc under the lock, with the layout the
// caller gave; dlmalloc honours sizes and alignments as GlobalAlloc requires.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as GlobalAlloc::alloc's contract states it.
        with_heap(|h| unsafe { h.malloc(layout.size(), layout.align()) })
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        with_heap(|h| unsafe { h.calloc(layout.size(), layout.align()) })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator with this layout.
        with_heap(|h| unsafe { h.free(ptr, layout.size(), layout.align()) })
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with this layout.
        with_heap(|h| unsafe { h.realloc(ptr, layout.size(), layout.align(), new_size) })
    }
}

/// Gives the free memory at the top of the heap back to the kernel. Whether
/// any was given back. Harmless in a binary with another allocator: the heap
/// is then empty.
pub fn trim() -> bool {
    // SAFETY: trimming only unmaps memory the heap holds free.
    with_heap(|h| unsafe { h.trim(0) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_frees_and_trims() {
        let a = Allocator;
        let layout = Layout::from_size_align(3 << 20, 64).expect("layout");
        // SAFETY: a non-zero layout; the block is freed with the same one.
        unsafe {
            let p = a.alloc_zeroed(layout);
            assert!(!p.is_null());
            assert_eq!(p as usize % 64, 0);
            assert!((0..layout.size()).step_by(4096).all(|i| *p.add(i) == 0));
            let q = a.realloc(p, layout, 4 << 20);
            assert!(!q.is_null());
            a.dealloc(q, Layout::from_size_align(4 << 20, 64).expect("layout"));
        }
        trim();
    }
}
