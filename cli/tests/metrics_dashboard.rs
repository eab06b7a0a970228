//! The Grafana dashboard (`docs/grafana/netbore.json`) and the metric tables of
//! `docs/metrics.md` against what a real server and agent expose: every metric a panel
//! queries, and every metric the docs name, must be in a scrape, with the documented
//! type; every metric a scrape shows must be documented.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use common::{Proc, Server};
use serde_json::Value;

/// A file of the repository, read as text.
fn repo_file(path: &str) -> String {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The address in a `metrics` field (`http://ADDR`).
fn metrics_addr(event: &Value) -> SocketAddr {
    let url = event["metrics"]
        .as_str()
        .unwrap_or_else(|| panic!("no metrics address in {event}"));
    url.strip_prefix("http://")
        .unwrap_or(url)
        .parse()
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// `GET /metrics` over a fresh HTTP/1.1 connection; the body.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    if head.contains("transfer-encoding: chunked") {
        common::dechunk(body)
    } else {
        body.to_string()
    }
}

/// The families of a scrape: name (as in its `# TYPE` line) → type.
fn families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').expect("# TYPE NAME TYPE");
            (name.to_string(), kind.trim().to_string())
        })
        .collect()
}

/// Whether `name`, as a query writes it, is one of `families`: the family itself
/// (counters are exposed with `_total`), or a histogram's `_bucket`, `_sum` or
/// `_count` series.
fn exposed(families: &BTreeMap<String, String>, name: &str) -> bool {
    families.contains_key(name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| families.get(base).is_some_and(|t| t == "histogram"))
        })
}

/// The process metrics are read from `/proc` and left out elsewhere.
fn expected_here(name: &str) -> bool {
    cfg!(target_os = "linux") || !name.starts_with("process_")
}

/// The metric names a PromQL expression reads: identifiers starting with `netbore_`
/// or `process_`, outside string literals (label values).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut token = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in expr.chars().chain([' ']) {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            token.push(c);
            continue;
        }
        if token.starts_with("netbore_") || token.starts_with("process_") {
            names.push(std::mem::take(&mut token));
        }
        token.clear();
        if matches!(c, '"' | '\'' | '`') {
            quote = Some(c);
        }
    }
    names
}

/// Every query of the dashboard: panel targets' `expr`, and the template
/// variables' queries.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr", Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        match &var["query"] {
            Value::String(q) => out.push(q.clone()),
            Value::Object(o) => {
                out.extend(o.get("query").and_then(Value::as_str).map(String::from))
            }
            _ => {}
        }
    }
    out
}

/// The metric tables of `docs/metrics.md`: section heading → (name → type).
fn documented() -> BTreeMap<String, BTreeMap<String, String>> {
    let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut heading = String::new();
    for line in repo_file("docs/metrics.md").lines() {
        if let Some(h) = line.strip_prefix("## ") {
            heading = h.trim().to_string();
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // `| name | type | labels | meaning |` splits into six cells.
        if cells.len() < 6 {
            continue;
        }
        let Some(name) = cells[1].strip_prefix('`').and_then(|c| c.strip_suffix('`')) else {
            continue;
        };
        if name.starts_with("netbore_") || name.starts_with("process_") {
            sections
                .entry(heading.clone())
                .or_default()
                .insert(name.to_string(), cells[2].to_string());
        }
    }
    sections
}

/// A `netbore server` with metrics on, and its families.
fn server_with_metrics() -> (Server, BTreeMap<String, String>) {
    let server = Server::start_with(&["--metrics-addr", "127.0.0.1:0"]);
    let families = families(&scrape(metrics_addr(&server.listening)));
    (server, families)
}

#[test]
fn the_dashboard_queries_only_metrics_the_server_exposes() {
    let dashboard: Value = serde_json::from_str(&repo_file("docs/grafana/netbore.json"))
        .expect("docs/grafana/netbore.json is JSON");
    assert!(
        dashboard["schemaVersion"].as_u64().is_some(),
        "no schemaVersion"
    );
    let queries = dashboard_queries(&dashboard);
    let queried: BTreeSet<String> = queries.iter().flat_map(|q| metric_names(q)).collect();
    assert!(
        queried.len() >= 15,
        "the dashboard reads few metrics ({queried:?}) from {queries:#?}"
    );
    // The latency panels read the histogram's buckets.
    assert!(
        queried.contains("netbore_http_request_duration_seconds_bucket"),
        "{queried:?}"
    );

    let (_server, families) = server_with_metrics();
    let missing: Vec<&String> = queried
        .iter()
        .filter(|name| expected_here(name) && !exposed(&families, name))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the server does not expose: {missing:?}\nexposed: {:?}",
        families.keys().collect::<Vec<_>>()
    );
}

#[test]
fn every_documented_metric_is_exposed_with_its_type() {
    let docs = documented();
    let table = |heading: &str| {
        docs.get(heading)
            .unwrap_or_else(|| panic!("docs/metrics.md has no \"## {heading}\" table: {docs:?}"))
    };
    let (server_docs, agent_docs, process_docs) = (
        table("Server metrics"),
        table("Agent metrics"),
        table("Process metrics"),
    );

    let (server, server_families) = server_with_metrics();
    let origin = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = origin.local_addr().unwrap().to_string();
    let url = server.url();
    let agent = Proc::spawn(&[
        "tcp",
        &origin,
        "--server",
        &url,
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let at = metrics_addr(&agent.expect_event("metrics", Duration::from_secs(20)));
    agent.expect_event("online", Duration::from_secs(20));
    let agent_families = families(&scrape(at));

    let mut wrong = Vec::new();
    for (role, documented, families) in [
        ("server", server_docs, &server_families),
        ("agent", agent_docs, &agent_families),
        ("server", process_docs, &server_families),
        ("agent", process_docs, &agent_families),
    ] {
        for (name, kind) in documented {
            if !expected_here(name) {
                continue;
            }
            match families.get(name) {
                None => wrong.push(format!("{name}: documented, not exposed by the {role}")),
                Some(t) if t != kind => wrong.push(format!(
                    "{name}: documented as a {kind}, exposed by the {role} as a {t}"
                )),
                Some(_) => {}
            }
        }
    }
    // A family a role exposes belongs in that role's table (or the process table).
    for name in server_families.keys() {
        if !server_docs.contains_key(name) && !process_docs.contains_key(name) {
            wrong.push(format!("{name}: exposed by the server, not in its table"));
        }
    }
    for name in agent_families.keys() {
        if !agent_docs.contains_key(name) && !process_docs.contains_key(name) {
            wrong.push(format!("{name}: exposed by the agent, not in its table"));
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "docs/metrics.md and the scrapes disagree:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn query_names_are_read_outside_label_values() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.9, sum by (le) (rate(netbore_x_bucket{tunnel=~"netbore_y"}[5m]))) / process_open_fds"#
        ),
        ["netbore_x_bucket", "process_open_fds"]
    );
}
