//! A counting global allocator: forwards to the allocator the `kaos` binary uses (mimalloc;
//! the C library's `System` with the feature `system-alloc`) and, only while a [`Window`] is open,
//! keeps a live heap byte count, so the bench can measure how much memory a persisted
//! session (or a served stream) holds without putting an atomic read-modify-write on every
//! allocation of the timing figures.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

/// Bytes allocated minus bytes freed while counting.
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
/// Open windows; the allocator counts only while this is not zero.
static WINDOWS: AtomicUsize = AtomicUsize::new(0);

#[inline]
fn counting() -> bool {
    WINDOWS.load(Ordering::Relaxed) != 0
}

/// The allocator the figures are measured on: the `kaos` binary's (mimalloc) by default.
#[cfg(not(feature = "system-alloc"))]
const INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;
/// The allocator the figures are measured on: the C library's (feature `system-alloc`).
#[cfg(feature = "system-alloc")]
const INNER: std::alloc::System = std::alloc::System;

/// The name of [`INNER`], for the report.
pub(crate) const ALLOCATOR: &str = if cfg!(feature = "system-alloc") {
    "system"
} else {
    "mimalloc"
};

/// [`INNER`], counting live bytes while a [`Window`] is open.
pub(crate) struct Counting;

// SAFETY: every method forwards to `INNER` with the caller's arguments unchanged; the only
// addition is a relaxed atomic load and, while counting, a relaxed counter update, which
// cannot affect the allocation.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as-is (the caller upholds `GlobalAlloc::alloc`'s contract).
        let p = unsafe { INNER.alloc(layout) };
        if !p.is_null() && counting() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as-is.
        unsafe { INNER.dealloc(ptr, layout) };
        if counting() {
            LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as-is.
        let p = unsafe { INNER.alloc_zeroed(layout) };
        if !p.is_null() && counting() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as-is.
        let p = unsafe { INNER.realloc(ptr, layout, new_size) };
        if !p.is_null() && counting() {
            LIVE_BYTES.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A memory measurement: while it is open the allocator counts, and [`Window::grown`] is the
/// change in live heap bytes since it opened (allocations minus frees in between, whenever
/// the freed blocks were allocated: exactly the live-heap delta). Never open one around a
/// timing figure.
pub(crate) struct Window {
    start: isize,
}

impl Window {
    /// Starts counting.
    pub(crate) fn open() -> Self {
        WINDOWS.fetch_add(1, Ordering::SeqCst);
        Self {
            start: LIVE_BYTES.load(Ordering::SeqCst),
        }
    }

    /// Live heap bytes now minus when the window opened.
    pub(crate) fn grown(&self) -> isize {
        LIVE_BYTES.load(Ordering::SeqCst) - self.start
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        WINDOWS.fetch_sub(1, Ordering::SeqCst);
    }
}
