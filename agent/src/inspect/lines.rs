//! Cache-line hints for the capture's copies. Forwarding copies what passes into
//! the queue on its core, and the capture thread reads it on another and copies it
//! into the history, whose lines no cache has held for a budget's worth of traffic:
//! each copy touches lines that are elsewhere, and waits for them one at a time
//! unless they are asked for ahead (`docs/benchmarks.md`, finding 50).

#![allow(unsafe_code)]

use std::ops::Range;

/// Asks for the lines of `range` of the allocation at `base`, to read them.
pub(super) fn prefetch(base: *const u8, range: Range<usize>) {
    #[cfg(target_arch = "x86_64")]
    for line in lines(base, range) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch is a hint: it never faults and reads nothing into the
        // program, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(line as *const i8) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (base, range);
}

/// Asks for the lines of `range` of the allocation at `base`, to write them: the
/// core that read them last gives them up before the copy reaches them.
pub(super) fn prefetch_for_write(base: *const u8, range: Range<usize>) {
    #[cfg(target_arch = "x86_64")]
    for line in lines(base, range) {
        // SAFETY: `prefetchw` is a hint like `prefetcht0` (it never faults), and a
        // processor without it runs it as a no-op.
        unsafe {
            std::arch::asm!(
                "prefetchw [{0}]",
                in(reg) line,
                options(nostack, preserves_flags, readonly)
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (base, range);
}

/// The addresses of the lines that `range` of the allocation at `base` touches.
#[cfg(target_arch = "x86_64")]
fn lines(base: *const u8, range: Range<usize>) -> impl Iterator<Item = usize> {
    let end = base as usize + range.end;
    let first = (base as usize + range.start) & !63;
    (first..end).step_by(64)
}
