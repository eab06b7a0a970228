//! Helpers shared by Netbore's integration tests and benches, so each lives once:
//! a throwaway CA and leaf certificate ([`Pki`]), deterministic byte patterns and
//! their checksums ([`Pattern`], [`Checksum`], [`send_pattern`], [`read_all`]),
//! loopback TCP helpers ([`round_trip`], [`echo_origin`], [`read_until_closed`]), a
//! small HTTP CONNECT proxy ([`start_proxy`]), a rustls viewer
//! ([`tls_client_config`], [`tls_connect`]), a real `redis-server`
//! ([`redis::RedisServer`]) and a headless Chromium through `chromedriver`
//! ([`webdriver::Browser`]).
//!
//! Everything binds `127.0.0.1:0` and panics on unexpected failure, as a test should.
//! It is only ever a dev-dependency and is not published. It knows nothing of the
//! `netbore` binary (running it stays in `cli/tests/common`) nor of a listener's
//! settings; it uses `netbore-transport` only to turn [`Pki`] into TLS configurations.
//! (`netbore-transport` dev-depends on this crate in turn: its integration tests link
//! the same library this crate does, so the types agree.)

mod pattern;
mod pki;
mod proxy;
pub mod redis;
mod tcp;
mod tls_client;
pub mod webdriver;

pub use pattern::{Checksum, Pattern, pattern_checksum, read_all, send_pattern};
pub use pki::Pki;
pub use proxy::{ProxyMode, start_proxy};
pub use tcp::{echo_origin, origin_listener, read_until_closed, round_trip};
pub use tls_client::{tls_client_config, tls_connect};
