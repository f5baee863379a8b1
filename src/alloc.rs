//! The allocator: mimalloc (set as the global allocator in main.rs).

/// Return this thread's free memory to the OS (mimalloc purges freed pages
/// lazily, during later allocations; an idle worker would keep them).
pub fn release_free_memory() {
    // SAFETY: mi_collect only walks and purges the calling thread's own
    // heap; it takes no pointers and is safe to call at any time.
    unsafe { libmimalloc_sys::mi_collect(false) }
}
