//! A global allocator that counts, per thread, the bytes live and their peak.
//!
//! Per thread, so tests running in parallel do not see each other's allocations. A
//! binary installs it with `#[global_allocator] static A: Counting = Counting;`, then
//! [`measure`] gives the peak heap a closure reached above what was live before it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    // Const-initialised Cells of plain integers: reading them never allocates and they
    // have no destructor, which is what makes them usable inside an allocator.
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

/// The system allocator, counting.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counting;

fn grew(by: usize) {
    // `try_with` fails only while the thread is being torn down; those bytes are not
    // inside any measurement.
    let _ = LIVE.try_with(|live| {
        let now = live.get().saturating_add(by);
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn shrank(by: usize) {
    // Memory freed on another thread than the one that allocated it would underflow.
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(by)));
}

// SAFETY: every method forwards its arguments unchanged to the system allocator and
// returns its result; the only other work is on the thread-local counters above.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrank(layout.size());
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as if the old and the new block were both live for a moment, as they
        // are when the block moves.
        grew(new_size);
        shrank(layout.size());
        System.realloc(ptr, layout, new_size)
    }
}

/// Bytes this thread holds now.
pub fn live() -> usize {
    LIVE.with(Cell::get)
}

/// Runs `f` and returns its result with the peak of the bytes this thread held during
/// it, above what it held before (the result's own heap included).
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let start = live();
    PEAK.with(|p| p.set(start));
    let r = f();
    let peak = PEAK.with(Cell::get);
    (r, peak.saturating_sub(start))
}

/// Whether [`Counting`] is this process's global allocator: without it every
/// measurement reads 0 and a bound would hold vacuously.
pub fn installed() -> bool {
    let before = live();
    let probe = std::hint::black_box(vec![0u8; 4096]);
    let counted = live().saturating_sub(before) >= 4096;
    drop(probe);
    counted
}
