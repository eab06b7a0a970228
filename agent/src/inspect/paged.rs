//! Long JSON answers of the inspector's API (lists of requests, HAR exports)
//! written a page of records at a time, as the client reads them: what the agent
//! holds for one answer is a page's copies and text, however many records it asks
//! for. (Built whole, a list of 10,000 records took the agent from 60 to 285 MiB.)

use std::convert::Infallible;

use axum::body::Body;
use bytes::Bytes;
use serde_json::Value;

use super::json::View;
use super::store::Exchange;
use super::{Inspector, TunnelInfo};

/// Records written at a time, at most.
const PAGE: usize = 32;
/// Text after which a page ends early (records are copied one at a time, so a page
/// of large bodies holds one of them and this much text at most).
const PAGE_BYTES: usize = 256 * 1024;

/// How a record is copied and shown.
#[derive(Clone, Copy)]
pub(crate) enum Show {
    /// Whole, bodies included, by this function.
    Full(fn(View<'_>, &Exchange) -> Value),
    /// Without its bodies' bytes (their sizes stay), by this function.
    Outline(fn(View<'_>, &Exchange) -> Value),
}

/// An answer `head`, the records `seqs` in that order (those still kept when their
/// page is written), separated by commas, and `tail`.
pub(crate) struct Paged {
    inspector: Inspector,
    tunnels: Vec<TunnelInfo>,
    seqs: Vec<u64>,
    show: Show,
    head: Option<String>,
    tail: Option<&'static str>,
    /// Records written so far (the next page starts here).
    at: usize,
    /// A record has been written (the next one follows a comma).
    any: bool,
}

impl Paged {
    pub(crate) fn new(
        inspector: Inspector,
        seqs: Vec<u64>,
        show: Show,
        head: String,
        tail: &'static str,
    ) -> Self {
        let tunnels = inspector.tunnels();
        Paged {
            inspector,
            tunnels,
            seqs,
            show,
            head: Some(head),
            tail: Some(tail),
            at: 0,
            any: false,
        }
    }

    /// The answer's body, written as it is read.
    pub(crate) fn into_body(self) -> Body {
        Body::from_stream(futures_util::stream::unfold(self, |mut paged| async move {
            let chunk = paged.next_chunk()?;
            Some((Ok::<_, Infallible>(chunk), paged))
        }))
    }

    /// The next piece of the answer, or `None` once it is all written.
    fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(head) = self.head.take() {
            return Some(Bytes::from(head));
        }
        let (outline, render) = match self.show {
            Show::Full(f) => (false, f),
            Show::Outline(f) => (true, f),
        };
        let view = View {
            secrets: self.inspector.config().secrets,
            tunnels: &self.tunnels,
        };
        let mut out = Vec::new();
        let mut records = 0;
        while self.at < self.seqs.len() && records < PAGE && out.len() < PAGE_BYTES {
            let seq = self.seqs[self.at];
            self.at += 1;
            // (One gone since the list was taken is left out.)
            let Some(e) = self.inspector.copy(seq, outline) else {
                continue;
            };
            if self.any {
                out.push(b',');
            }
            self.any = true;
            records += 1;
            // Writing a `Value` into a `Vec` cannot fail.
            let _ = serde_json::to_writer(&mut out, &render(view, &e));
        }
        if !out.is_empty() {
            return Some(Bytes::from(out));
        }
        self.tail.take().map(|t| Bytes::from_static(t.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::InspectConfig;
    use crate::inspect::json;

    fn written(mut paged: Paged) -> (Value, usize) {
        let mut all = Vec::new();
        let mut chunks = 0;
        while let Some(chunk) = paged.next_chunk() {
            all.extend_from_slice(&chunk);
            chunks += 1;
        }
        (serde_json::from_slice(&all).expect("valid JSON"), chunks)
    }

    #[test]
    fn records_are_written_a_page_at_a_time_and_those_gone_are_left_out() {
        let inspector = Inspector::new(InspectConfig {
            body_limit: 1024,
            db_size: 1 << 20,
            secrets: false,
        });
        let mut tap = crate::inspect::capture::HttpTap::new(
            inspector.clone(),
            0,
            [192, 0, 2, 1].into(),
            None,
        );
        let n = PAGE * 2 + 5;
        for i in 0..n {
            use netbore_transport::pipe::Tap as _;
            tap.read_from_stream(format!("GET /r{i} HTTP/1.1\r\n\r\n").as_bytes());
            tap.read_from_socket(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        }
        let mut seqs = inspector.newest_seqs(usize::MAX);
        assert_eq!(seqs.len(), n);
        // One that was never kept is left out, commas and all.
        seqs.insert(3, u64::MAX);
        let render: fn(View<'_>, &Exchange) -> Value = |v, e| json::exchange(v, e, true);
        let (value, chunks) = written(Paged::new(
            inspector.clone(),
            seqs.clone(),
            Show::Full(render),
            "{\"requests\":[".into(),
            "]}",
        ));
        let list = value["requests"].as_array().unwrap();
        assert_eq!(list.len(), n);
        assert_eq!(list[0]["request"]["uri"], format!("/r{}", n - 1));
        assert_eq!(list[n - 1]["request"]["uri"], "/r0");
        // The head, three pages and the tail.
        assert_eq!(chunks, 5);
        // Outlines leave bodies out.
        let (value, _) = written(Paged::new(
            inspector.clone(),
            seqs,
            Show::Outline(json::summary),
            "[".into(),
            "]",
        ));
        assert_eq!(value.as_array().unwrap().len(), n);
        // An empty list is still an answer.
        inspector.clear();
        let (value, chunks) = written(Paged::new(
            inspector,
            vec![1, 2],
            Show::Full(render),
            "[".into(),
            "]",
        ));
        assert_eq!(value, serde_json::json!([]));
        assert_eq!(chunks, 2);
    }
}
