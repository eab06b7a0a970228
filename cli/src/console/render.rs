//! Drawing: a [`View`] (a snapshot of everything the console shows) becomes the lines
//! of one screen, each cut to the terminal's width, as many as its height holds. Pure
//! functions; the terminal is written elsewhere.

use std::fmt::Write;
use std::time::{Duration, Instant, SystemTime};

use netbore_agent::inspect::{Connection, RequestSummary, Stats};

use super::state::{State, Status, until};

/// The terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Size {
    /// Columns.
    pub(crate) cols: usize,
    /// Rows.
    pub(crate) rows: usize,
}

/// Connections the agent opened to its origins, by the agent's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Since start.
    pub(crate) total: u64,
    /// Open now.
    pub(crate) open: u64,
}

/// Everything one screen shows, taken at one moment.
#[derive(Debug)]
pub(crate) struct View<'a> {
    /// The session and its tunnels.
    pub(crate) state: &'a State,
    /// The agent's version.
    pub(crate) version: &'a str,
    /// The control plane the agent dials.
    pub(crate) edge: &'a str,
    /// The latest round-trip time to the Edge.
    pub(crate) rtt: Option<Duration>,
    /// Connections, from the metrics.
    pub(crate) connections: Counts,
    /// The inspector's address, when it is served.
    pub(crate) inspector_url: Option<String>,
    /// Request counts and latency, when there is an inspector (which also turns on
    /// the lists of requests and connections).
    pub(crate) requests: Option<Stats>,
    /// The newest requests, newest first (empty without an inspector).
    pub(crate) recent: Vec<RequestSummary>,
    /// The newest TCP connections, newest first (empty without an inspector).
    pub(crate) recent_connections: Vec<Connection>,
    /// Now, for the reconnect countdown.
    pub(crate) now: Instant,
    /// Now on the wall clock, for the age of open connections.
    pub(crate) wall: SystemTime,
}

/// Width of the label column ("Session Status", "Forwarding", ...) on a wide screen.
const LABEL: usize = 30;
/// Width of the label column below [`WIDE`] columns.
const LABEL_NARROW: usize = 16;
/// Columns from which the wide label column is used.
const WIDE: usize = 60;
/// The most rows of requests or connections worth asking the inspector for.
pub(crate) const MAX_LISTED: usize = 100;

/// The lines of one screen: at most `size.rows` of them, none wider than `size.cols`
/// characters, none holding a control character.
pub(crate) fn render(view: &View<'_>, size: Size) -> Vec<String> {
    let label = if size.cols >= WIDE {
        LABEL
    } else {
        LABEL_NARROW
    };
    let mut lines = Vec::new();
    let title = "netbore";
    let quit = "(Ctrl+C to quit)";
    let gap = size.cols.saturating_sub(title.len() + quit.len()).max(1);
    lines.push(format!("{title}{:gap$}{quit}", ""));
    lines.push(String::new());

    let row = |name: &str, value: &str| format!("{name:<label$}{value}");
    lines.push(row("Session Status", &status_text(view)));
    lines.push(row("Version", view.version));
    lines.push(row("Edge", view.edge));
    lines.push(row("Transport", view.state.transport.unwrap_or("-")));
    let rtt = view.rtt.map_or_else(|| "-".to_string(), duration);
    lines.push(row("Latency", &rtt));
    if let Some(url) = &view.inspector_url {
        lines.push(row("Web Interface", url));
    }
    for (i, t) in view.state.tunnels.iter().enumerate() {
        let name = if i == 0 { "Forwarding" } else { "" };
        let public = t.public_url.as_deref().unwrap_or("(not online yet)");
        let mut line = format!("{public} -> {}", t.local);
        if let Some(why) = &t.closed {
            let _ = write!(line, " (closed: {why})");
        }
        lines.push(row(name, &line));
    }
    lines.push(String::new());

    let cell = |d: Option<Duration>| d.map_or_else(|| "-".to_string(), duration);
    lines.push(row("", "ttl     opn     p50     p90     p99"));
    let c = view.connections;
    lines.push(row(
        "Connections",
        &format!("{:<8}{:<8}-       -       -", c.total, c.open),
    ));
    if let Some(s) = view.requests.as_ref().filter(|_| view.state.has_http()) {
        lines.push(row(
            "Requests",
            &format!(
                "{:<8}{:<8}{:<8}{:<8}{}",
                s.total,
                s.open,
                cell(s.p50),
                cell(s.p90),
                cell(s.p99)
            ),
        ));
    }

    // What is left goes to the lists, shared when there are two.
    let http = view.requests.is_some() && view.state.has_http();
    let tcp = view.requests.is_some() && view.state.has_tcp();
    let lists = usize::from(http) + usize::from(tcp);
    if lists > 0 {
        // Each list: a blank line, its title, its rule, a blank line, then rows.
        let left = size.rows.saturating_sub(lines.len() + 4 * lists);
        let per_list = left / lists;
        if http {
            list_head(&mut lines, "HTTP Requests");
            let rows = view.recent.iter().take(per_list);
            lines.extend(rows.map(|r| request_row(r, size.cols)));
        }
        if tcp {
            list_head(&mut lines, "TCP Connections");
            let rows = view.recent_connections.iter().take(per_list);
            lines.extend(rows.map(|c| connection_row(c, view.wall)));
        }
    }

    lines.truncate(size.rows);
    lines.iter().map(|l| fit(l, size.cols)).collect()
}

/// The session's status line.
fn status_text(view: &View<'_>) -> String {
    match &view.state.status {
        Status::Connecting => "connecting".to_string(),
        Status::Online => "online".to_string(),
        Status::Reconnecting {
            attempt,
            reason,
            retry_at,
        } => format!(
            "reconnecting in {:.1} s (attempt {attempt}): {reason}",
            until(*retry_at, view.now).as_secs_f64()
        ),
    }
}

fn list_head(lines: &mut Vec<String>, title: &str) {
    lines.push(String::new());
    lines.push(title.to_string());
    lines.push("-".repeat(title.len()));
    lines.push(String::new());
}

/// `GET /path    200 OK    12 ms`, the path taking the room that is left.
fn request_row(r: &RequestSummary, cols: usize) -> String {
    const METHOD: usize = 8;
    const STATUS: usize = 26;
    const TOOK: usize = 10;
    let path_width = cols.saturating_sub(METHOD + STATUS + TOOK).max(12);
    let status = match r.status {
        Some(code) => format!("{code} {}", reason(code)),
        None => "...".to_string(),
    };
    let took = r.duration.map_or_else(String::new, duration);
    format!(
        "{:<METHOD$}{:<path_width$} {:<w$}{took:>TOOK$}",
        fit(&r.method, METHOD - 1),
        fit(&r.target, path_width),
        fit(&status, STATUS - 1),
        w = STATUS - 1,
    )
}

/// `203.0.113.7    closed    1.2 KiB in    340 B out    3.1 s`.
fn connection_row(c: &Connection, wall: SystemTime) -> String {
    let (state, took) = match c.duration {
        Some(d) => ("closed", d),
        None => ("open", wall.duration_since(c.started).unwrap_or_default()),
    };
    format!(
        "{:<24}{state:<8}{:>10} in {:>10} out {:>10}",
        c.remote_addr,
        bytes(c.bytes_in),
        bytes(c.bytes_out),
        duration(took),
    )
}

/// The reason phrase of the common statuses; empty for the others.
fn reason(code: u16) -> &'static str {
    match code {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// `0.4 ms`, `12 ms`, `3.1 s`, `2m05s`.
pub(crate) fn duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 0.1 {
        "<0.1 ms".to_string()
    } else if ms < 10.0 {
        format!("{ms:.1} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else if d.as_secs() < 60 {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// `340 B`, `1.2 KiB`, `5.0 MiB`, `2.3 GiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `s` with its control characters (which a viewer could send in a path to drive the
/// terminal) shown as `?`, cut to `width` characters; a cut line ends with `~`.
pub(crate) fn fit(s: &str, width: usize) -> String {
    let clean = s.chars().map(|c| if c.is_control() { '?' } else { c });
    let mut out: String = clean.clone().take(width).collect();
    if width > 0 && clean.count() > width {
        out.pop();
        out.push('~');
    }
    out
}

/// One screen as bytes for the terminal: home the cursor, each line cleared to its end
/// (what was there before, or a stray log line, goes), the rest of the screen cleared.
pub(crate) fn frame(lines: &[String]) -> String {
    let mut out = String::from("\x1b[H");
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        out.push_str(line);
        out.push_str("\x1b[K");
    }
    out.push_str("\x1b[J");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use netbore_agent::{AgentEvent, TunnelSpec};
    use netbore_transport::TransportKind;

    fn state() -> State {
        let mut s = State::new(&[
            TunnelSpec::http("127.0.0.1:3000".into(), None),
            TunnelSpec::tcp("127.0.0.1:5432".into(), None),
        ]);
        s.handle_event(
            &AgentEvent::Online {
                tunnel_id: "t1".into(),
                public_url: "http://app.tunnel.example.com".into(),
                local: "127.0.0.1:3000".into(),
                transport: TransportKind::Quic,
                name: None,
            },
            Instant::now(),
        );
        s
    }

    fn request(target: &str, status: Option<u16>) -> RequestSummary {
        RequestSummary {
            method: "GET".into(),
            target: target.into(),
            status,
            duration: status.map(|_| Duration::from_millis(12)),
            started: SystemTime::now(),
        }
    }

    fn view(state: &State, recent: Vec<RequestSummary>) -> View<'_> {
        View {
            state,
            version: "0.1.0",
            edge: "https://tunnel.example.com:7834",
            rtt: Some(Duration::from_micros(1500)),
            connections: Counts { total: 7, open: 1 },
            inspector_url: Some("http://127.0.0.1:4040".into()),
            requests: Some(Stats {
                total: recent.len(),
                open: 0,
                p50: Some(Duration::from_millis(12)),
                p90: None,
                p99: None,
            }),
            recent,
            recent_connections: vec![Connection {
                seq: 1,
                tunnel: 1,
                remote_addr: "203.0.113.7".into(),
                started: SystemTime::now(),
                duration: Some(Duration::from_secs(3)),
                bytes_in: 1300,
                bytes_out: 340,
            }],
            now: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    #[test]
    fn a_wide_screen_shows_every_part() {
        let s = state();
        let v = view(
            &s,
            vec![request("/hello", Some(200)), request("/slow", None)],
        );
        let lines = render(
            &v,
            Size {
                cols: 100,
                rows: 40,
            },
        );
        let text = lines.join("\n");
        for want in [
            "Session Status                online",
            "Version                       0.1.0",
            "Edge                          https://tunnel.example.com:7834",
            "Transport                     quic",
            "Latency                       1.5 ms",
            "Web Interface                 http://127.0.0.1:4040",
            "Forwarding                    http://app.tunnel.example.com -> 127.0.0.1:3000",
            "                              (not online yet) -> 127.0.0.1:5432",
            "Connections                   7       1",
            "Requests                      2       0       12 ms   -",
            "HTTP Requests\n-------------",
            "TCP Connections\n---------------",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
        let get = lines
            .iter()
            .find(|l| l.starts_with("GET     /hello"))
            .unwrap();
        assert!(get.contains("200 OK") && get.ends_with("12 ms"), "{get}");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("GET     /slow") && l.contains("..."))
        );
        let conn = lines.iter().find(|l| l.starts_with("203.0.113.7")).unwrap();
        assert!(
            conn.contains("closed") && conn.contains("1.3 KiB in") && conn.contains("340 B out")
        );
        assert!(lines[0].starts_with("netbore") && lines[0].ends_with("(Ctrl+C to quit)"));
        assert_eq!(lines[0].chars().count(), 100);
    }

    #[test]
    fn every_line_fits_the_width_and_the_height() {
        let s = state();
        let long = format!("/{}", "x".repeat(300));
        let many: Vec<_> = (0..50).map(|_| request(&long, Some(404))).collect();
        for (cols, rows) in [(100, 40), (80, 24), (40, 12), (20, 5), (1, 1), (0, 0)] {
            let lines = render(&view(&s, many.clone()), Size { cols, rows });
            assert!(lines.len() <= rows, "{cols}x{rows}: {} lines", lines.len());
            for l in &lines {
                assert!(l.chars().count() <= cols, "{cols}x{rows}: {l:?}");
            }
        }
        // A taller screen lists more requests; a resize redraws with what fits.
        let count = |rows| {
            render(&view(&s, many.clone()), Size { cols: 80, rows })
                .iter()
                .filter(|l| l.starts_with("GET"))
                .count()
        };
        assert!(count(50) > count(30), "{} vs {}", count(50), count(30));
        assert_eq!(count(200), 50);
        let cut = render(&view(&s, many.clone()), Size { cols: 80, rows: 60 });
        let get = cut.iter().find(|l| l.starts_with("GET")).unwrap();
        assert!(
            get.contains("/xxx") && get.contains("~ 404 Not Found"),
            "{get}"
        );
    }

    #[test]
    fn control_characters_from_viewers_never_reach_the_terminal() {
        let s = state();
        let evil = request("/\x1b[2J\x1b]0;owned\x07\u{9b}31m", Some(200));
        let lines = render(
            &view(&s, vec![evil]),
            Size {
                cols: 120,
                rows: 40,
            },
        );
        for l in &lines {
            assert!(!l.chars().any(char::is_control), "{l:?}");
        }
        assert!(lines.iter().any(|l| l.contains("/?[2J?]0;owned??31m")));
    }

    #[test]
    fn reconnecting_says_why_and_when() {
        let mut s = state();
        let now = Instant::now();
        s.handle_event(
            &AgentEvent::Reconnecting {
                attempt: 3,
                delay: Duration::from_millis(2500),
                reason: "the session to the Edge ended (timeout)".into(),
            },
            now,
        );
        let mut v = view(&s, Vec::new());
        v.now = now;
        v.requests = None;
        let lines = render(
            &v,
            Size {
                cols: 120,
                rows: 30,
            },
        );
        assert!(
            lines.iter().any(|l| l.ends_with(
                "reconnecting in 2.5 s (attempt 3): the session to the Edge ended (timeout)"
            )),
            "{lines:#?}"
        );
        // Without an inspector: no request row and no lists.
        assert!(!lines.iter().any(|l| l.starts_with("HTTP Requests")));
        assert!(!lines.iter().any(|l| l.starts_with("TCP Connections")));
    }

    #[test]
    fn formats() {
        assert_eq!(duration(Duration::from_micros(40)), "<0.1 ms");
        assert_eq!(duration(Duration::from_micros(400)), "0.4 ms");
        assert_eq!(duration(Duration::from_millis(12)), "12 ms");
        assert_eq!(duration(Duration::from_millis(3100)), "3.1 s");
        assert_eq!(duration(Duration::from_secs(125)), "2m05s");
        assert_eq!(bytes(340), "340 B");
        assert_eq!(bytes(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(fit("abcdef", 4), "abc~");
        assert_eq!(fit("abcd", 4), "abcd");
        assert_eq!(fit("abcd", 0), "");
        assert_eq!(
            frame(&["a".into(), "b".into()]),
            "\x1b[Ha\x1b[K\r\nb\x1b[K\x1b[J"
        );
    }
}
