//! [`Mux`]: the cloneable handle applications use to open and accept streams.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::config::Config;
use crate::driver::Driver;
use crate::error::SessionError;
use crate::frame::GoAwayCode;
use crate::session::{Role, Session, Stats};
use crate::shared::{Shared, register};
use crate::stream::MuxStream;

/// A handle to one mux session. Cheap to clone; the session closes with a `NORMAL`
/// go-away when the last handle is dropped.
#[derive(Debug)]
pub struct Mux {
    shared: Arc<Shared>,
    closed_rx: watch::Receiver<Option<SessionError>>,
}

impl Mux {
    /// Builds a session over `io` and returns its handle and the driver future,
    /// which must be spawned (or polled) for anything to happen.
    pub fn new<T>(io: T, role: Role, config: Config) -> (Mux, Driver<T>)
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let session = Session::new(role, config, crate::shared::now());
        let shared = Arc::new(Shared::new(session));
        let (closed_tx, closed_rx) = watch::channel(None);
        let driver = Driver::new(io, shared.clone(), closed_tx);
        (Mux { shared, closed_rx }, driver)
    }

    /// Builds a session over `io` and spawns its driver on the current runtime.
    pub fn spawn<T>(io: T, role: Role, config: Config) -> Mux
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mux, driver) = Mux::new(io, role, config);
        tokio::spawn(driver);
        mux
    }

    /// Opens a stream to the peer. The open costs one frame and no round trip: data
    /// written at once travels right behind it.
    pub async fn open(&self) -> Result<MuxStream, SessionError> {
        let mut inner = self.shared.lock();
        let id = inner.session.open_stream()?;
        inner.wakers.insert(id, Default::default());
        inner.wake_driver_if_needed();
        drop(inner);
        Ok(MuxStream::new(id, self.shared.clone()))
    }

    /// Waits for the next stream the peer opens; `None` once the session is closing
    /// or the peer has gone away.
    pub async fn accept(&self) -> Option<MuxStream> {
        poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// Poll form of [`Mux::accept`].
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<Option<MuxStream>> {
        let mut inner = self.shared.lock();
        if let Some(id) = inner.session.accept_stream() {
            inner.wakers.insert(id, Default::default());
            drop(inner);
            return Poll::Ready(Some(MuxStream::new(id, self.shared.clone())));
        }
        if inner.session.is_closing() || inner.session.remote_go_away().is_some() {
            return Poll::Ready(None);
        }
        register(&mut inner.accept_waker, cx.waker());
        Poll::Pending
    }

    /// The latest round-trip time measured by keepalive pings.
    pub fn rtt(&self) -> Option<Duration> {
        self.shared.lock().session.rtt()
    }

    /// Memory and stream counters of the session.
    pub fn stats(&self) -> Stats {
        self.shared.lock().session.stats()
    }

    /// Sends a go-away with `code` and closes the connection once it is flushed.
    pub fn close(&self, code: GoAwayCode) {
        let mut inner = self.shared.lock();
        inner.session.close(code);
        inner.wake_driver_if_needed();
    }

    /// Lets the peer open up to `backlog` streams the application has not accepted
    /// yet (from now on; streams already refused stay refused).
    pub fn set_accept_backlog(&self, backlog: usize) {
        self.shared.lock().session.set_accept_backlog(backlog);
    }

    /// True once the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.closed_rx.borrow().is_some()
    }

    /// Waits until the connection is gone and returns why.
    pub async fn closed(&self) -> SessionError {
        let mut rx = self.closed_rx.clone();
        let result = rx.wait_for(|v| v.is_some()).await;
        match result {
            Ok(v) => v.clone().unwrap_or(SessionError::Closed),
            Err(_) => SessionError::Closed,
        }
    }
}

impl Clone for Mux {
    fn clone(&self) -> Self {
        self.shared.lock().handles += 1;
        Mux {
            shared: self.shared.clone(),
            closed_rx: self.closed_rx.clone(),
        }
    }
}

impl Drop for Mux {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        inner.handles -= 1;
        if inner.handles == 0 {
            inner.session.close(GoAwayCode::NORMAL);
            inner.wake_driver_if_needed();
        }
    }
}
