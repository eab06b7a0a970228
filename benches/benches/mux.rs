//! Criterion benches of the mux: frame codec, bulk transfer over an in-memory pipe
//! (one stream and 64 streams), and stream open/close rate.

#![allow(missing_docs)]

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use netbore_mux::frame::{Flags, Frame, FrameDecoder, StreamId};
use netbore_mux::{Config, Mux, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FRAME: usize = 64 * 1024;

fn codec(c: &mut Criterion) {
    let payload = Bytes::from(vec![7u8; FRAME]);
    let mut wire = BytesMut::new();
    for i in 0..64 {
        Frame::Data {
            stream: StreamId(i * 2 + 1),
            flags: Flags::empty(),
            payload: payload.clone(),
        }
        .encode(&mut wire);
    }
    let wire = wire.freeze();
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("decode_64x64KiB", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&wire[..]);
            let mut dec = FrameDecoder::new(1 << 20);
            let mut n = 0;
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                if let Frame::Data { payload, .. } = f {
                    n += payload.len();
                }
            }
            n
        })
    });
    g.throughput(Throughput::Elements(64));
    g.bench_function("encode_headers_64", |b| {
        let mut out = BytesMut::with_capacity(64 * 12);
        b.iter(|| {
            out.clear();
            for i in 0..64u32 {
                Frame::WindowUpdate {
                    stream: StreamId(i),
                    flags: Flags::empty(),
                    increment: 1,
                }
                .header()
                .encode(&mut out);
            }
            out.len()
        })
    });
    g.finish();
}

/// Moves `total` bytes over `streams` parallel streams through a session pair joined
/// by an in-memory pipe.
async fn bulk(streams: usize, total: usize) {
    let (a, b) = tokio::io::duplex(1024 * 1024);
    let client = Mux::spawn(a, Role::Client, Config::default());
    let server = Mux::spawn(b, Role::Server, Config::default());
    let per = total / streams;
    let reader = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..streams {
            let mut s = server.accept().await.unwrap();
            tasks.push(tokio::spawn(async move {
                let mut n = 0;
                while let Some(chunk) = s.read_chunk().await.unwrap() {
                    n += chunk.len();
                }
                n
            }));
        }
        let mut n = 0;
        for t in tasks {
            n += t.await.unwrap();
        }
        n
    });
    let chunk = Bytes::from(vec![1u8; FRAME]);
    let mut writers = Vec::new();
    for _ in 0..streams {
        let mut s = client.open().await.unwrap();
        let chunk = chunk.clone();
        writers.push(tokio::spawn(async move {
            for _ in 0..per / FRAME {
                s.write_all_bytes(chunk.clone()).await.unwrap();
            }
            s.shutdown().await.unwrap();
            s
        }));
    }
    let mut keep = Vec::new();
    for w in writers {
        keep.push(w.await.unwrap());
    }
    assert_eq!(reader.await.unwrap(), per / FRAME * FRAME * streams);
}

fn session(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let total = 64 * 1024 * 1024;
    let mut g = c.benchmark_group("session");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(total as u64));
    g.bench_function("bulk_1_stream_64MiB", |b| {
        b.to_async(&rt).iter(|| bulk(1, total))
    });
    g.bench_function("bulk_64_streams_64MiB", |b| {
        b.to_async(&rt).iter(|| bulk(64, total))
    });
    g.finish();

    let mut g = c.benchmark_group("streams");
    g.throughput(Throughput::Elements(1000));
    g.sample_size(10);
    g.bench_function("open_write_close_1000", |b| {
        b.to_async(&rt).iter(|| async {
            let (a, b) = tokio::io::duplex(1024 * 1024);
            let client = Mux::spawn(a, Role::Client, Config::default());
            let server = Mux::spawn(b, Role::Server, Config::default());
            let acceptor = tokio::spawn(async move {
                for _ in 0..1000 {
                    let mut s = server.accept().await.unwrap();
                    let mut buf = [0u8; 1];
                    s.read_exact(&mut buf).await.unwrap();
                    s.write_all(&buf).await.unwrap();
                    s.shutdown().await.unwrap();
                }
            });
            for _ in 0..1000 {
                let mut s = client.open().await.unwrap();
                s.write_all(b"x").await.unwrap();
                s.shutdown().await.unwrap();
                let mut buf = [0u8; 1];
                s.read_exact(&mut buf).await.unwrap();
            }
            acceptor.await.unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, codec, session);
criterion_main!(benches);
