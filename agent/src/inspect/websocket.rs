//! WebSocket frames after an upgrade, as the inspector reads them from the bytes
//! the agent pipes: each direction's messages (text, binary and control frames),
//! payloads unmasked and kept up to the body limit.

use std::time::SystemTime;

use super::store::WsMessage;

/// One direction of a WebSocket: the frame being read and the message being built.
#[derive(Default)]
pub(crate) struct Frames {
    header: [u8; 14],
    have: usize,
    remaining: u64,
    mask: Option<[u8; 4]>,
    masked_at: usize,
    /// The data message being built (across continuation frames).
    message: Option<WsMessage>,
    /// A control frame being read.
    control: Option<WsMessage>,
    fin: bool,
    /// When the bytes being read passed the agent.
    pub(crate) time: Option<SystemTime>,
}

impl Frames {
    /// Reads frames from `data`, pushing each finished message to `out`.
    pub(crate) fn feed(
        &mut self,
        mut data: &[u8],
        from_viewer: bool,
        limit: usize,
        out: &mut Vec<WsMessage>,
    ) {
        while !data.is_empty() {
            if self.remaining == 0 && self.have < self.header_len() {
                let need = self.header_len() - self.have;
                let n = need.min(data.len());
                self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
                self.have += n;
                data = &data[n..];
                if self.have == self.header_len() {
                    self.frame_started(from_viewer, out);
                }
                continue;
            }
            let n = self.remaining.min(data.len() as u64) as usize;
            let payload = &data[..n];
            let mask = self.mask;
            let offset = self.masked_at;
            if let Some(m) = self.current() {
                m.size += n as u64;
                let room = limit.saturating_sub(m.captured.len()).min(n);
                let start = m.captured.len();
                m.captured.extend_from_slice(&payload[..room]);
                if let Some(mask) = mask {
                    for (i, b) in m.captured[start..].iter_mut().enumerate() {
                        *b ^= mask[(offset + i) % 4];
                    }
                }
            }
            self.masked_at += n;
            self.remaining -= n as u64;
            data = &data[n..];
            if self.remaining == 0 {
                self.frame_ended(out);
            }
        }
    }

    /// The length of the frame header being read, as far as its first bytes tell.
    fn header_len(&self) -> usize {
        if self.have < 2 {
            return 2;
        }
        let extended = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + extended + if self.header[1] & 0x80 != 0 { 4 } else { 0 }
    }

    fn frame_started(&mut self, from_viewer: bool, out: &mut Vec<WsMessage>) {
        let h = self.header;
        self.fin = h[0] & 0x80 != 0;
        let opcode = h[0] & 0x0f;
        let (len, at) = match h[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => (
                u64::from_be_bytes(h[2..10].try_into().unwrap_or([0; 8])),
                10,
            ),
            n => (u64::from(n), 2),
        };
        self.mask = (h[1] & 0x80 != 0).then(|| [h[at], h[at + 1], h[at + 2], h[at + 3]]);
        self.masked_at = 0;
        self.remaining = len;
        self.have = 0;
        let kind = match opcode {
            0 => None,
            1 => Some("text"),
            2 => Some("binary"),
            8 => Some("close"),
            9 => Some("ping"),
            10 => Some("pong"),
            _ => Some("binary"),
        };
        let new = |kind| WsMessage {
            from_viewer,
            time: self.time.unwrap_or_else(SystemTime::now),
            kind,
            size: 0,
            captured: Vec::new(),
        };
        match kind {
            Some(k) if opcode >= 8 => self.control = Some(new(k)),
            Some(k) => self.message = Some(new(k)),
            None if self.message.is_none() => self.message = Some(new("binary")),
            None => {}
        }
        if len == 0 {
            self.frame_ended(out);
        }
    }

    fn current(&mut self) -> Option<&mut WsMessage> {
        if self.control.is_some() {
            self.control.as_mut()
        } else {
            self.message.as_mut()
        }
    }

    fn frame_ended(&mut self, out: &mut Vec<WsMessage>) {
        if let Some(c) = self.control.take() {
            out.push(c);
        } else if self.fin
            && let Some(m) = self.message.take()
        {
            out.push(m);
        }
    }
}
