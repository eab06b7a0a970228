//! Fuzzes the hello exchange (`netbore_transport::proto::read_message`): arbitrary
//! bytes read as one length-prefixed JSON `Hello` and, independently, as one
//! `HelloReply`.
//!
//! Invariants:
//! - a length above `MAX_MESSAGE_LEN` is refused as `TooLarge` whatever follows;
//! - a short input is an I/O error (unexpected EOF), never a parse of fewer bytes;
//! - exactly the announced bytes are parsed, with the same verdict as `serde_json`;
//! - anything that parses is written back by `write_message` with a correct length
//!   prefix, within the limit, and reads back to an equal value; its JSON is stable
//!   (serializing the re-read value gives the same bytes).

#![no_main]

use std::fmt::Debug;
use std::future::Future;
use std::io::ErrorKind;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use netbore_transport::proto::{
    Hello, HelloReply, MAX_MESSAGE_LEN, MessageError, read_message, write_message,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Runs a future over in-memory I/O, which never waits.
fn poll_once<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("in-memory I/O returned Pending"),
    }
}

fn check<T>(data: &[u8])
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let result: Result<T, MessageError> = poll_once(read_message(&mut &data[..]));
    let announced = data
        .get(..4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize);
    let complete = announced.is_some_and(|len| data.len() >= 4 + len);
    match result {
        Ok(value) => {
            let len = announced.expect("a parsed message has a length prefix");
            assert!(len <= MAX_MESSAGE_LEN, "accepted a {len}-byte message");
            assert!(complete);
            let direct: T = serde_json::from_slice(&data[4..4 + len])
                .expect("read_message accepted JSON serde_json refuses");
            assert_eq!(direct, value);

            let mut out = Vec::new();
            poll_once(write_message(&mut out, &value)).expect("writing to a Vec");
            let out_len = u32::from_be_bytes(out[..4].try_into().expect("4 bytes")) as usize;
            assert_eq!(
                out_len,
                out.len() - 4,
                "write_message wrote a wrong length prefix"
            );
            assert!(
                out_len <= MAX_MESSAGE_LEN,
                "a {len}-byte message re-serializes to {out_len} bytes, above the limit"
            );
            let back: T = poll_once(read_message(&mut &out[..]))
                .unwrap_or_else(|e| panic!("re-serialized {value:?} does not read back: {e}"));
            assert_eq!(back, value, "value changed across a round trip");
            assert_eq!(
                serde_json::to_vec(&back).expect("serializes"),
                out[4..],
                "JSON not stable across a round trip"
            );
        }
        Err(MessageError::TooLarge(n)) => {
            assert_eq!(Some(n), announced);
            assert!(
                n > MAX_MESSAGE_LEN,
                "refused a {n}-byte message as too large"
            );
        }
        Err(MessageError::Io(e)) => {
            assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "{e}");
            assert!(!complete, "I/O error on a complete message: {e}");
            if let Some(len) = announced {
                assert!(
                    len <= MAX_MESSAGE_LEN,
                    "read the body of an oversized message"
                );
            }
        }
        Err(MessageError::Json(e)) => {
            let len = announced.expect("JSON error without a length prefix");
            assert!(len <= MAX_MESSAGE_LEN && complete);
            assert!(
                serde_json::from_slice::<T>(&data[4..4 + len]).is_err(),
                "read_message refused JSON serde_json accepts: {e}"
            );
        }
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    check::<Hello>(data);
    check::<HelloReply>(data);
});
