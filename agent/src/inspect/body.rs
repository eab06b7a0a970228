//! Following a body as it passes: its framing (`Content-Length`, chunked, until the
//! connection closes), its size, and its first bytes up to the body limit.

use super::fields::chunk_size;
use super::store::{Store, StoredBody};

/// The longest chunk-size or trailer line followed.
const MAX_LINE: usize = 4096;
/// Room a side keeps for the next head or body; more is given back once used.
const KEEP_ROOM: usize = 4096;

/// A body as it passes: its size and its first bytes, up to the body limit, held
/// until it ends and is copied into the history.
#[derive(Default)]
pub(super) struct Capture {
    pub(super) size: u64,
    pub(super) captured: Vec<u8>,
    pub(super) truncated: bool,
    /// Bytes before the limit passed unread: nothing more is kept.
    pub(super) holed: bool,
}

impl Capture {
    /// The body for record `seq` (`whole`: it came in one piece, read where it
    /// lies; `cut`: the stream ended in its middle); this one starts again, empty.
    pub(super) fn finish(
        &mut self,
        store: &mut Store,
        seq: u64,
        whole: Option<&[u8]>,
        cut: bool,
    ) -> StoredBody {
        let body = StoredBody {
            size: self.size,
            piece: store.put(seq, whole.unwrap_or(&self.captured)),
            truncated: self.truncated || self.holed || cut,
        };
        self.size = 0;
        self.truncated = false;
        self.holed = false;
        reuse(&mut self.captured);
        body
    }
}

/// Empties `room`, keeping its allocation for the next message unless it is large.
pub(super) fn reuse(room: &mut Vec<u8>) {
    room.clear();
    if room.capacity() > KEEP_ROOM {
        *room = Vec::new();
    }
}

pub(super) enum Framing {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

pub(super) enum Chunk {
    /// In the chunk-size line, this long so far.
    Size { line: Vec<u8> },
    /// In a chunk's data, this much left.
    Data(u64),
    /// In the line ending after a chunk's data.
    DataEnd,
    /// In the trailer section, the current line this long.
    Trailer { line: usize },
    /// Not chunked framing after all: nothing more is followed on this side.
    Lost,
}

impl Framing {
    /// Takes body bytes of `data`; returns the bytes used and whether the body ended.
    pub(super) fn step(&mut self, data: &[u8], body: &mut Capture, limit: usize) -> (usize, bool) {
        match self {
            Framing::Length(left) => {
                let n = (*left).min(data.len() as u64) as usize;
                keep(body, &data[..n], limit);
                *left -= n as u64;
                (n, *left == 0)
            }
            Framing::UntilClose => {
                keep(body, data, limit);
                (data.len(), false)
            }
            Framing::Chunked(chunk) => chunk.step(data, body, limit),
        }
    }
}

impl Chunk {
    pub(super) fn step(&mut self, data: &[u8], body: &mut Capture, limit: usize) -> (usize, bool) {
        let mut used = 0;
        while used < data.len() {
            let rest = &data[used..];
            match self {
                Chunk::Size { line } => {
                    let Some(i) = rest.iter().position(|&b| b == b'\n') else {
                        if line.len() + rest.len() > MAX_LINE {
                            *self = Chunk::Lost;
                        } else {
                            line.extend_from_slice(rest);
                        }
                        return (data.len(), false);
                    };
                    if line.len() + i > MAX_LINE {
                        *self = Chunk::Lost;
                        return (data.len(), false);
                    }
                    line.extend_from_slice(&rest[..i]);
                    used += i + 1;
                    let size = chunk_size(line);
                    *self = match size {
                        Some(0) => Chunk::Trailer { line: 0 },
                        Some(n) => Chunk::Data(n),
                        // Not a chunk size: this side is not followed any more.
                        None => Chunk::Lost,
                    };
                }
                Chunk::Data(left) => {
                    let n = (*left).min(rest.len() as u64) as usize;
                    keep(body, &rest[..n], limit);
                    *left -= n as u64;
                    used += n;
                    if *left == 0 {
                        *self = Chunk::DataEnd;
                    }
                }
                Chunk::DataEnd => match rest.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        used += i + 1;
                        *self = Chunk::Size { line: Vec::new() };
                    }
                    None => return (data.len(), false),
                },
                Chunk::Lost => return (data.len(), false),
                Chunk::Trailer { line } => {
                    let b = rest[0];
                    used += 1;
                    match b {
                        b'\n' if *line == 0 => return (used, true),
                        b'\n' => *line = 0,
                        b'\r' => {}
                        _ => *line += 1,
                    }
                }
            }
        }
        (used, false)
    }
}

/// Adds `data` to `body`: all of it to the size, up to `limit` to what is kept.
fn keep(body: &mut Capture, data: &[u8], limit: usize) {
    body.size += data.len() as u64;
    if body.holed {
        return;
    }
    let room = limit.saturating_sub(body.captured.len());
    if room < data.len() {
        body.truncated = true;
    }
    body.captured
        .extend_from_slice(&data[..room.min(data.len())]);
}
