//! A read buffer that recycles its memory.
//!
//! Payloads are split off a read buffer as `Bytes` and handed to their consumers, so
//! a buffer cannot be reused until every piece of it is dropped. Allocating a fresh
//! buffer each time made the kernel fault in and zero new pages for every read (a
//! quarter of the agent's CPU time in profiles). This buffer parks exhausted
//! allocations and takes one back as soon as all its pieces are gone.

use std::collections::VecDeque;

use bytes::BytesMut;

/// Parked allocations kept per buffer; beyond this they are freed.
const MAX_PARKED: usize = 16;

/// A growable read buffer backed by a few recycled allocations.
#[derive(Debug)]
pub struct RecycledBuffer {
    current: BytesMut,
    parked: VecDeque<BytesMut>,
    size: usize,
    /// How many times the current allocation gave way to another.
    rotations: u64,
}

impl RecycledBuffer {
    /// A buffer whose allocations are `size` bytes (or larger when a read needs it).
    pub fn new(size: usize) -> Self {
        RecycledBuffer {
            current: BytesMut::with_capacity(size),
            parked: VecDeque::new(),
            size,
            rotations: 0,
        }
    }

    /// The buffer, for splitting off what was read.
    pub fn get_mut(&mut self) -> &mut BytesMut {
        &mut self.current
    }

    /// Makes room for at least `min_spare` more bytes, keeping the unread bytes, and
    /// returns the buffer to read into.
    pub fn prepare(&mut self, min_spare: usize) -> &mut BytesMut {
        // An empty buffer whose pieces are all gone starts again at the front of its
        // allocation, so an idle session keeps touching the same page instead of
        // walking through (and making resident) the whole allocation.
        if self.current.is_empty() {
            let _ = self.current.try_reclaim(self.size);
        }
        if self.current.capacity() - self.current.len() >= min_spare {
            return &mut self.current;
        }
        // Everything split off earlier may already be gone: reuse in place.
        if self.current.try_reclaim(min_spare) {
            return &mut self.current;
        }
        let need = (self.current.len() + min_spare).max(self.size);
        let mut next = None;
        for _ in 0..self.parked.len() {
            let mut candidate = self.parked.pop_front().expect("counted");
            if candidate.try_reclaim(need) {
                next = Some(candidate);
                break;
            }
            self.parked.push_back(candidate);
        }
        self.rotations += 1;
        let mut next = next.unwrap_or_else(|| BytesMut::with_capacity(need));
        next.extend_from_slice(&self.current);
        let mut old = std::mem::replace(&mut self.current, next);
        old.clear();
        if self.parked.len() < MAX_PARKED {
            self.parked.push_back(old);
        }
        &mut self.current
    }

    /// The size of the allocations it makes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Makes later allocations `size` bytes: a buffer can start small and grow once
    /// reads show it is too small. The smaller allocations parked so far are let go
    /// (none could hold a read of the new size).
    pub fn grow(&mut self, size: usize) {
        if size > self.size {
            self.size = size;
            self.parked = VecDeque::new();
        }
    }

    /// How many times the current allocation gave way to another so far: while
    /// this does not move, the parked ones are not needed.
    pub fn rotations(&self) -> u64 {
        self.rotations
    }

    /// Whether allocations are parked, for [`Self::shed`].
    pub fn holds_parked(&self) -> bool {
        !self.parked.is_empty()
    }

    /// Frees the parked allocations: a burst that needed them is over. The current
    /// one stays for the next read.
    pub fn shed(&mut self) {
        self.parked = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_buffer_keeps_reading_into_the_same_place() {
        let mut buf = RecycledBuffer::new(4096);
        let start = buf.prepare(64).as_ptr();
        for _ in 0..1000 {
            let b = buf.prepare(64);
            assert_eq!(b.as_ptr(), start, "reads wander through the allocation");
            b.extend_from_slice(&[0u8; 12]);
            // Consumed at once, like a ping.
            let _ = b.split_to(12);
        }
    }

    #[test]
    fn memory_is_reused_once_every_piece_is_dropped() {
        let mut buf = RecycledBuffer::new(1024);
        let first = buf.prepare(512).as_ptr();
        buf.get_mut().extend_from_slice(&[1u8; 1000]);
        let piece = buf.get_mut().split_to(990).freeze();
        // Still referenced: a new allocation takes over, keeping the unread tail.
        let b = buf.prepare(512);
        assert_eq!(&b[..], &[1u8; 10]);
        assert_ne!(b.as_ptr(), first);
        drop(piece);
        // Exhaust the second allocation; the first is free again and comes back.
        let b = buf.get_mut();
        b.extend_from_slice(&vec![2u8; b.capacity() - b.len()]);
        let _all = b.split().freeze();
        assert_eq!(buf.prepare(512).as_ptr(), first);
    }

    #[test]
    fn a_small_buffer_grows_at_its_next_allocation() {
        let mut buf = RecycledBuffer::new(1024);
        assert_eq!(buf.prepare(256).capacity(), 1024);
        buf.get_mut().extend_from_slice(&[4u8; 1000]);
        let piece = buf.get_mut().split().freeze();
        // A second small allocation takes over while the piece is held, and the
        // first is parked.
        assert_eq!(buf.prepare(256).capacity(), 1024);
        assert!(buf.holds_parked());
        buf.grow(8192);
        buf.grow(4096);
        assert_eq!(buf.size(), 8192);
        assert!(!buf.holds_parked(), "small allocations stay parked");
        buf.get_mut().extend_from_slice(&[5u8; 1000]);
        let second = buf.get_mut().split().freeze();
        assert!(buf.prepare(2048).capacity() >= 8192);
        drop((piece, second));
    }

    #[test]
    fn parked_allocations_are_shed_and_reading_goes_on() {
        let mut buf = RecycledBuffer::new(1024);
        let mut pieces = Vec::new();
        for _ in 0..4 {
            let b = buf.prepare(1024);
            b.extend_from_slice(&[3u8; 1024]);
            pieces.push(b.split().freeze());
        }
        assert_eq!(buf.rotations(), 3);
        drop(pieces);
        assert!(buf.holds_parked());
        buf.shed();
        assert!(!buf.holds_parked());
        let b = buf.prepare(1024);
        b.extend_from_slice(b"after");
        assert_eq!(&buf.get_mut()[..], b"after");
    }
}
