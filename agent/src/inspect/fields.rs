//! The framing fields of an HTTP/1.1 head (`Content-Length`, `Transfer-Encoding`,
//! `Upgrade`) and the small parsers the capture needs to follow a body.

/// The size on a chunk-size line (`1a;ext=1\r`).
pub(super) fn chunk_size(line: &[u8]) -> Option<u64> {
    let hex = line.split(|&b| b == b';').next()?;
    let hex = std::str::from_utf8(hex).ok()?.trim();
    u64::from_str_radix(hex, 16).ok()
}

/// The number written in `digits` (ASCII decimal, at most 19 digits).
pub(super) fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in digits {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n * 10 + u64::from(d);
    }
    Some(n)
}

/// The blank line that ends a head, its searcher built once.
pub(super) fn end_of_head() -> &'static memchr::memmem::Finder<'static> {
    static FINDER: std::sync::OnceLock<memchr::memmem::Finder<'static>> =
        std::sync::OnceLock::new();
    FINDER.get_or_init(|| memchr::memmem::Finder::new(b"\r\n\r\n"))
}

/// What framing needs of a head's fields, found by one pass over its lines (the
/// heads come from the Edge and the origin; the capture only needs their framing).
pub(super) struct Fields {
    /// `Content-Length`, if any; an error when it is not one number.
    pub(super) content_length: Result<Option<u64>, ()>,
    /// A `Transfer-Encoding` field is present.
    pub(super) transfer_encoding: bool,
    /// Its last coding is `chunked`.
    pub(super) chunked: bool,
    /// An `Upgrade` field is present.
    pub(super) upgrade: bool,
}

impl Default for Fields {
    fn default() -> Self {
        Fields::new()
    }
}

impl Fields {
    pub(super) fn new() -> Fields {
        Fields {
            content_length: Ok(None),
            transfer_encoding: false,
            chunked: false,
            upgrade: false,
        }
    }

    /// The fields of a whole head (its first line is skipped).
    pub(super) fn scan(head: &[u8]) -> Fields {
        let mut fields = Fields::new();
        let mut lines = head.split(|&b| b == b'\n').skip(1);
        for line in &mut lines {
            fields.note(line.strip_suffix(b"\r").unwrap_or(line));
        }
        fields
    }

    /// Finds where the head at the start of `bytes` ends (the length through its
    /// blank line) and notes its framing fields on the way; `None` when it does
    /// not end in `bytes`. One search per line, and only lines that can be a
    /// framing field are looked at.
    pub(super) fn scan_head(&mut self, bytes: &[u8]) -> Option<usize> {
        // The first line is the request or status line.
        let mut at = memchr::memchr(b'\n', bytes)? + 1;
        loop {
            let rest = &bytes[at..];
            // The same end as a head that comes in pieces: CRLF CRLF.
            match rest {
                [b'\r', b'\n', ..] => return Some(at + 2),
                [] => return None,
                _ => {}
            }
            let end = memchr::memchr(b'\n', rest)?;
            // `Content-Length`, `Transfer-Encoding` and `Upgrade`, in any case.
            if matches!(rest[0] | 0x20, b'c' | b't' | b'u') {
                let line = &rest[..end];
                self.note(line.strip_suffix(b"\r").unwrap_or(line));
            }
            at += end + 1;
        }
    }

    /// Notes one field line (without its line end).
    pub(super) fn note(&mut self, line: &[u8]) {
        // Only names of 7, 14 or 17 bytes matter, and a name ends at its colon:
        // three looks tell whether this line can be one of them.
        let colon_at = |at: usize| line.len() > at && line[at] == b':';
        let colon = if colon_at(7) {
            7
        } else if colon_at(14) {
            14
        } else if colon_at(17) {
            17
        } else {
            return;
        };
        let name = &line[..colon];
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = decimal(value);
            self.content_length = match (n, self.content_length) {
                (Some(n), Ok(None)) => Ok(Some(n)),
                (Some(n), Ok(Some(m))) if n == m => Ok(Some(n)),
                _ => Err(()),
            };
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.transfer_encoding = true;
            let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
            self.chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            self.upgrade = true;
        }
    }
}
