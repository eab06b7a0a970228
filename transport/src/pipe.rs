//! The bidirectional copy between a viewer or origin socket and a transport stream.
//!
//! Each direction runs on its own: when one side ends its writes, the other side's
//! write half is shut down and the opposite direction keeps flowing (half-close).
//! Data leaving a stream is written to the socket straight from the received `Bytes`;
//! data entering a stream is read into a buffer that is frozen and handed over whole,
//! so the pipe adds no copy of its own.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use netbore_metrics::Counter;
use netbore_mux::WindowBudget;
use netbore_mux::buffer::RecycledBuffer;
use netbore_mux::write_queue::poll_write_queue;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::Stream;

/// The read buffer's size once it has grown: a read takes up to this much from a
/// socket.
const READ_SIZE: usize = 128 * 1024;
/// Bytes a pipe's first read buffer holds. Most connections carry requests and
/// responses far smaller than [`READ_SIZE`], and an idle one reads nothing: with
/// thousands of them, [`READ_SIZE`] each spread the allocator's arenas over a
/// gigabyte whose pages the few blocks left among them kept resident after the load
/// (docs/benchmarks.md). A read that fills the room it was given makes it grow.
const FIRST_READ_SIZE: usize = 16 * 1024;
/// Most chunks gathered into one vectored socket write.
const GATHER_CHUNKS: usize = 16;
/// Bytes gathered before they are written, always allowed. Data gathered has left
/// the stream (and its sender was credited for it), so this, not the stream's
/// window, is what a viewer who stops reading makes the pipe hold.
const GATHER_BYTES: usize = 128 * 1024;
/// Bytes gathered at most: past [`GATHER_BYTES`] only while the budget given to
/// [`charge_gathers_to`] has room (each 512 KiB writev moves 5–7 % more through one
/// connection than 128 KiB ones, docs/benchmarks.md), or always in a process that
/// set no budget (an agent, whose memory is its user's).
const GATHER_MAX: usize = 512 * 1024;

/// The budget gathers past [`GATHER_BYTES`] are charged to, when set.
static GATHER_BUDGET: OnceLock<Arc<WindowBudget>> = OnceLock::new();

/// Charges what pipes gather past [`GATHER_BYTES`] to `budget` (the Edge's
/// `--max-buffered-bytes`, shared with its receive windows), so viewers who stop
/// reading cannot make the Edge hold more than that in all. Set once at start; a
/// process that never sets it lets every pipe gather [`GATHER_MAX`].
pub fn charge_gathers_to(budget: Arc<WindowBudget>) {
    let _ = GATHER_BUDGET.set(budget);
}

/// Bytes past [`GATHER_BYTES`] a pipe took from the budget; given back when its
/// queue drains and when it ends.
struct Extra {
    budget: Option<Arc<WindowBudget>>,
    taken: u64,
}

impl Default for Extra {
    fn default() -> Self {
        Extra {
            budget: GATHER_BUDGET.get().cloned(),
            taken: 0,
        }
    }
}

impl Extra {
    /// How many bytes the queue may hold now, taking more from the budget when the
    /// queue is full at its current limit.
    #[inline]
    fn limit(&mut self, queued: usize) -> usize {
        let limit = GATHER_BYTES + self.taken as usize;
        if queued < limit || limit >= GATHER_MAX {
            return limit;
        }
        self.grow(limit)
    }

    /// Takes what is left up to [`GATHER_MAX`] from the budget; the new limit.
    #[cold]
    fn grow(&mut self, limit: usize) -> usize {
        let want = (GATHER_MAX - limit) as u64;
        self.taken += match &self.budget {
            Some(budget) => budget.take_up_to(want),
            None => want,
        };
        GATHER_BYTES + self.taken as usize
    }

    /// Gives everything back once the queue is within [`GATHER_BYTES`].
    fn settle(&mut self, queued: usize) {
        if self.taken > 0 && queued <= GATHER_BYTES {
            if let Some(budget) = &self.budget {
                budget.give_back(self.taken);
            }
            self.taken = 0;
        }
    }
}

impl Drop for Extra {
    fn drop(&mut self) {
        self.settle(0);
    }
}

/// Bytes moved each way by a finished pipe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transferred {
    /// Socket → stream.
    pub to_stream: u64,
    /// Stream → socket.
    pub from_stream: u64,
}

/// Socket → stream: a chunk in flight, whether its source ended, and
/// whether its sink was shut down.
#[derive(Default)]
struct Direction {
    pending: Option<Bytes>,
    eof: bool,
    done: bool,
    total: u64,
}

/// Stream → socket: the chunks read from the stream and not yet written.
#[derive(Default)]
struct Gather {
    chunks: VecDeque<Bytes>,
    queued: usize,
    extra: Extra,
    eof: bool,
    done: bool,
    total: u64,
}

/// Bytes a pipe tallies before it adds them to a shared counter.
const TALLY_FLUSH: u64 = 256 * 1024;

/// One direction's bytes not yet added to its shared counter.
struct Tally<'a> {
    counter: Option<&'a Counter>,
    pending: u64,
}

impl Tally<'_> {
    fn add(&mut self, n: u64) {
        self.pending += n;
        if self.pending >= TALLY_FLUSH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if let Some(c) = self.counter
            && self.pending > 0
        {
            c.add(self.pending);
        }
        self.pending = 0;
    }
}

/// Counters a pipe adds to as bytes move (one relaxed atomic add per read or write).
#[derive(Debug, Clone, Copy)]
pub struct Counted<'a> {
    /// Bytes read from the socket and written to the stream.
    pub to_stream: &'a Counter,
    /// Bytes read from the stream and written to the socket.
    pub from_stream: &'a Counter,
}

/// Sees the bytes a pipe moves, in order, without changing them (the agent's request
/// inspector). Called once per chunk read, before the chunk is written on.
pub trait Tap: Send {
    /// Bytes read from the stream, on their way to the socket.
    fn read_from_stream(&mut self, data: &[u8]);
    /// Bytes read from the socket, on their way to the stream.
    fn read_from_socket(&mut self, data: &[u8]);
}

/// Copies between `socket` and `stream` until both directions have ended. An error
/// in either direction resets the stream and ends both.
pub async fn join<S>(socket: S, stream: Stream) -> io::Result<Transferred>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    join_counted(socket, stream, None).await
}

/// Joins two transport streams both ways until both directions have ended, as a
/// fleet node joins a link's stream to an agent's. Two mux streams are spliced
/// ([`netbore_mux::splice`]): their sessions' drivers move the bytes, with no task
/// woken per chunk. Otherwise `a` is copied to and from `b` as by [`join`]. An error
/// resets both.
pub async fn join_streams(a: Stream, b: Stream) -> io::Result<()> {
    match (a, b) {
        (Stream::Mux(a), Stream::Mux(b)) => Ok(netbore_mux::splice(a, b).await?),
        (mut a, b) => {
            let joined = join(&mut a, b).await;
            if joined.is_err() {
                a.reset();
            }
            joined.map(|_| ())
        }
    }
}

/// [`join`], adding what moves to `counted`: each direction keeps its own tally and
/// adds it to the shared counter every [`TALLY_FLUSH`] bytes and when the pipe ends,
/// so the many connections of a busy tunnel do not all write one cache line per
/// chunk.
pub async fn join_counted<S>(
    socket: S,
    stream: Stream,
    counted: Option<Counted<'_>>,
) -> io::Result<Transferred>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    join_tapped(socket, stream, counted, None).await
}

/// [`join_counted`], showing every chunk to `tap` as it passes.
pub async fn join_tapped<S>(
    mut socket: S,
    mut stream: Stream,
    counted: Option<Counted<'_>>,
    mut tap: Option<&mut dyn Tap>,
) -> io::Result<Transferred>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut up = Direction::default();
    let mut down = Gather::default();
    let mut buf = RecycledBuffer::new(FIRST_READ_SIZE);
    let mut up_tally = Tally {
        counter: counted.map(|c| c.to_stream),
        pending: 0,
    };
    let mut down_tally = Tally {
        counter: counted.map(|c| c.from_stream),
        pending: 0,
    };
    let result = poll_fn(|cx| {
        if !up.done
            && let Poll::Ready(Err(e)) = poll_up(
                cx,
                &mut socket,
                &mut stream,
                &mut up,
                &mut buf,
                &mut up_tally,
                tap.as_deref_mut(),
            )
        {
            return Poll::Ready(Err(e));
        }
        if !down.done
            && let Poll::Ready(Err(e)) = poll_down(
                cx,
                &mut socket,
                &mut stream,
                &mut down,
                &mut down_tally,
                tap.as_deref_mut(),
            )
        {
            return Poll::Ready(Err(e));
        }
        if up.done && down.done {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await;
    up_tally.flush();
    down_tally.flush();
    match result {
        Ok(()) => Ok(Transferred {
            to_stream: up.total,
            from_stream: down.total,
        }),
        Err(e) => {
            stream.reset();
            Err(e)
        }
    }
}

/// Socket → stream.
fn poll_up<S: AsyncRead + Unpin>(
    cx: &mut Context<'_>,
    socket: &mut S,
    stream: &mut Stream,
    dir: &mut Direction,
    buf: &mut RecycledBuffer,
    tally: &mut Tally<'_>,
    mut tap: Option<&mut (dyn Tap + '_)>,
) -> Poll<io::Result<()>> {
    loop {
        if let Some(data) = &mut dir.pending {
            let n = ready!(stream.poll_write_bytes(cx, data))?;
            data.advance(n);
            if data.is_empty() {
                dir.pending = None;
            }
            continue;
        }
        if dir.eof {
            ready!(Pin::new(&mut *stream).poll_shutdown(cx))?;
            dir.done = true;
            return Poll::Ready(Ok(()));
        }
        let into = ready_read(buf);
        let room = into.capacity() - into.len();
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut *socket),
            cx,
            into
        ))?;
        if n == 0 {
            dir.eof = true;
        } else {
            after_read(buf, n, room);
            dir.total += n as u64;
            tally.add(n as u64);
            let data = buf.get_mut().split().freeze();
            if let Some(tap) = tap.as_deref_mut() {
                tap.read_from_socket(&data);
            }
            dir.pending = Some(data);
        }
    }
}

/// The buffer a socket's next read goes into: room for a quarter of the buffer's
/// size at least, [`FIRST_READ_SIZE`] until a read filled its room, [`READ_SIZE`] after.
fn ready_read(buf: &mut RecycledBuffer) -> &mut bytes::BytesMut {
    buf.prepare(buf.size().min(READ_SIZE) / 4)
}

/// A read of `n` bytes into `room` bytes of room: one that filled it grows the buffer
/// to [`READ_SIZE`] (more was queued than it could take).
fn after_read(buf: &mut RecycledBuffer, n: usize, room: usize) {
    if n == room && buf.size() < READ_SIZE {
        buf.grow(READ_SIZE);
    }
}

/// Stream → socket. Chunks that have already arrived are gathered (up to
/// [`GATHER_CHUNKS`] and [`GATHER_BYTES`]) and written with one vectored write; a
/// socket that accepts nothing leaves the rest in the stream, under its flow control.
/// (Topping the queue up after a partial write, rather than first writing what is
/// left, keeps one syscall per wake-up: 5 % of bulk throughput, docs/benchmarks.md.)
fn poll_down<S: AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    socket: &mut S,
    stream: &mut Stream,
    dir: &mut Gather,
    tally: &mut Tally<'_>,
    mut tap: Option<&mut (dyn Tap + '_)>,
) -> Poll<io::Result<()>> {
    loop {
        if !dir.eof {
            while dir.chunks.len() < GATHER_CHUNKS && dir.queued < dir.extra.limit(dir.queued) {
                match stream.poll_read_chunk(cx) {
                    Poll::Ready(Ok(Some(chunk))) => {
                        if let Some(tap) = tap.as_deref_mut() {
                            tap.read_from_stream(&chunk);
                        }
                        dir.queued += chunk.len();
                        dir.chunks.push_back(chunk);
                    }
                    Poll::Ready(Ok(None)) => {
                        dir.eof = true;
                        break;
                    }
                    // Write what came before the error first; the next read repeats it.
                    Poll::Ready(Err(_)) if !dir.chunks.is_empty() => break,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                }
            }
        }
        if !dir.chunks.is_empty() {
            let written = ready!(poll_write_queue::<GATHER_CHUNKS, _>(
                socket,
                cx,
                &mut dir.chunks
            ))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            dir.total += written as u64;
            tally.add(written as u64);
            dir.queued -= written;
            dir.extra.settle(dir.queued);
            continue;
        }
        if dir.eof {
            ready!(Pin::new(&mut *socket).poll_shutdown(cx))?;
            dir.done = true;
            return Poll::Ready(Ok(()));
        }
        return Poll::Pending;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipes_buffer_starts_small_and_grows_when_a_read_fills_it() {
        let mut buf = RecycledBuffer::new(FIRST_READ_SIZE);
        // Small reads, like requests and their responses: the buffer stays small.
        for _ in 0..100 {
            let into = ready_read(&mut buf);
            assert_eq!(into.capacity(), FIRST_READ_SIZE);
            let room = into.capacity() - into.len();
            into.extend_from_slice(&[1u8; 1000]);
            let _ = into.split();
            after_read(&mut buf, 1000, room);
        }
        // A read that takes all the room: more was waiting.
        let into = ready_read(&mut buf);
        let room = into.capacity() - into.len();
        into.extend_from_slice(&vec![2u8; room]);
        let piece = into.split().freeze();
        after_read(&mut buf, room, room);
        assert_eq!(buf.size(), READ_SIZE);
        assert!(ready_read(&mut buf).capacity() >= READ_SIZE);
        drop(piece);
    }

    /// Records the largest chunk read from the socket, and every byte.
    #[derive(Default)]
    struct Chunks {
        largest: usize,
        bytes: Vec<u8>,
    }

    impl Tap for Chunks {
        fn read_from_stream(&mut self, _: &[u8]) {}
        fn read_from_socket(&mut self, data: &[u8]) {
            self.largest = self.largest.max(data.len());
            self.bytes.extend_from_slice(data);
        }
    }

    #[tokio::test]
    async fn a_pipe_grows_its_buffer_when_the_socket_has_more_than_it_takes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let config = netbore_mux::Config {
            keepalive_interval: None,
            ..netbore_mux::Config::default()
        };
        let (a, b) = tokio::io::duplex(1 << 20);
        let near = netbore_mux::Mux::spawn(a, netbore_mux::Role::Client, config.clone());
        let far = netbore_mux::Mux::spawn(b, netbore_mux::Role::Server, config);
        let stream = near.open().await.unwrap();
        // The socket holds 1 MiB before the pipe's first read: that read fills its
        // first buffer, and the reads after it take more than that at a time.
        let (socket, mut viewer) = tokio::io::duplex(1 << 20);
        let sent: Vec<u8> = (0..1usize << 20).map(|i| (i * 7 % 251) as u8).collect();
        viewer.write_all(&sent).await.unwrap();
        viewer.shutdown().await.unwrap();
        let reader = tokio::spawn(async move {
            let mut accepted = far.accept().await.unwrap();
            let mut got = Vec::new();
            accepted.read_to_end(&mut got).await.unwrap();
            accepted.shutdown().await.unwrap();
            (got, far)
        });
        let mut chunks = Chunks::default();
        let limit = std::time::Duration::from_secs(30);
        let moved = tokio::time::timeout(
            limit,
            join_tapped(socket, Stream::Mux(stream), None, Some(&mut chunks)),
        )
        .await
        .expect("the pipe ended within 30 s")
        .unwrap();
        let (got, _far) = tokio::time::timeout(limit, reader)
            .await
            .expect("the far end read everything within 30 s")
            .unwrap();
        assert_eq!(moved.to_stream, sent.len() as u64);
        assert!(
            got == sent && chunks.bytes == sent,
            "the bytes changed on the way"
        );
        assert!(
            chunks.largest > FIRST_READ_SIZE,
            "the largest read was {} bytes: the buffer never grew",
            chunks.largest
        );
        drop(near);
    }

    #[test]
    fn gathers_past_the_base_only_with_room_in_the_budget_and_give_it_back() {
        let budget = Arc::new(WindowBudget::new(500 * 1024));
        let mut extra = Extra {
            budget: Some(budget.clone()),
            taken: 0,
        };
        // Below the base nothing is taken.
        assert_eq!(extra.limit(1000), GATHER_BYTES);
        assert_eq!(budget.granted(), 0);
        // Full at the base: the rest up to the maximum comes from the budget.
        assert_eq!(extra.limit(GATHER_BYTES), GATHER_MAX);
        assert_eq!(budget.granted(), (GATHER_MAX - GATHER_BYTES) as u64);
        // A second pipe finds less room and gathers less.
        let mut other = Extra {
            budget: Some(budget.clone()),
            taken: 0,
        };
        let left = 500 * 1024 - (GATHER_MAX - GATHER_BYTES);
        assert_eq!(other.limit(GATHER_BYTES), GATHER_BYTES + left);
        assert_eq!(budget.granted(), budget.limit());
        // A third finds none and keeps to the base.
        let mut third = Extra {
            budget: Some(budget.clone()),
            taken: 0,
        };
        assert_eq!(third.limit(GATHER_BYTES), GATHER_BYTES);
        // Drained below the base, the first gives its share back; the second, when
        // it ends.
        extra.settle(GATHER_BYTES + 1);
        assert_eq!(budget.granted(), budget.limit());
        extra.settle(GATHER_BYTES);
        drop(other);
        assert_eq!(budget.granted(), 0);
        // Without a budget (an agent) every pipe may gather the maximum.
        let mut free = Extra {
            budget: None,
            taken: 0,
        };
        assert_eq!(free.limit(GATHER_BYTES), GATHER_MAX);
    }
}
