//! Vectored writes from a queue of `Bytes`: the mux driver's frames to its connection
//! and a pipe's received chunks to its socket leave the same way, several chunks per
//! syscall and without copying them together.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use tokio::io::AsyncWrite;

/// Writes the front of `queue` (up to `N` chunks) with one vectored write and drops
/// what was written from it. Returns the bytes written; 0 means the writer accepted
/// nothing (it is closed) or the queue was empty.
pub fn poll_write_queue<const N: usize, W: AsyncWrite + Unpin>(
    io: &mut W,
    cx: &mut Context<'_>,
    queue: &mut VecDeque<Bytes>,
) -> Poll<io::Result<usize>> {
    let mut slices = [IoSlice::new(&[]); N];
    let mut n = 0;
    for (slot, chunk) in slices.iter_mut().zip(queue.iter()) {
        *slot = IoSlice::new(chunk);
        n += 1;
    }
    if n == 0 {
        return Poll::Ready(Ok(0));
    }
    let written = ready!(Pin::new(io).poll_write_vectored(cx, &slices[..n]))?;
    let mut left = written;
    while left > 0 {
        let Some(front) = queue.front_mut() else {
            break;
        };
        if front.len() <= left {
            left -= front.len();
            queue.pop_front();
        } else {
            front.advance(left);
            left = 0;
        }
    }
    Poll::Ready(Ok(written))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn written_bytes_leave_the_queue_in_order() {
        let (mut a, mut b) = tokio::io::duplex(10);
        let mut queue: VecDeque<Bytes> = ["abc", "defgh", "ij", "klmnopq"]
            .into_iter()
            .map(|s| Bytes::from_static(s.as_bytes()))
            .collect();
        let mut out = Vec::new();
        while !queue.is_empty() {
            let n = std::future::poll_fn(|cx| poll_write_queue::<2, _>(&mut a, cx, &mut queue))
                .await
                .unwrap();
            assert!(n > 0);
            let mut buf = vec![0u8; n];
            tokio::io::AsyncReadExt::read_exact(&mut b, &mut buf)
                .await
                .unwrap();
            out.extend_from_slice(&buf);
        }
        assert_eq!(out, b"abcdefghijklmnopq");
    }
}
