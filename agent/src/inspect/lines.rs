//! Cache-line hints for the capture's copies. Forwarding copies what passes into
//! the queue on its core, and the capture thread reads it on another and copies it
//! into the history, whose lines no cache has held for a budget's worth of traffic:
//! each copy touches lines that are elsewhere, and waits for them one at a time
//! unless they are asked for ahead (`docs/benchmarks.md`, finding 50).

#![allow(unsafe_code)]

use std::ops::Range;

/// What the lines asked for ahead of a copy are wanted for.
#[derive(Debug, Clone, Copy)]
pub(super) enum Want {
    /// The copy's reader: the lines come into this core's cache.
    Read,
    /// The copy's writer: the core that read them last gives them up first.
    Write,
}

/// Appends `data` to `room` (which has the capacity for it), having asked for the
/// lines `ahead` bytes past the copies ([`ahead_of_copy`]) for `want`; `fresh` when
/// nothing was asked for in the room's allocation yet.
pub(super) fn extend_asking_ahead(
    room: &mut Vec<u8>,
    data: &[u8],
    ahead: usize,
    fresh: bool,
    want: Want,
) {
    let base = room.as_ptr();
    let range = ahead_of_copy(base, room.len(), data.len(), room.capacity(), ahead, fresh);
    match want {
        Want::Read => prefetch(base, range),
        Want::Write => prefetch_for_write(base, range),
    }
    room.extend_from_slice(data);
}

/// Asks for the lines of `range` of the allocation at `base`, to read them.
fn prefetch(base: *const u8, range: Range<usize>) {
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
fn prefetch_for_write(base: *const u8, range: Range<usize>) {
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

/// The part of a room of `room` bytes at `base` to ask for before a copy of `len`
/// bytes at `start`, so that `ahead` bytes past the copies are always asked for:
/// up to `ahead` past this copy's end, from the first line the copies before it
/// left (the one after the line holding `start + ahead - 1`). In a `fresh` room
/// (nothing asked for in it yet) only the bytes past the copy: the copy's own lines
/// are being written now. Without state, and no line is asked for twice.
pub(super) fn ahead_of_copy(
    base: *const u8,
    start: usize,
    len: usize,
    room: usize,
    ahead: usize,
    fresh: bool,
) -> Range<usize> {
    let to = (start + len + ahead).min(room);
    let from = if fresh {
        start + len
    } else {
        let at = base as usize + start + ahead;
        at.next_multiple_of(64) - base as usize
    };
    from.min(to)..to
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Copy after copy into one room, every byte past the first copy was asked
        /// for before a copy wrote it, and nothing past the room is asked for.
        #[test]
        fn copies_find_their_lines_asked_for_once(
            lens in proptest::collection::vec(1usize..6000, 1..40),
            ahead in 64usize..8192,
            room in 1usize..100_000,
            offset in 0usize..64,
        ) {
            // A room whose first byte sits anywhere in a line.
            let base = (4096 + offset) as *const u8;
            let line = |at: usize| (base as usize + at) / 64;
            let mut asked = vec![0u32; line(room) + 1];
            let mut start = 0;
            for (i, len) in lens.into_iter().enumerate() {
                if start + len > room {
                    break;
                }
                let range = ahead_of_copy(base, start, len, room, ahead, i == 0);
                prop_assert!(range.start <= range.end && range.end <= room);
                if !range.is_empty() {
                    for n in &mut asked[line(range.start)..=line(range.end - 1)] {
                        *n += 1;
                    }
                }
                if i > 0 {
                    prop_assert!((start..start + len).all(|b| asked[line(b)] > 0), "copy {} at {}", i, start);
                }
                start += len;
            }
            prop_assert!(asked.iter().all(|&n| n <= 1), "a line asked for twice");
        }
    }
}
