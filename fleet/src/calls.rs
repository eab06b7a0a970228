//! The calls the Edge makes to the fleet's Redis and waits for, from its blocking
//! threads: recording single-use token ids (a token minted by any node, which every
//! node accepts, opens its tunnels once in the whole fleet) and reserving a public
//! name or port for a tunnel before it is placed.
//!
//! One connection, used one call at a time. Each call can be tried again after its
//! answer was lost: a token-id write carries a value of its own and finds it, a
//! reservation finds its own tunnel id. After a failure to reach Redis, calls fail at
//! once for [`BACK_OFF`]: hellos and creates arriving while Redis is away do not
//! queue behind each other's timeouts.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use netbore_edge::fleet::StoreUnavailable;
use redis::{Client, Connection, RedisResult};

use crate::{keys, random_hex, worker::connect_within as connect};

/// Most [`Calls::try_run`] calls under way or waiting at once.
const MAX_WAITING: usize = 8;

/// How long calls fail at once after Redis could not be reached.
const BACK_OFF: Duration = Duration::from_secs(1);

/// How long a [`Calls::quick`] call may take (connecting, then its answer) before it
/// fails: the control API's requests wait for it.
const QUICK_TIMEOUT: Duration = Duration::from_millis(250);
/// How long [`Calls::quick`] calls fail at once after one failed.
const QUICK_BACK_OFF: Duration = Duration::from_secs(5);

#[derive(Default)]
struct State {
    conn: Option<Connection>,
    /// Until when calls fail without trying.
    down_until: Option<Instant>,
    /// Why the last try failed.
    reason: String,
}

/// The Edge's waited-for calls to the fleet's Redis.
pub(crate) struct Calls {
    client: Client,
    state: Mutex<State>,
    /// Calls of [`Calls::try_run`] under way or waiting.
    waiting: AtomicUsize,
    /// How long connecting, and each read and write, may take.
    timeout: Duration,
    /// How long calls fail at once after Redis could not be reached.
    back_off: Duration,
    /// Whether a call that failed on a kept connection is tried again on a new one.
    retry: bool,
}

impl std::fmt::Debug for Calls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calls").finish_non_exhaustive()
    }
}

impl Calls {
    pub(crate) fn new(client: Client) -> Self {
        Calls {
            client,
            state: Mutex::default(),
            waiting: AtomicUsize::new(0),
            timeout: crate::IO_TIMEOUT,
            back_off: BACK_OFF,
            retry: true,
        }
    }

    /// Calls that requests wait for and that may not run twice: each fails after
    /// [`QUICK_TIMEOUT`], is never tried again, and after a failure the next ones
    /// fail at once for [`QUICK_BACK_OFF`].
    pub(crate) fn quick(client: Client) -> Self {
        Calls {
            timeout: QUICK_TIMEOUT,
            back_off: QUICK_BACK_OFF,
            retry: false,
            ..Self::new(client)
        }
    }

    /// Records `ids` (`jti`, Unix second to forget it after), all or none: `true`
    /// when none was recorded before.
    pub(crate) fn record(&self, ids: &[(String, u64)]) -> Result<bool, StoreUnavailable> {
        let mine = random_hex(8);
        let mut script = keys::USE_TOKENS.prepare_invoke();
        script.arg(&mine);
        let now = netbore_control::tokens::unix_now();
        for (jti, forget_after) in ids {
            script
                .key(keys::token_id(jti))
                .arg(forget_after.saturating_sub(now).max(1));
        }
        self.run(|conn| script.invoke::<u8>(conn)).map(|v| v == 1)
    }

    /// Reserves the public name or port `what` (`name:NAME`, `port:PORT`) for
    /// `tunnel_id` for `hold`: `false` when it is reserved for another tunnel.
    pub(crate) fn reserve(
        &self,
        what: &str,
        tunnel_id: &str,
        hold: Duration,
    ) -> Result<bool, StoreUnavailable> {
        let mut script = keys::RESERVE.prepare_invoke();
        script
            .key(keys::reservation(what))
            .arg(tunnel_id)
            .arg(hold.as_millis() as u64);
        self.run(|conn| script.invoke::<u8>(conn)).map(|v| v == 1)
    }

    /// Takes one request of `client` from its fleet-wide bucket of `rate` a second
    /// and `burst`: `Some(wait)` when it is empty. Never queues behind other calls
    /// ([`Self::try_run`]): a stranger's requests cause it. Made on [`Self::quick`]
    /// calls: taken twice would count the request twice.
    pub(crate) fn take_rate(
        &self,
        client: &str,
        rate: f64,
        burst: f64,
    ) -> Result<Option<Duration>, StoreUnavailable> {
        let interval = (1e6 / rate.max(1e-3)).ceil() as u64;
        let span = (interval as f64 * burst.max(1.0)).ceil() as u64;
        let mut script = keys::TAKE_RATE.prepare_invoke();
        script.key(keys::rate(client)).arg(interval).arg(span);
        let wait: u64 = self.try_run(|conn| script.invoke(conn))?;
        Ok((wait > 0).then(|| Duration::from_micros(wait)))
    }

    /// Forgets `ids`.
    pub(crate) fn forget(&self, ids: &[String]) {
        let keys: Vec<String> = ids.iter().map(|jti| keys::token_id(jti)).collect();
        if let Err(e) = self.run(|conn| redis::cmd("DEL").arg(&keys).query::<u64>(conn)) {
            tracing::debug!(error = %e, "could not give back unused token ids; they expire with their tokens");
        }
    }

    /// Runs `call` like [`Self::run`], unless [`MAX_WAITING`] calls already wait
    /// their turn: then fails at once (`busy`) instead of queueing. For lookups a
    /// stranger can cause (an ACME challenge fetched at this node), so a flood of them
    /// costs one connection's worth of Redis time and a bounded queue, while a
    /// directory's few concurrent validation requests all get their answer.
    pub(crate) fn try_run<T>(
        &self,
        call: impl Fn(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, StoreUnavailable> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(StoreUnavailable("busy with other lookups".into()));
        }
        let result = self.run(call);
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        result
    }

    /// Runs `call`, on a fresh connection a second time when the first failed on a
    /// connection kept from earlier (Redis may have restarted since).
    pub(crate) fn run<T>(
        &self,
        call: impl Fn(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, StoreUnavailable> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.run_with(&mut state, call)
    }

    fn run_with<T>(
        &self,
        state: &mut State,
        call: impl Fn(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, StoreUnavailable> {
        if state.down_until.is_some_and(|t| Instant::now() < t) {
            return Err(StoreUnavailable(state.reason.clone()));
        }
        for _ in 0..2 {
            let kept = state.conn.is_some() && self.retry;
            let conn = match state.conn.take() {
                Some(conn) => conn,
                None => match connect(&self.client, self.timeout) {
                    Ok(conn) => conn,
                    Err(e) => return Err(down(state, e, self.back_off)),
                },
            };
            let mut conn = conn;
            match call(&mut conn) {
                Ok(v) => {
                    state.conn = Some(conn);
                    state.down_until = None;
                    return Ok(v);
                }
                // Redis's own error reply: the connection is fine, the call is not.
                Err(e)
                    if matches!(
                        e.kind(),
                        redis::ErrorKind::Server(_) | redis::ErrorKind::Extension
                    ) =>
                {
                    state.conn = Some(conn);
                    return Err(StoreUnavailable(e.to_string()));
                }
                Err(e) if !kept => return Err(down(state, e, self.back_off)),
                Err(_) => {}
            }
        }
        Err(StoreUnavailable("the connection failed twice".into()))
    }
}

fn down(state: &mut State, e: redis::RedisError, back_off: Duration) -> StoreUnavailable {
    state.reason = e.to_string();
    state.down_until = Some(Instant::now() + back_off);
    StoreUnavailable(state.reason.clone())
}
