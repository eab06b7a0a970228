//! The agent's live console: on a terminal, `netbore http|tcp|tls|start` show one
//! screen, redrawn in place, with the session's status, the tunnels, connection counts
//! and, when the request inspector is on, the latest requests and connections. Off a
//! terminal, with `--json`, or with `TERM=dumb`, the agent prints its plain lines as
//! before and none of this runs.
//!
//! Three parts: [`state`] turns agent events into what the screen says, [`render`]
//! draws a snapshot into lines (pure), and this file owns the terminal: the alternate
//! screen, a redraw task (on events, at most every [`MIN_INTERVAL`]), and a writer
//! thread, so a terminal that stops reading (Ctrl-S) never blocks the runtime that
//! forwards traffic.

mod render;
mod state;

use std::io::{IsTerminal, Write};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use netbore_agent::inspect::{Feed, Inspector};
use netbore_agent::{AgentConfig, AgentEvent};
use tokio::sync::{Notify, broadcast};

use self::render::{Counts, MAX_LISTED, Size, View};
use self::state::State;
use crate::output::Printer;

/// Least time between two redraws (at most four a second).
const MIN_INTERVAL: Duration = Duration::from_millis(250);
/// Longest time between two redraws: the RTT, the counts and a countdown move without
/// an event, and a stray line another writer left on the screen goes.
const TICK: Duration = Duration::from_secs(1);
/// The size assumed when the terminal does not say.
const FALLBACK_SIZE: Size = Size { cols: 80, rows: 24 };

/// Switches to the alternate screen, hides the cursor and clears.
const ENTER: &str = "\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J";
/// Leaves the alternate screen (the shell's screen comes back as it was) and shows the
/// cursor again.
const LEAVE: &str = "\x1b[?1049l\x1b[?25h";

/// Whether the agent should show the console rather than print lines: stdout is a
/// terminal that understands escape sequences, and `--json` is off.
pub(crate) fn wanted(printer: Printer) -> bool {
    !printer.json && std::io::stdout().is_terminal() && terminal_understands_escapes()
}

/// `TERM` names a terminal other than `dumb`; on Windows, where `TERM` is seldom set,
/// Windows Terminal (`WT_SESSION`) counts too (the old console host shows escape
/// sequences as text unless a program turns them on, which takes unsafe code).
fn terminal_understands_escapes() -> bool {
    match std::env::var_os("TERM") {
        Some(term) => !term.is_empty() && term != "dumb",
        None => cfg!(windows) && std::env::var_os("WT_SESSION").is_some(),
    }
}

/// The live console, drawing until it is dropped; dropping it gives the terminal back
/// as it was.
#[derive(Debug)]
pub(crate) struct Console {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Rung by each agent event.
    wake: Notify,
    screen: Arc<Screen>,
}

/// What the screen shows that never changes.
#[derive(Debug)]
struct Fixed {
    version: &'static str,
    edge: String,
}

impl Console {
    /// Starts the console when [`wanted`]; `None` (print lines instead) when not, or
    /// when the terminal cannot be written. `inspector` is the request inspector, when
    /// it is on. Call from within the runtime.
    pub(crate) fn start_if_wanted(
        printer: Printer,
        config: &AgentConfig,
        inspector: Option<Inspector>,
    ) -> Option<Console> {
        if !wanted(printer) {
            return None;
        }
        let screen = Arc::new(Screen::enter().ok()?);
        let (frames, to_write) = sync_channel::<String>(1);
        let writer = screen.clone();
        let spawned = std::thread::Builder::new()
            .name("netbore-console".into())
            .spawn(move || {
                for frame in to_write {
                    writer.draw(&frame);
                }
            });
        if spawned.is_err() {
            screen.restore();
            return None;
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(&config.tunnels)),
            wake: Notify::new(),
            screen,
        });
        let fixed = Fixed {
            version: env!("CARGO_PKG_VERSION"),
            edge: config.server.to_string(),
        };
        let task = tokio::spawn(redraw(shared.clone(), fixed, inspector, frames));
        Some(Console { shared, task })
    }

    /// Takes in one agent event (it shows at the next redraw, within
    /// [`MIN_INTERVAL`]).
    pub(crate) fn handle_event(&self, event: AgentEvent) {
        self.shared.state().handle_event(&event, Instant::now());
        self.shared.wake.notify_one();
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.task.abort();
        self.shared.screen.restore();
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a state still worth showing.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One screen of what is known now, for a terminal of the size it has now.
    fn frame(&self, fixed: &Fixed, inspector: Option<&Inspector>) -> String {
        let size = terminal_size();
        let state = self.state().clone();
        let metrics = netbore_metrics::agent();
        let listed = size.rows.min(MAX_LISTED);
        let view = View {
            state: &state,
            version: fixed.version,
            edge: &fixed.edge,
            rtt: metrics.rtt(),
            connections: Counts {
                total: metrics.origin_connect.count() + metrics.origin_failures.get(),
                open: u64::try_from(metrics.streams_open.get()).unwrap_or(0),
            },
            inspector_url: inspector.and_then(Inspector::url),
            requests: inspector.map(Inspector::stats),
            recent: match inspector {
                Some(i) if state.has_http() => i.recent(listed),
                _ => Vec::new(),
            },
            recent_connections: match inspector {
                Some(i) if state.has_tcp() => i.connections(listed),
                _ => Vec::new(),
            },
            now: Instant::now(),
            wall: SystemTime::now(),
        };
        render::frame(&render::render(&view, size))
    }
}

/// Redraws on each agent event, inspector change and resize, at most every
/// [`MIN_INTERVAL`], and at least every [`TICK`]. Frames go to the writer thread; one
/// it has not taken yet is dropped, and the next round draws what is newest.
async fn redraw(
    shared: Arc<Shared>,
    fixed: Fixed,
    inspector: Option<Inspector>,
    frames: SyncSender<String>,
) {
    let mut changes = inspector.as_ref().map(Inspector::subscribe);
    let mut resized = Resized::new();
    loop {
        let drawn = tokio::time::Instant::now();
        // Full: the writer is still busy with the last one (a slow or stopped terminal).
        let _ = frames.try_send(shared.frame(&fixed, inspector.as_ref()));
        tokio::select! {
            () = shared.wake.notified() => {}
            () = changed(&mut changes) => {}
            () = resized.next() => {}
            () = tokio::time::sleep(TICK) => {}
        }
        tokio::time::sleep_until(drawn + MIN_INTERVAL).await;
        // What came meanwhile is in the next frame already.
        if let Some(rx) = &mut changes {
            while rx.try_recv().is_ok() {}
        }
    }
}

/// Completes when the inspector's history changed (or changed too much to tell);
/// never when there is no inspector or it has gone.
async fn changed(changes: &mut Option<Feed>) {
    let closed = match changes {
        Some(rx) => matches!(rx.recv().await, Err(broadcast::error::RecvError::Closed)),
        None => false,
    };
    if closed {
        *changes = None;
    }
    if changes.is_none() {
        std::future::pending::<()>().await;
    }
}

/// The terminal's size, as it is now.
fn terminal_size() -> Size {
    match terminal_size::terminal_size_of(std::io::stdout()) {
        Some((w, h)) => Size {
            cols: usize::from(w.0),
            rows: usize::from(h.0),
        },
        None => FALLBACK_SIZE,
    }
}

/// Hears the terminal being resized (SIGWINCH). Windows has no such signal: there the
/// size is read again at each redraw, at least every [`TICK`].
struct Resized {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Resized {
    fn new() -> Self {
        Resized {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
                .ok(),
        }
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal
            && signal.recv().await.is_some()
        {
            return;
        }
        std::future::pending::<()>().await;
    }
}

/// The terminal while the console holds it: in the alternate screen, cursor hidden,
/// until [`Screen::restore`], after which nothing more is drawn.
#[derive(Debug)]
struct Screen {
    /// Whether the console still holds the terminal; held while writing, so a frame
    /// and the restore never interleave.
    active: Mutex<bool>,
}

impl Screen {
    fn enter() -> std::io::Result<Screen> {
        let mut out = std::io::stdout().lock();
        out.write_all(ENTER.as_bytes())?;
        out.flush()?;
        Ok(Screen {
            active: Mutex::new(true),
        })
    }

    fn active(&self) -> MutexGuard<'_, bool> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn draw(&self, frame: &str) {
        let active = self.active();
        if *active {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(frame.as_bytes());
            let _ = out.flush();
        }
    }

    /// Leaves the alternate screen and shows the cursor; once only.
    fn restore(&self) {
        let mut active = self.active();
        if std::mem::replace(&mut *active, false) {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(LEAVE.as_bytes());
            let _ = out.flush();
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.restore();
    }
}
