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
/// core that read them last gives them up before the copy reaches them. (To read
/// them, on a processor without `prefetchw`.)
pub(super) fn prefetch_for_write(base: *const u8, range: Range<usize>) {
    #[cfg(target_arch = "x86_64")]
    {
        if !has_prefetchw() {
            prefetch(base, range);
            return;
        }
        for line in lines(base, range) {
            // SAFETY: `prefetchw` (which this processor has) is a hint: it never
            // faults and writes nothing, whatever the address.
            unsafe {
                std::arch::asm!(
                    "prefetchw [{0}]",
                    in(reg) line,
                    options(nostack, preserves_flags, readonly)
                );
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (base, range);
}

/// Whether the processor has `prefetchw` (CPUID leaf 0x8000_0001, ECX bit 8).
#[cfg(target_arch = "x86_64")]
fn has_prefetchw() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| std::arch::x86_64::__cpuid(0x8000_0001).ecx & (1 << 8) != 0)
}

/// The addresses of the lines that `range` of the allocation at `base` touches.
/// (A line that starts before the allocation is asked for too: a hint reads
/// nothing into the program.)
#[cfg(target_arch = "x86_64")]
fn lines(base: *const u8, range: Range<usize>) -> impl Iterator<Item = usize> {
    let end = base as usize + range.end;
    let first = (base as usize + range.start) & !63;
    (first..end).step_by(64)
}

/// The offset in the allocation at `base` where the line after the one holding
/// offset `at - 1` starts: where asking for lines up to `at` left off.
pub(super) fn past_line(base: *const u8, at: usize) -> usize {
    ((base as usize + at).next_multiple_of(64)) - base as usize
}
