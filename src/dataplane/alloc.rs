//! The allocator: mimalloc, behind a thin `GlobalAlloc` that asks for an
//! aligned block only when the alignment needs one (set as the global
//! allocator in main.rs).
//!
//! `mimalloc::MiMalloc` sends every request through `mi_malloc_aligned`.
//! With mimalloc v3 that call leaves its fast path whenever the size class
//! has no free block at hand or the size is not a power of two, and then
//! over-allocates by the alignment and marks the page as holding interior
//! pointers: an 8 KiB buffer (hyper's read buffer, one per connection)
//! became a 10 KiB block, and callgrind counted about 7 such slow
//! allocations per proxied request (~2,000 instructions). mimalloc already
//! returns blocks aligned to 16 bytes (8 for blocks under 16 bytes), so,
//! as Rust's own system allocator does, alignments up to that go to
//! `mi_malloc` / `mi_zalloc` / `mi_realloc`; only larger ones to the
//! `_aligned` calls.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every mimalloc block of at least this many bytes has.
const MIN_ALIGN: usize = 16;

/// The data plane's global allocator (see the module text).
pub struct Mimalloc;

#[inline]
fn plain(align: usize, size: usize) -> bool {
    align <= MIN_ALIGN && align <= size
}

// SAFETY: every call forwards to mimalloc with a size and alignment that
// satisfy the layout: `plain` holds only when mimalloc's natural alignment
// covers the requested one; `mi_free` accepts any block from either path.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            unsafe { mi::mi_malloc(layout.size()) as *mut u8 }
        } else {
            unsafe { mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8 }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            unsafe { mi::mi_zalloc(layout.size()) as *mut u8 }
        } else {
            unsafe { mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8 }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        unsafe { mi::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain(layout.align(), new_size) {
            unsafe { mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8 }
        } else {
            unsafe {
                mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
        }
    }
}

/// Return this thread's free memory to the OS (mimalloc purges freed pages
/// lazily, during later allocations; an idle worker would keep them).
pub fn release_free_memory() {
    // SAFETY: mi_collect only walks and purges the calling thread's own
    // heap; it takes no pointers and is safe to call at any time.
    unsafe { libmimalloc_sys::mi_collect(false) }
}

/// Turn transparent huge pages off for this process (`[data]
/// transparent_huge_pages = false`, the default). mimalloc asks for huge
/// pages on its arenas (`MADV_HUGEPAGE`), and khugepaged then fills every
/// 2 MiB region that still holds one live block with a whole huge page
/// while the gateway idles: with 10,000 idle connections the resident set
/// measured 53–75 MiB from one run to the next and grew while nothing
/// ran; without, 43 MiB every time (benches/idle_rss.py).
#[cfg(target_os = "linux")]
pub fn disable_transparent_huge_pages() -> std::io::Result<()> {
    // SAFETY: PR_SET_THP_DISABLE takes integers only and changes a flag
    // of this process.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
pub fn disable_transparent_huge_pages() -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_have_the_alignment_asked_for() {
        let a = Mimalloc;
        for &(size, align) in &[
            (1, 1),
            (7, 1),
            (8, 8),
            (24, 8),
            (48, 16),
            (8192, 8),
            (3264, 8),
            (100, 64),
            (200, 128),
            (1 << 20, 4096),
        ] {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: non-zero sizes; each block is freed with its layout.
            unsafe {
                let p = a.alloc(layout);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "size {size} align {align}");
                p.write_bytes(0xa5, size);
                let q = a.realloc(p, layout, size * 3);
                assert_eq!(q as usize % align, 0, "realloc size {size} align {align}");
                assert_eq!(*q.add(size - 1), 0xa5);
                a.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
                let z = a.alloc_zeroed(layout);
                assert_eq!(z as usize % align, 0);
                assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                a.dealloc(z, layout);
            }
        }
    }
}
