//! The body of every response the Edge sends a viewer, carrying what its request holds
//! until the last byte has gone: the request's place among its connection's requests
//! in flight (so the connection's idle deadline waits for it), and its streams of the
//! tunnel and of the viewer's address.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, SizeHint};

use super::ViewerConn;
use super::upstream::{BoxError, PooledBody};
use crate::limits::StreamGuard;

/// A request in flight on a viewer connection; it ends when this drops.
#[derive(Debug)]
pub struct InFlight(Arc<ViewerConn>);

impl InFlight {
    /// A request starting on `conn`.
    pub fn begin(conn: Arc<ViewerConn>) -> Self {
        conn.activity.begin();
        InFlight(conn)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.activity.end();
    }
}

/// What a forwarded request holds: one stream of its tunnel and one of its viewer's
/// address.
#[derive(Debug)]
pub struct Streams {
    /// The tunnel's.
    pub tunnel: StreamGuard,
    /// The viewer address's.
    pub client: StreamGuard,
}

/// The body of a response to a viewer: the origin's or the Edge's own page, and
/// what its request holds, released at its end.
#[derive(Debug)]
pub struct ViewerBody {
    inner: Either<PooledBody, Full<Bytes>>,
    request: Option<InFlight>,
    streams: Option<Streams>,
}

impl ViewerBody {
    /// The origin's body, holding `streams`.
    pub fn origin(body: PooledBody, streams: Option<Streams>) -> Self {
        ViewerBody {
            inner: Either::Left(body),
            request: None,
            streams,
        }
    }

    /// A body the Edge made.
    pub fn page(body: Full<Bytes>) -> Self {
        ViewerBody {
            inner: Either::Right(body),
            request: None,
            streams: None,
        }
    }

    /// This body, ending `request` at its end.
    pub fn ending(mut self, request: InFlight) -> Self {
        self.request = Some(request);
        self
    }
}

impl Body for ViewerBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = polled {
            self.streams = None;
            self.request = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
