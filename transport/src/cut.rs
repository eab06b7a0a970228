//! A viewer's TCP connection that is reset, not closed, unless its pipe finished:
//! a stream cut by a failure (the agent or a node went away, the task serving it was
//! stopped) must never look to the viewer like data that ended cleanly.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP connection that sends a reset when dropped before [`ResetUnlessFinished::finish`].
#[derive(Debug)]
pub struct ResetUnlessFinished {
    socket: TcpStream,
    finished: bool,
}

impl ResetUnlessFinished {
    /// Wraps `socket`.
    pub fn new(socket: TcpStream) -> Self {
        ResetUnlessFinished {
            socket,
            finished: false,
        }
    }

    /// Both directions ended cleanly: the connection closes normally when dropped.
    /// (Ending the viewer's direction with a shutdown does the same.)
    pub fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for ResetUnlessFinished {
    fn drop(&mut self) {
        if !self.finished {
            // A zero linger makes the close a reset; it never blocks.
            let _ = self.socket.set_zero_linger();
        }
    }
}

impl AsyncRead for ResetUnlessFinished {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResetUnlessFinished {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let done = Pin::new(&mut this.socket).poll_shutdown(cx);
        // Everything for the viewer was written and ended: a reset now would throw
        // away what its kernel has not delivered yet.
        if matches!(done, Poll::Ready(Ok(()))) {
            this.finished = true;
        }
        done
    }
}
