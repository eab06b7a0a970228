//! Sizes of the futures every open connection's task is (tests only). A future is as
//! large as the largest state among its awaits, so a rare path (a link's TLS dial,
//! an HTTPS handshake) awaited inline makes every connection carry its size: 10,000
//! idle viewers once held 11.7 KiB each of futures for a dial none of them made.
//! Such paths are boxed; these bounds catch one that is not.

use std::future::Future;

/// Most bytes the future of one viewer connection or relayed stream may take.
pub(crate) const PER_CONNECTION_MAX: usize = 4096;

/// The size of the future `f` returns, for a function of five arguments.
pub(crate) fn of5<A, B, C, D, E, F: Future>(_: impl FnOnce(A, B, C, D, E) -> F) -> usize {
    size_of::<F>()
}

/// The size of the future `f` returns, for a function of six arguments.
pub(crate) fn of6<A, B, C, D, E, G, F: Future>(_: impl FnOnce(A, B, C, D, E, G) -> F) -> usize {
    size_of::<F>()
}
