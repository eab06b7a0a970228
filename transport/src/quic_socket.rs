//! The UDP socket under quinn's endpoints, receiving into the first few of quinn's
//! receive slots only. quinn sizes its receive buffer for 32 messages of up to 64
//! coalesced (GRO) datagrams each, 13.3 MiB with 6,500-byte datagrams, and keeps it
//! for the endpoint's life: every page a datagram once reached stays resident after
//! the load. Offering the socket only [`RECV_SLOTS`] slots bounds that to what they
//! hold, and each receive still takes up to that many coalesced messages
//! (`docs/benchmarks.md`, finding 44).

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, UdpPoller};

/// Messages one receive takes at most (each up to 64 datagrams coalesced).
pub(crate) const RECV_SLOTS: usize = 4;

/// A socket that fills at most [`RECV_SLOTS`] of the buffers quinn offers.
#[derive(Debug)]
pub(crate) struct FewSlots(Arc<dyn AsyncUdpSocket>);

impl FewSlots {
    /// `socket`, registered with the tokio runtime, for an endpoint.
    pub(crate) fn wrap(socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let inner = quinn::TokioRuntime.wrap_udp_socket(socket)?;
        Ok(Arc::new(FewSlots(inner)))
    }
}

impl AsyncUdpSocket for FewSlots {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Arc::clone(&self.0).create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.0.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let n = bufs.len().min(meta.len()).min(RECV_SLOTS);
        self.0.poll_recv(cx, &mut bufs[..n], &mut meta[..n])
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.0.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.0.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.0.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_receive_fills_at_most_the_first_slots() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let addr = rx.local_addr().unwrap();
        let socket = FewSlots::wrap(rx).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // Sizes differ, so no two are coalesced into one message.
        for i in 0..40u8 {
            tx.send_to(&vec![i + 1; 100 + usize::from(i)], addr)
                .unwrap();
        }
        let mut storage = vec![vec![0u8; 64 * 1024]; 32];
        let mut meta = [RecvMeta::default(); 32];
        let n = {
            let mut bufs: Vec<IoSliceMut<'_>> =
                storage.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            std::future::poll_fn(|cx| socket.poll_recv(cx, &mut bufs, &mut meta))
                .await
                .unwrap()
        };
        assert!((1..=RECV_SLOTS).contains(&n), "{n}");
        assert_eq!(meta[0].len, 100);
        assert!(storage[0][..100].iter().all(|&b| b == 1));
        // The slots past the first few are never written.
        assert!(
            storage[RECV_SLOTS..]
                .iter()
                .all(|b| b.iter().all(|&x| x == 0))
        );
    }
}
