//! A session's input: decoding the frames that arrive and applying each one to the
//! session and its streams.

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::{Event, Role, STALLED, Session, State};
use crate::budget::FloodKind;
use crate::config::PROTOCOL_INITIAL_WINDOW;
use crate::error::SessionError;
use crate::frame::{Flags, Frame, FrameType, StreamId};

impl Session {
    /// Decodes and handles every complete frame at the front of `buf`. A protocol
    /// violation queues a go-away, moves the session to closing and is returned. A
    /// failure is final: `buf` is cleared, and so is every later input, unread.
    pub fn handle_input(&mut self, buf: &mut BytesMut, now: Instant) -> Result<(), SessionError> {
        if self.state == State::Closed {
            buf.clear();
            return Err(SessionError::Closed);
        }
        if self.input_closed {
            buf.clear();
            return Ok(());
        }
        if self.ping_sent_at.is_some() && !buf.is_empty() {
            self.heard_at = Some(now);
        }
        loop {
            let result = match self.decoder.decode(buf) {
                Ok(Some(frame)) => self.handle_frame(frame, now),
                Ok(None) => return Ok(()),
                Err(e) => Err(SessionError::Frame(e)),
            };
            if let Err(e) = result {
                buf.clear();
                return Err(self.fail(e));
            }
        }
    }

    /// How many more bytes the decoder needs before its next frame can complete.
    pub fn input_wanted(&self, buffered: usize) -> usize {
        self.decoder.bytes_wanted(buffered)
    }

    /// Handles one decoded frame.
    pub fn handle_frame(&mut self, frame: Frame, now: Instant) -> Result<(), SessionError> {
        if let Some(kind) = FloodKind::of_empty_frame(&frame) {
            self.spend(kind, now)?;
        }
        match frame {
            Frame::Data {
                stream,
                flags,
                payload,
            } => self.handle_stream_frame(stream, flags, Some(payload), 0, now),
            Frame::WindowUpdate {
                stream,
                flags,
                increment,
            } => self.handle_stream_frame(stream, flags, None, increment, now),
            Frame::Ping { flags, opaque } => {
                if flags.contains(Flags::ACK)
                    && let Some(sent) = self.ping_sent_at
                    && opaque == self.ping_opaque
                {
                    self.rtt = Some(now.saturating_duration_since(sent));
                    self.ping_sent_at = None;
                    self.heard_at = None;
                    self.next_ping_at = self.config.keepalive_interval.map(|i| now + i);
                    return Ok(());
                }
                self.spend(FloodKind::Ping, now)?;
                if !flags.contains(Flags::ACK) && self.state == State::Open {
                    self.push_control(FrameType::Ping, Flags::ACK, StreamId::SESSION, opaque);
                }
                Ok(())
            }
            Frame::GoAway { code } => {
                // Only the first go-away means anything; repeats wake nobody.
                if self.remote_go_away.is_none() {
                    self.remote_go_away = Some(code);
                    self.events.push_back(Event::GoAway(code));
                }
                Ok(())
            }
        }
    }

    pub(super) fn handle_stream_frame(
        &mut self,
        id: StreamId,
        flags: Flags,
        payload: Option<Bytes>,
        increment: u32,
        now: Instant,
    ) -> Result<(), SessionError> {
        if flags.contains(Flags::SYN) && !self.handle_syn(id)? {
            return Ok(());
        }
        let peer_opened = id.0 % 2 == self.peer_parity();
        let carries_data = payload.as_ref().is_some_and(|p| !p.is_empty());
        let Some(s) = self.streams.get_mut(&id) else {
            // A frame for a stream already freed (e.g. in flight after our RST). Data
            // costs the peer its bandwidth; a bare frame costs only our CPU.
            if !carries_data {
                self.spend(FloodKind::Ignored, now)?;
            }
            return Ok(());
        };
        if flags.contains(Flags::RST) {
            if !s.reset {
                if peer_opened && !s.recv_any {
                    // Opened by the peer and reset before a byte of data: rapid reset.
                    let spent = self.budget.spend(FloodKind::ResetOpen, now);
                    spent.map_err(SessionError::Flood)?;
                }
                s.reset = true;
                // Data the peer finished sending (FIN seen) stays readable: its RST
                // only says it will read no more. Otherwise the stream is aborted.
                if !s.recv_fin {
                    let dropped = s.clear_recv();
                    self.buffered_total -= dropped;
                }
                self.events.push_back(Event::Readable(id));
                self.events.push_back(Event::Writable(id));
            }
            self.maybe_remove(id);
            return Ok(());
        }
        if s.reset {
            if !carries_data {
                self.spend(FloodKind::Ignored, now)?;
            }
            return Ok(());
        }
        // A bare frame that neither adds credit (the window is at its maximum or the
        // increment is zero) nor ends the stream changes nothing.
        let no_effect = !carries_data
            && (increment == 0 || s.send_credit == u32::MAX)
            && (!flags.contains(Flags::FIN) || s.recv_fin)
            && !flags.contains(Flags::SYN)
            && !flags.contains(Flags::ACK);
        // (Frames without any flag and increment were counted as empty already.)
        let s = if no_effect && !(flags.0 == 0 && increment == 0) {
            self.spend(FloodKind::Ignored, now)?;
            let Some(s) = self.streams.get_mut(&id) else {
                return Ok(());
            };
            s
        } else {
            // The common case: one look-up per frame.
            s
        };
        if let Some(payload) = payload
            && !payload.is_empty()
        {
            let len = payload.len() as u32;
            if len > s.recv_credit {
                return Err(SessionError::FlowControl {
                    stream: id,
                    len,
                    credit: s.recv_credit,
                });
            }
            s.recv_credit -= len;
            s.recv_any = true;
            if s.released {
                // Nobody will read it: tell the peer to stop sending.
                self.reset(id);
                return Ok(());
            }
            if !s.recv_fin {
                let was_empty = s.recv.is_empty();
                self.buffered_total += payload.len();
                s.push_recv(payload, now);
                self.compact_at.get_or_insert(now + STALLED);
                if was_empty {
                    self.events.push_back(Event::Readable(id));
                }
            }
        }
        if increment > 0 {
            s.send_credit = s.send_credit.saturating_add(increment);
            if s.send_blocked {
                s.send_blocked = false;
                self.events.push_back(Event::Writable(id));
            }
        }
        if flags.contains(Flags::FIN) && !s.recv_fin {
            s.recv_fin = true;
            self.events.push_back(Event::Readable(id));
            self.maybe_remove(id);
        }
        Ok(())
    }

    /// Registers a stream the peer opens. Returns false when the open was refused
    /// (answered with RST) and the frame's other contents must be ignored.
    pub(super) fn handle_syn(&mut self, id: StreamId) -> Result<bool, SessionError> {
        if id.0 % 2 != self.peer_parity() || id.0 <= self.max_inbound_id {
            return Err(SessionError::BadStreamOpen(id));
        }
        self.max_inbound_id = id.0;
        let refuse = self.state != State::Open
            || self.streams.len() >= self.config.max_streams
            || self.accept_queue.len() >= self.config.accept_backlog;
        if refuse {
            self.push_control(FrameType::WindowUpdate, Flags::RST, id, 0);
            return Ok(false);
        }
        self.insert_stream(id);
        let extra = self.config.initial_stream_window - PROTOCOL_INITIAL_WINDOW;
        self.push_control(FrameType::WindowUpdate, Flags::ACK, id, extra);
        self.accept_queue.push_back(id);
        self.events.push_back(Event::IncomingStream);
        Ok(true)
    }

    /// The parity (`id % 2`) of the stream ids the peer opens.
    pub(super) fn peer_parity(&self) -> u32 {
        match self.role {
            Role::Client => 0,
            Role::Server => 1,
        }
    }
}
