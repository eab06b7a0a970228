//! Deterministic byte patterns and checksums, so both ends of a stream can check what
//! they got without keeping it.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The buffer size [`send_pattern`] and [`read_all`] move bytes in.
const BUF: usize = 64 * 1024;

/// A deterministic byte pattern (xorshift), the same for the same seed.
pub struct Pattern(u64);

impl Pattern {
    /// The pattern for `seed` (any value; xorshift needs a non-zero state).
    pub fn new(seed: u64) -> Self {
        Pattern(seed | 1)
    }

    /// Fills `buf` with the next bytes of the pattern.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let b = self.0.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    }
}

/// FNV-1a and length of a byte stream (independent of how the bytes were split).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checksum {
    /// The FNV-1a hash so far.
    pub hash: u64,
    /// How many bytes went in.
    pub len: u64,
}

impl Default for Checksum {
    fn default() -> Self {
        Checksum {
            hash: 0xcbf29ce484222325,
            len: 0,
        }
    }
}

impl Checksum {
    /// Adds `data` to the checksum.
    pub fn update(&mut self, data: &[u8]) {
        let mut h = self.hash;
        for b in data {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
        self.hash = h;
        self.len += data.len() as u64;
    }
}

/// The bytes of a pattern, a buffer at a time: the one source [`send_pattern`] and
/// [`pattern_checksum`] share, so they agree byte for byte.
struct PatternChunks {
    pattern: Pattern,
    buf: Vec<u8>,
    left: usize,
}

impl PatternChunks {
    fn new(seed: u64, total: usize) -> Self {
        PatternChunks {
            pattern: Pattern::new(seed),
            buf: vec![0u8; BUF],
            left: total,
        }
    }

    /// The next chunk (at most [`BUF`] bytes), or `None` once `total` bytes came.
    fn next_chunk(&mut self) -> Option<&[u8]> {
        if self.left == 0 {
            return None;
        }
        let n = self.left.min(self.buf.len());
        self.left -= n;
        self.pattern.fill(&mut self.buf[..n]);
        Some(&self.buf[..n])
    }
}

/// The checksum [`send_pattern`] reports for `seed` and `total`.
pub fn pattern_checksum(seed: u64, total: usize) -> Checksum {
    let mut chunks = PatternChunks::new(seed, total);
    let mut sum = Checksum::default();
    while let Some(chunk) = chunks.next_chunk() {
        sum.update(chunk);
    }
    sum
}

/// Writes `total` bytes of [`Pattern`] `seed` to `w`, shuts it down, returns their checksum.
pub async fn send_pattern(w: &mut (impl AsyncWrite + Unpin), seed: u64, total: usize) -> Checksum {
    let mut chunks = PatternChunks::new(seed, total);
    let mut sum = Checksum::default();
    while let Some(chunk) = chunks.next_chunk() {
        sum.update(chunk);
        w.write_all(chunk).await.unwrap();
    }
    w.shutdown().await.unwrap();
    sum
}

/// Reads `r` to its end and returns the checksum of what came.
pub async fn read_all(r: &mut (impl AsyncRead + Unpin)) -> Checksum {
    let mut sum = Checksum::default();
    let mut buf = vec![0u8; BUF];
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            return sum;
        }
        sum.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn what_is_sent_matches_its_precomputed_checksum_and_what_is_read() {
        let total = 3 * BUF / 2 + 7;
        let (mut a, mut b) = tokio::io::duplex(BUF);
        let send = tokio::spawn(async move { send_pattern(&mut a, 7, total).await });
        let got = read_all(&mut b).await;
        let sent = send.await.unwrap();
        assert_eq!(sent, got);
        assert_eq!(sent, pattern_checksum(7, total));
        assert_eq!(sent.len, total as u64);
        assert_ne!(sent, pattern_checksum(8, total));
    }
}
