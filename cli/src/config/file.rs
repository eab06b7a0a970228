//! The format of `netbore.toml`, the agent's config file: its text read into a
//! [`ConfigFile`], or every [`Problem`] found, each at its place in the text. Reading
//! and writing the file itself, and starting its tunnels, live beside this module.
//!
//! ```toml
//! server = "https://tunnel.example.com"   # or an array: the nodes of a fleet
//! key = "nb_..."
//! transport = "auto"
//!
//! [tunnels.web]
//! proto = "http"
//! addr = "8080"
//! name = "web"
//! ```

use std::ops::Range;

use netbore_agent::{ControlUrl, TunnelSpec};
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

use crate::agent_cmd::{self, InspectArg, TransportArg};

/// The keys allowed at the top of the file.
const TOP_KEYS: &[&str] = &[
    "server",
    "key",
    "transport",
    "inspect",
    "inspect_body_limit",
    "inspect_db_size",
    "inspect_secrets",
    "tunnels",
];

/// The keys allowed in a `[tunnels.NAME]` table.
const TUNNEL_KEYS: &[&str] = &["proto", "addr", "name", "remote_port", "inspect"];

/// Keys written from habit (other tools' names and near misses) and the key meant.
const ALIASES: &[(&str, &str)] = &[
    ("servers", "server"),
    ("server_addr", "server"),
    ("control", "server"),
    ("authtoken", "key"),
    ("api_key", "key"),
    ("token", "key"),
    ("tunnel", "tunnels"),
    ("protocol", "proto"),
    ("type", "proto"),
    ("address", "addr"),
    ("local", "addr"),
    ("local_addr", "addr"),
    ("port", "addr"),
    ("subdomain", "name"),
    ("hostname", "name"),
    ("domain", "name"),
    ("remote_addr", "remote_port"),
    ("public_port", "remote_port"),
    ("inspector", "inspect"),
    ("web_addr", "inspect"),
];

/// What a config file says. Fields the file leaves out are empty.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConfigFile {
    /// `server`: the control planes, the primary first.
    pub(crate) servers: Vec<ControlUrl>,
    /// `key`: the API key.
    pub(crate) key: Option<String>,
    /// `transport`.
    pub(crate) transport: Option<TransportArg>,
    /// `inspect`: the inspector's address, or off.
    pub(crate) inspect: Option<InspectArg>,
    /// `inspect_body_limit`.
    pub(crate) inspect_body_limit: Option<usize>,
    /// `inspect_db_size`.
    pub(crate) inspect_db_size: Option<usize>,
    /// `inspect_secrets`.
    pub(crate) inspect_secrets: Option<bool>,
    /// The `[tunnels.NAME]` tables, in the file's order.
    pub(crate) tunnels: Vec<Tunnel>,
}

/// One `[tunnels.NAME]` table.
#[derive(Debug, Clone)]
pub(crate) struct Tunnel {
    /// NAME, by which `netbore start` picks it.
    pub(crate) name: String,
    /// What the agent asks the control plane for.
    pub(crate) spec: TunnelSpec,
}

/// One thing wrong with a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// Where, in bytes of the text.
    pub(crate) span: Range<usize>,
    /// One sentence: what is wrong and what to write instead.
    pub(crate) message: String,
}

/// Reads `text`: the settings it holds, or every problem in it in the file's order.
pub(crate) fn parse(text: &str) -> Result<ConfigFile, Vec<Problem>> {
    let (root, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        // Past a syntax error the tables may be cut short: report those alone.
        let mut problems: Vec<Problem> = errors.iter().map(syntax_problem).collect();
        problems.sort_by_key(|p| p.span.start);
        return Err(problems);
    }
    let mut problems = Problems::default();
    let mut file = ConfigFile::default();
    for (key, value) in root.get_ref().iter() {
        match key.get_ref().as_ref() {
            "server" => file.servers = servers(value, &mut problems),
            "key" => {
                file.key = problems
                    .string(value, "key", "key = \"nb_...\"")
                    .map(str::to_string);
            }
            "transport" => file.transport = transport(value, &mut problems),
            "inspect" => file.inspect = inspect(value, &mut problems),
            "inspect_body_limit" => {
                file.inspect_body_limit = bytes(value, "inspect_body_limit", &mut problems);
            }
            "inspect_db_size" => {
                file.inspect_db_size = bytes(value, "inspect_db_size", &mut problems);
            }
            "inspect_secrets" => {
                file.inspect_secrets = boolean(value, "inspect_secrets", &mut problems);
            }
            "tunnels" => file.tunnels = tunnels(value, &mut problems),
            _ => problems.unknown_key(key, TOP_KEYS, "at the top of the file"),
        }
    }
    if problems.0.is_empty() {
        Ok(file)
    } else {
        problems.0.sort_by_key(|p| p.span.start);
        Err(problems.0)
    }
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    (line, column)
}

/// A syntax error as a [`Problem`]: the parser's message (sometimes several lines)
/// on one line.
pub(crate) fn syntax_problem(error: &toml::de::Error) -> Problem {
    let message = error
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    Problem {
        span: error.span().unwrap_or(0..0),
        message,
    }
}

/// The problems found so far.
#[derive(Debug, Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn at(&mut self, span: Range<usize>, message: String) {
        self.0.push(Problem { span, message });
    }

    /// `value` as a string, or a problem saying `key` takes one (like `example`).
    fn string<'v>(
        &mut self,
        value: &'v Spanned<DeValue<'_>>,
        key: &str,
        example: &str,
    ) -> Option<&'v str> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            _ => {
                self.at(
                    value.span(),
                    format!("{key} takes a string in quotes; write {example}"),
                );
                None
            }
        }
    }

    /// A key none of `known` is: a problem naming the key meant, or the keys there are.
    fn unknown_key(&mut self, key: &Spanned<DeString<'_>>, known: &[&str], place: &str) {
        let written = key.get_ref().as_ref();
        let message = match suggestion(written, known) {
            Some(meant) => format!("unknown key `{written}` {place}; write `{meant}` instead"),
            None => format!(
                "unknown key `{written}` {place}; the keys here are {}",
                known.join(", ")
            ),
        };
        self.at(key.span(), message);
    }
}

/// The key of `known` that `written` most likely means.
fn suggestion<'k>(written: &str, known: &[&'k str]) -> Option<&'k str> {
    let lower = written.to_ascii_lowercase().replace('-', "_");
    if let Some(k) = known.iter().find(|k| **k == lower) {
        return Some(k);
    }
    if let Some((_, meant)) = ALIASES.iter().find(|(alias, _)| *alias == lower) {
        return known.iter().find(|k| *k == meant).copied();
    }
    known
        .iter()
        .map(|k| (edit_distance(&lower, k), *k))
        .filter(|(d, k)| *d <= 2 && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance between two short ASCII keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(above + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// `server = "URL"` or `server = ["URL", ...]`.
fn servers(value: &Spanned<DeValue<'_>>, problems: &mut Problems) -> Vec<ControlUrl> {
    const EXAMPLE: &str = "server = \"https://tunnel.example.com\" or server = [\"https://a.example.com\", \"https://b.example.com\"]";
    let items: Vec<&Spanned<DeValue<'_>>> = match value.get_ref() {
        DeValue::String(_) => vec![value],
        DeValue::Array(items) if !items.is_empty() => items.iter().collect(),
        _ => {
            problems.at(
                value.span(),
                format!("server takes a URL or an array of URLs; write {EXAMPLE}"),
            );
            return Vec::new();
        }
    };
    let mut servers = Vec::new();
    for item in items {
        let Some(url) = problems.string(item, "server", EXAMPLE) else {
            continue;
        };
        match url.parse::<ControlUrl>() {
            Ok(url) => servers.push(url),
            Err(e) => problems.at(item.span(), e),
        }
    }
    servers
}

/// `transport = "auto"` or one transport.
fn transport(value: &Spanned<DeValue<'_>>, problems: &mut Problems) -> Option<TransportArg> {
    let name = problems.string(value, "transport", "transport = \"auto\"")?;
    match name.parse() {
        Ok(t) => Some(t),
        Err(e) => {
            problems.at(value.span(), format!("{e}"));
            None
        }
    }
}

/// The `[tunnels.NAME]` tables.
fn tunnels(value: &Spanned<DeValue<'_>>, problems: &mut Problems) -> Vec<Tunnel> {
    let DeValue::Table(table) = value.get_ref() else {
        problems.at(
            value.span(),
            "tunnels takes tables; write [tunnels.web] with proto and addr under it".into(),
        );
        return Vec::new();
    };
    table
        .iter()
        .filter_map(|(name, value)| tunnel(name, value, problems))
        .collect()
}

/// One `[tunnels.NAME]` table, or `None` with its problems recorded.
fn tunnel(
    name: &Spanned<DeString<'_>>,
    value: &Spanned<DeValue<'_>>,
    problems: &mut Problems,
) -> Option<Tunnel> {
    let label = name.get_ref().as_ref();
    let DeValue::Table(table) = value.get_ref() else {
        problems.at(
            value.span(),
            format!("tunnels.{label} must be a table; write [tunnels.{label}] with proto and addr under it"),
        );
        return None;
    };
    if table.is_empty() {
        problems.at(
            name.span(),
            format!(
                "tunnel {label} is empty; give it a proto and an addr, e.g. proto = \"http\" and addr = \"8080\""
            ),
        );
        return None;
    }
    let before = problems.0.len();
    let place = format!("in [tunnels.{label}]");
    let (mut proto, mut addr, mut public_name, mut remote_port) = (None, None, None, None);
    let mut inspected = true;
    for (key, v) in table.iter() {
        match key.get_ref().as_ref() {
            "proto" => proto = protocol(v, problems),
            "addr" => addr = local(v, problems).map(|a| (a, v.span())),
            "name" => {
                public_name = problems
                    .string(v, "name", "name = \"web\"")
                    .map(|n| (n, key.span()));
            }
            "remote_port" => remote_port = port(v, problems).map(|p| (p, key.span())),
            "inspect" => inspected = boolean(v, "inspect", problems).unwrap_or(true),
            _ => problems.unknown_key(key, TUNNEL_KEYS, &place),
        }
    }
    if proto.is_none() && !table.contains_key("proto") {
        problems.at(
            name.span(),
            format!("tunnel {label} has no proto; add proto = \"http\", \"tcp\" or \"tls\""),
        );
    }
    if addr.is_none() && !table.contains_key("addr") {
        problems.at(
            name.span(),
            format!("tunnel {label} has no addr; add the local service, e.g. addr = \"8080\""),
        );
    }
    let (Some(proto), Some((addr, addr_span))) = (proto, &addr) else {
        // Without a proto, the addr is checked as the widest kind (http's).
        if let Some((addr, span)) = addr
            && let Err(e) = agent_cmd::local_http_addr(&addr)
        {
            problems.at(span, format!("{e:#}"));
        }
        return None;
    };
    if let (Proto::Tcp, Some((_, span))) = (proto, &public_name) {
        problems.at(
            span.clone(),
            "name is for http and tls tunnels; remove it (a tcp tunnel asks for a port with remote_port)".into(),
        );
    }
    if let (Proto::Http | Proto::Tls, Some((_, span))) = (proto, &remote_port) {
        problems.at(
            span.clone(),
            "remote_port is for tcp tunnels; remove it (an http or tls tunnel asks for a name with name)".into(),
        );
    }
    let public_name = public_name.map(|(n, _)| n);
    let spec = match proto {
        Proto::Http => agent_cmd::http_tunnel(addr, public_name),
        Proto::Tcp => agent_cmd::tcp_tunnel(addr, remote_port.map(|(p, _)| p)),
        Proto::Tls => agent_cmd::tls_tunnel(addr, public_name),
    };
    let spec = spec.map_err(|e| problems.at(addr_span.clone(), format!("{e:#}")));
    if problems.0.len() > before {
        return None;
    }
    let mut spec = spec.ok()?;
    spec.label = Some(label.to_string());
    spec.inspect = inspected;
    Some(Tunnel {
        name: label.to_string(),
        spec,
    })
}

/// `inspect = "127.0.0.1:4040"`, `"off"`, or `false`.
fn inspect(value: &Spanned<DeValue<'_>>, problems: &mut Problems) -> Option<InspectArg> {
    const EXAMPLE: &str = "inspect = \"127.0.0.1:4040\" or inspect = false";
    match value.get_ref() {
        DeValue::Boolean(false) => Some(InspectArg(None)),
        DeValue::Boolean(true) => "127.0.0.1:4040".parse().ok(),
        DeValue::String(text) => match text.parse::<InspectArg>() {
            Ok(a) => Some(a),
            Err(e) => {
                problems.at(value.span(), format!("{e}; write {EXAMPLE}"));
                None
            }
        },
        _ => {
            problems.at(
                value.span(),
                format!("inspect takes an address or false; write {EXAMPLE}"),
            );
            None
        }
    }
}

/// A count of bytes, without quotes.
fn bytes(value: &Spanned<DeValue<'_>>, key: &str, problems: &mut Problems) -> Option<usize> {
    let n = match value.get_ref() {
        DeValue::Integer(i) => usize::from_str_radix(i.as_str(), i.radix()).ok(),
        _ => None,
    };
    if n.is_none() {
        problems.at(
            value.span(),
            format!("{key} is a number of bytes; write it without quotes, e.g. {key} = 65536"),
        );
    }
    n
}

/// `true` or `false`.
fn boolean(value: &Spanned<DeValue<'_>>, key: &str, problems: &mut Problems) -> Option<bool> {
    match value.get_ref() {
        DeValue::Boolean(b) => Some(*b),
        _ => {
            problems.at(
                value.span(),
                format!("{key} is true or false; write {key} = false without quotes"),
            );
            None
        }
    }
}

/// A tunnel's `proto`.
#[derive(Debug, Clone, Copy)]
enum Proto {
    Http,
    Tcp,
    Tls,
}

fn protocol(value: &Spanned<DeValue<'_>>, problems: &mut Problems) -> Option<Proto> {
    let written = problems.string(value, "proto", "proto = \"http\"")?;
    match written.to_ascii_lowercase().as_str() {
        "http" => Some(Proto::Http),
        "tcp" => Some(Proto::Tcp),
        "tls" => Some(Proto::Tls),
        _ => {
            problems.at(
                value.span(),
                format!("{written:?} is not a proto; write \"http\", \"tcp\" or \"tls\""),
            );
            None
        }
    }
}

/// `addr`: a string (`"8080"`, `"HOST:PORT"`, `"http://HOST:PORT"`) or a bare port.
fn local(value: &Spanned<DeValue<'_>>, problems: &mut Problems) -> Option<String> {
    if let DeValue::Integer(_) = value.get_ref() {
        return port(value, problems).map(|p| p.to_string());
    }
    problems
        .string(
            value,
            "addr",
            "addr = \"8080\" or addr = \"localhost:8080\"",
        )
        .map(str::to_string)
}

/// A port number, 1 to 65535.
fn port(value: &Spanned<DeValue<'_>>, problems: &mut Problems) -> Option<u16> {
    let port = match value.get_ref() {
        DeValue::Integer(i) => u16::from_str_radix(i.as_str(), i.radix()).ok(),
        _ => None,
    };
    match port {
        Some(p) if p > 0 => Some(p),
        _ => {
            problems.at(
                value.span(),
                "a port is a number from 1 to 65535; write it without quotes, e.g. 8080".into(),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
server = ["http://localhost:7834", "https://b.example.com"]
key = "nb_secret"
transport = "wss"

[tunnels.web]
proto = "http"
addr = "http://localhost:8080"
name = "Web"

[tunnels.db]
proto = "tcp"
addr = 5432
remote_port = 15432

[tunnels.api]
proto = "tls"
addr = "127.0.0.1:8443"
"#;

    fn messages(text: &str) -> Vec<(usize, usize, String)> {
        parse(text)
            .unwrap_err()
            .into_iter()
            .map(|p| {
                let (line, column) = line_column(text, p.span.start);
                (line, column, p.message)
            })
            .collect()
    }

    #[test]
    fn inspector_settings_are_read_and_checked() {
        let file = parse(
            "inspect = \"127.0.0.1:4999\"\ninspect_body_limit = 1024\ninspect_db_size = 1_000_000\ninspect_secrets = true\n[tunnels.web]\nproto = \"http\"\naddr = 80\n[tunnels.quiet]\nproto = \"http\"\naddr = 81\ninspect = false\n",
        )
        .unwrap();
        assert_eq!(
            file.inspect.unwrap().0,
            Some(netbore_agent::inspect::api::InspectAddr::At(
                "127.0.0.1:4999".parse().unwrap()
            ))
        );
        assert_eq!(file.inspect_body_limit, Some(1024));
        assert_eq!(file.inspect_db_size, Some(1_000_000));
        assert_eq!(file.inspect_secrets, Some(true));
        assert_eq!(file.tunnels[0].spec.label.as_deref(), Some("web"));
        assert!(file.tunnels[0].spec.inspect);
        assert!(!file.tunnels[1].spec.inspect);
        assert_eq!(parse("inspect = false\n").unwrap().inspect.unwrap().0, None);
        let text = "inspect = 4040\ninspect_db_size = \"50MB\"\n[tunnels.web]\nproto = \"http\"\naddr = 80\ninspect = \"no\"\n";
        let problems = parse(text).unwrap_err();
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(problems.len(), 3, "{messages:#?}");
        assert!(
            messages[0].contains("inspect takes an address or false"),
            "{messages:#?}"
        );
        assert!(
            messages[1].contains("inspect_db_size is a number of bytes"),
            "{messages:#?}"
        );
        assert!(
            messages[2].contains("inspect is true or false"),
            "{messages:#?}"
        );
    }

    #[test]
    fn a_full_file_reads_in_order() {
        let file = parse(GOOD).unwrap();
        assert_eq!(file.servers.len(), 2);
        assert_eq!(file.key.as_deref(), Some("nb_secret"));
        assert!(file.transport.unwrap().0.is_some());
        let names: Vec<_> = file.tunnels.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["web", "db", "api"]);
        assert_eq!(file.tunnels[0].spec.local, "localhost:8080");
        assert_eq!(file.tunnels[0].spec.name.as_deref(), Some("web"));
        assert_eq!(file.tunnels[1].spec.local, "127.0.0.1:5432");
        assert_eq!(file.tunnels[1].spec.remote_port, Some(15432));
        assert_eq!(file.tunnels[2].spec.protocol.as_str(), "tls");
    }

    #[test]
    fn every_problem_is_reported_at_its_place() {
        let text = "server = 5\n[tunnels.web]\nproto = \"udp\"\naddr = \"x\"\nprotocol = \"http\"\n[tunnels.db]\n[tunnels.api]\nproto = \"tcp\"\naddr = 1\nname = \"a\"\n";
        let got = messages(text);
        assert_eq!(got.len(), 6, "{got:#?}");
        assert_eq!((got[0].0, got[0].1), (1, 10));
        assert!(got[1].2.contains("\"udp\" is not a proto"), "{got:#?}");
        assert!(
            got[2].2.contains("\"x\" is not a local service"),
            "{got:#?}"
        );
        assert_eq!((got[3].0, got[3].1), (5, 1));
        assert!(got[3].2.contains("write `proto` instead"), "{got:#?}");
        assert!(got[4].2.contains("tunnel db is empty"), "{got:#?}");
        assert!(got[5].2.contains("name is for http and tls"), "{got:#?}");
        for (_, _, m) in &got {
            assert!(!m.contains('\n') && !m.ends_with('.'), "{m:?}");
        }
    }

    #[test]
    fn syntax_errors_carry_their_place() {
        let got = messages("key = \"a\"\n[tunnels.web\nproto = \"http\"\n");
        assert_eq!(got[0].0, 2, "{got:#?}");
        assert!(!got[0].2.contains('\n'));
    }

    #[test]
    fn missing_keys_and_misplaced_ones_are_named() {
        let got = messages(
            "[tunnels.web]\nname = \"w\"\n[tunnels.db]\nproto = \"http\"\naddr = \"80\"\nremote_port = 9\n",
        );
        assert!(got[0].2.contains("has no proto"), "{got:#?}");
        assert!(got[1].2.contains("has no addr"), "{got:#?}");
        assert!(got[2].2.contains("remote_port is for tcp"), "{got:#?}");
        let top = messages("tunnel = 1\nfoo = 2\n");
        assert!(top[0].2.contains("write `tunnels` instead"), "{top:#?}");
        assert!(top[1].2.contains("the keys here are server"), "{top:#?}");
    }

    #[test]
    fn columns_count_characters() {
        assert_eq!(line_column("é = 1\nab", 7), (2, 1));
        assert_eq!(line_column("é = 1\nab", 8), (2, 2));
        assert_eq!(line_column("ab", 99), (1, 3));
    }
}
