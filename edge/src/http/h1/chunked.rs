//! The chunked transfer coding (RFC 9112 §7.1), decoded as it arrives in pieces.

use bytes::{Buf, Bytes};

use super::H1Error;

/// Most bytes of chunk extensions and trailers one chunked body may carry (they are
/// read and dropped).
pub const MAX_CHUNK_META: usize = 16 * 1024;

/// What one step of chunked decoding found.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The input is used up; more is needed.
    NeedMore,
    /// The body ended (after its trailers, which are dropped).
    End,
}

/// Decodes the chunked transfer coding (RFC 9112 §7.1) from input that arrives in
/// pieces, handing data on without copying. Strict: sizes in hex, lines ending in CRLF.
#[derive(Debug, Default)]
pub struct ChunkDecoder {
    state: ChunkState,
    /// Bytes of extensions and trailers seen so far.
    meta: usize,
}

#[derive(Debug, Default, Clone, Copy)]
enum ChunkState {
    #[default]
    SizeStart,
    Size(u64),
    SizeSpace(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf(bool),
    End,
}

impl ChunkDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        ChunkDecoder::default()
    }

    /// Consumes from `input` up to the next piece of data, the end of the body, or the
    /// end of `input`.
    pub fn decode(&mut self, input: &mut Bytes) -> Result<Decoded, H1Error> {
        use ChunkState::*;
        loop {
            if let Data(remaining) = self.state {
                if input.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = remaining.min(input.len() as u64) as usize;
                let data = input.split_to(n);
                self.state = if remaining == n as u64 {
                    DataCr
                } else {
                    Data(remaining - n as u64)
                };
                return Ok(Decoded::Data(data));
            }
            if let End = self.state {
                return Ok(Decoded::End);
            }
            let Some(&b) = input.first() else {
                return Ok(Decoded::NeedMore);
            };
            input.advance(1);
            self.state = match (self.state, b) {
                (SizeStart, _) => Size(u64::from(hex(b).ok_or(bad("chunk size"))?)),
                (Size(n), _) if hex(b).is_some() => {
                    if n >> 60 != 0 {
                        return Err(bad("chunk size too large"));
                    }
                    Size(n << 4 | u64::from(hex(b).unwrap_or(0)))
                }
                (Size(n) | SizeSpace(n), b' ' | b'\t') => {
                    self.meta_byte()?;
                    SizeSpace(n)
                }
                (Size(n) | SizeSpace(n), b';') => Extension(n),
                (Size(n) | SizeSpace(n) | Extension(n), b'\r') => SizeLf(n),
                (Extension(_), b'\n') => return Err(bad("bare line feed")),
                (Extension(n), _) => {
                    self.meta_byte()?;
                    Extension(n)
                }
                (SizeLf(0), b'\n') => TrailerStart,
                (SizeLf(n), b'\n') => Data(n),
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => SizeStart,
                (TrailerStart, b'\r') => TrailerLf(true),
                (Trailer, b'\r') => TrailerLf(false),
                (TrailerStart | Trailer, b'\n') => return Err(bad("bare line feed")),
                (TrailerStart | Trailer, _) => {
                    self.meta_byte()?;
                    Trailer
                }
                (TrailerLf(true), b'\n') => End,
                (TrailerLf(false), b'\n') => TrailerStart,
                _ => return Err(bad("unexpected byte")),
            };
        }
    }

    fn meta_byte(&mut self) -> Result<(), H1Error> {
        self.meta += 1;
        if self.meta > MAX_CHUNK_META {
            return Err(bad("too many extension or trailer bytes"));
        }
        Ok(())
    }
}

fn bad(what: &'static str) -> H1Error {
    H1Error::BadChunk(what)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(input: &[u8], piece: usize) -> Result<(Vec<u8>, usize), H1Error> {
        let mut decoder = ChunkDecoder::new();
        let mut out = Vec::new();
        for (i, part) in input.chunks(piece).enumerate() {
            let mut part = Bytes::copy_from_slice(part);
            loop {
                match decoder.decode(&mut part)? {
                    Decoded::Data(d) => out.extend_from_slice(&d),
                    Decoded::NeedMore => break,
                    Decoded::End => {
                        // What is left of this piece, and every later piece.
                        let later = input.len().saturating_sub((i + 1) * piece);
                        return Ok((out, part.len() + later));
                    }
                }
            }
        }
        Err(H1Error::Incomplete)
    }

    #[test]
    fn chunked_bodies_decode_the_same_in_any_pieces() {
        let body = b"5;name=value\r\nhello\r\n6\r\n world\r\nA \t;x\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        for piece in 1..=body.len() {
            let (out, left) = decode_in_pieces(body, piece).unwrap();
            assert_eq!(out, b"hello world0123456789", "pieces of {piece}");
            assert_eq!(
                left, 4,
                "pieces of {piece}: bytes after the body stay unread"
            );
        }
    }

    #[test]
    fn malformed_chunked_bodies_are_typed_errors() {
        for input in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5 5\r\nhello\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"0\r\nbad\ntrailer\r\n\r\n",
        ] {
            assert!(
                matches!(decode_in_pieces(input, 3), Err(H1Error::BadChunk(_))),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let long = [b"1;".as_slice(), &vec![b'x'; MAX_CHUNK_META + 1], b"\r\n"].concat();
        assert!(matches!(
            decode_in_pieces(&long, 1000),
            Err(H1Error::BadChunk(_))
        ));
    }
}
