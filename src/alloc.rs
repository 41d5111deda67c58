//! The process allocator: the system allocator, except that very large blocks are mapped with
//! `MAP_NORESERVE`, so a request for more memory than the machine has is reserved (not
//! committed) instead of failing.
//!
//! Why: `kafka-protocol` 0.18 sizes a decoded array from the count on the wire before reading
//! any element (`Vec::with_capacity(n)`; kafka-protocol-rs PRs #152/#161/#200, unreleased). A
//! malformed request of a few bytes can declare 2^31 elements; with the system allocator that
//! allocation fails and Rust aborts the whole process. Reserved this way, it costs nothing
//! until touched, the decoder fails on the missing bytes, and only that connection closes.
//! (Under `vm.overcommit_memory = 2` the kernel refuses the reservation too.)

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks this large or larger are mapped directly.
const LARGE: usize = 1 << 30;
const PAGE: usize = 4096;

pub struct Allocator;

fn large(layout: &Layout) -> bool {
    layout.size() >= LARGE && layout.align() <= PAGE
}

unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !large(&layout) {
            return unsafe { System.alloc(layout) };
        }
        // SAFETY: an anonymous private mapping of `size` bytes; page-aligned, so any
        // alignment up to a page holds. Anonymous mappings are zeroed.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            p.cast()
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if large(&layout) {
            unsafe { self.alloc(layout) }
        } else {
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if large(&layout) {
            // SAFETY: `ptr` came from the mmap above with this same size.
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        } else {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY (for the caller's contract): `new_size` is non-zero and fits `isize` with this
        // alignment, as `GlobalAlloc::realloc` requires.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !large(&layout) && !large(&new_layout) {
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the smaller of the two sizes and do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_blocks_are_reserved_not_committed() {
        let a = Allocator;
        // 64 GiB: more than this machine has; reserved, usable, released.
        let layout = Layout::from_size_align(64 << 30, 8).unwrap();
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            p.write(7);
            p.add(layout.size() - 1).write(9);
            assert_eq!(p.read(), 7);
            let q = a.realloc(p, layout, 4096);
            assert_eq!(
                q.read(),
                7,
                "contents move with a shrink below the threshold"
            );
            a.dealloc(q, Layout::from_size_align(4096, 8).unwrap());
        }
        unsafe {
            let small = Layout::from_size_align(100, 8).unwrap();
            let p = a.alloc_zeroed(small);
            assert_eq!(p.read(), 0);
            let big = a.realloc(p, small, LARGE);
            assert_eq!(big.read(), 0);
            a.dealloc(big, Layout::from_size_align(LARGE, 8).unwrap());
        }
    }
}
