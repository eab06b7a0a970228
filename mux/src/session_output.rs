//! How a session queues frames for the connection: headers and small payloads are
//! gathered in one contiguous tail, large payloads leave from their own `Bytes`.

use bytes::Bytes;

use super::Session;
use crate::frame::{Flags, FrameType, HEADER_LEN, Header, StreamId};

impl Session {
    pub(super) fn push_control(
        &mut self,
        ty: FrameType,
        flags: Flags,
        stream: StreamId,
        length: u32,
    ) {
        let header = Header {
            ty,
            flags,
            stream,
            length,
        };
        self.reserve_tail(HEADER_LEN);
        header.encode(&mut self.tail);
        self.queued_bytes += HEADER_LEN;
    }

    pub(super) fn push_small_data(&mut self, id: StreamId, data: &[u8]) {
        let header = Header {
            ty: FrameType::Data,
            flags: Flags::empty(),
            stream: id,
            length: data.len() as u32,
        };
        self.reserve_tail(HEADER_LEN + data.len());
        header.encode(&mut self.tail);
        self.tail.extend_from_slice(data);
        self.queued_bytes += HEADER_LEN + data.len();
    }

    pub(super) fn push_large_data(&mut self, id: StreamId, data: Bytes) {
        let header = Header {
            ty: FrameType::Data,
            flags: Flags::empty(),
            stream: id,
            length: data.len() as u32,
        };
        self.reserve_tail(HEADER_LEN);
        header.encode(&mut self.tail);
        self.seal_tail();
        self.queued_bytes += HEADER_LEN + data.len();
        self.out.push_back(data);
    }

    pub(super) fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            self.out.push_back(self.tail.split().freeze());
        }
    }

    pub(super) fn reserve_tail(&mut self, n: usize) {
        if self.tail.capacity() - self.tail.len() < n {
            self.tail.reserve(n.max(16 * 1024));
        }
    }
}
