//! The request inspector's web page in a real headless Chromium: a real `netbore
//! server`, a real `netbore http` agent with `--inspect`, a recording origin, and
//! viewers speaking HTTP/1.1 to the Edge. The page must list requests live, show one
//! whole, replay it (unchanged and edited), give its curl command and export HAR 1.2.
//!
//! Needs `chromium` and `chromium-driver` (scripts/test.sh installs them); without
//! them the test fails and says so.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{HttpAgent, Server, http_request};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use netbore_test_support::webdriver::Browser;
use serde_json::{Value, json};

/// The longest any one step may take.
const WAIT: Duration = Duration::from_secs(20);

/// A request as the origin received it.
#[derive(Debug)]
struct Seen {
    method: String,
    target: String,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An origin that answers every request `200` with a small JSON body and reports
/// each request it received on the returned channel.
fn recording_origin(rt: &tokio::runtime::Runtime) -> (SocketAddr, mpsc::Receiver<Seen>) {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    rt.spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let method = req.method().to_string();
                        let target = req.uri().to_string();
                        let headers = req.headers().clone();
                        let body = req.into_body().collect().await?.to_bytes();
                        let _ = tx.send(Seen {
                            method,
                            target,
                            headers,
                            body,
                        });
                        let mut answer = Response::new(Full::new(Bytes::from_static(
                            b"{\"ok\":true,\"items\":[1,2]}",
                        )));
                        answer
                            .headers_mut()
                            .insert("content-type", "application/json".parse().unwrap());
                        Ok::<_, hyper::Error>(answer)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    (addr, rx)
}

/// Waits for the origin to receive a request `matches` accepts (skipping others).
fn expect_seen(rx: &mpsc::Receiver<Seen>, what: &str, matches: impl Fn(&Seen) -> bool) -> Seen {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(seen) if matches(&seen) => return seen,
            Ok(_) => continue,
            Err(_) => panic!("the origin did not receive {what} within {WAIT:?}"),
        }
    }
}

/// One request from a viewer to the Edge over a fresh connection; returns the status.
fn viewer_request(
    edge: SocketAddr,
    host: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> u16 {
    let mut s = TcpStream::connect(edge).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer);
    text.get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer from the Edge: {text:?}"))
}

/// `target/`, where the screenshots go (the test binary is `target/PROFILE/deps/X`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .nth(3)
        .expect("the test binary lives in target/PROFILE/deps")
        .to_path_buf()
}

/// The rows of the request list that are shown, newest first: (id, path cell).
fn shown_rows(browser: &Browser) -> Vec<(String, String)> {
    let rows = browser.execute(
        "return [...document.querySelectorAll('#requests tr.request')]
             .filter(r => !r.hidden)
             .map(r => [r.dataset.id, r.querySelector('td.path').textContent]);",
        &[],
    );
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_string(),
                r[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Waits until the list shows a row whose path cell ends with `path` and returns its id.
fn wait_for_row(browser: &Browser, path: &str) -> String {
    browser.wait_until(&format!("a row for {path}"), WAIT, |b| {
        shown_rows(b)
            .into_iter()
            .find(|(_, p)| p.ends_with(path))
            .map(|(id, _)| id)
    })
}

/// Fetches `url` in the page (so through the page's own origin) and parses it as JSON.
fn fetch_json(browser: &Browser, url: &str) -> Value {
    let text = browser.execute(
        "return fetch(arguments[0]).then(r => r.ok ? r.text() : 'HTTP ' + r.status);",
        &[json!(url)],
    );
    let text = text.as_str().unwrap_or_default();
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{url} is not JSON ({e}): {text}"))
}

/// Asserts the fields HAR 1.2 requires, with their types, and returns the entries.
fn check_har(har: &Value) -> &Vec<Value> {
    let log = &har["log"];
    assert_eq!(log["version"], "1.2", "{har}");
    assert!(log["creator"]["name"].is_string(), "{har}");
    assert!(log["creator"]["version"].is_string(), "{har}");
    let entries = log["entries"].as_array().expect("log.entries");
    for e in entries {
        let started = e["startedDateTime"].as_str().expect("startedDateTime");
        assert!(started.contains('T'), "ISO 8601 time: {started}");
        assert!(e["time"].is_number(), "time: {e}");
        let req = &e["request"];
        assert!(req["method"].is_string(), "request.method: {e}");
        let url = req["url"].as_str().expect("request.url");
        assert!(
            url.starts_with("http://") || url.starts_with("https://"),
            "{url}"
        );
        assert!(req["httpVersion"].is_string(), "request.httpVersion: {e}");
        for list in ["cookies", "headers", "queryString"] {
            assert!(req[list].is_array(), "request.{list}: {e}");
        }
        assert!(req["headersSize"].is_number(), "request.headersSize: {e}");
        assert!(req["bodySize"].is_number(), "request.bodySize: {e}");
        for h in req["headers"].as_array().unwrap() {
            assert!(h["name"].is_string() && h["value"].is_string(), "{h}");
        }
        let res = &e["response"];
        assert!(res["status"].is_number(), "response.status: {e}");
        assert!(res["statusText"].is_string(), "response.statusText: {e}");
        assert!(res["httpVersion"].is_string(), "response.httpVersion: {e}");
        assert!(res["cookies"].is_array(), "response.cookies: {e}");
        assert!(res["headers"].is_array(), "response.headers: {e}");
        assert!(res["content"]["size"].is_number(), "content.size: {e}");
        assert!(
            res["content"]["mimeType"].is_string(),
            "content.mimeType: {e}"
        );
        assert!(res["redirectURL"].is_string(), "response.redirectURL: {e}");
        assert!(res["headersSize"].is_number(), "response.headersSize: {e}");
        assert!(res["bodySize"].is_number(), "response.bodySize: {e}");
        assert!(e["cache"].is_object(), "cache: {e}");
        for t in ["send", "wait", "receive"] {
            assert!(e["timings"][t].is_number(), "timings.{t}: {e}");
        }
    }
    entries
}

#[test]
fn the_page_lists_shows_replays_and_exports_requests() {
    let browser = Browser::start().unwrap_or_else(|e| {
        panic!("{e}\nscripts/test.sh installs them (as root), then run the tests again")
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (origin, seen) = recording_origin(&rt);
    let server = Server::start_with(&["--domain", "localhost"]);
    // Port 0: the agent's `online` event names the inspector's address.
    let agent = HttpAgent::start(
        &server,
        &origin.to_string(),
        &["--name", "web", "--inspect", "127.0.0.1:0"],
    );
    let public_url = agent.online["public_url"].as_str().unwrap().to_string();
    let inspect: SocketAddr = agent.online["inspector"]
        .as_str()
        .and_then(|u| u.strip_prefix("http://"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no inspector address in {}", agent.online));

    // A request before the page opens.
    let item = r#"{"name":"widget","tags":["a","b"],"count":3}"#;
    let evil = r#"<img src=x onerror="window.__xss=1">"#;
    let first_headers = [
        ("Content-Type", "application/json"),
        ("X-Trace", "first"),
        ("X-Evil", evil),
    ];
    let status = viewer_request(
        server.http,
        &agent.host,
        "POST",
        "/items?color=blue",
        &first_headers,
        item,
    );
    assert_eq!(status, 200);
    let original = expect_seen(&seen, "the first request", |s| s.method == "POST");
    assert_eq!(original.body, item.as_bytes());

    browser.goto(&format!("http://{inspect}/"));
    let first = wait_for_row(&browser, "/items?color=blue");
    let api = http_request(inspect, "GET", "/api/requests/http?limit=10", None, None);
    assert_eq!(api.status, 200, "{api:?}");
    assert_eq!(api.body["requests"][0]["id"], first.as_str(), "{api:?}");
    browser.wait_until("the tunnel in the header", WAIT, |b| {
        let t = b.find("#tunnels").text();
        (t.contains(&public_url) && t.contains(&origin.to_string())).then_some(())
    });

    // A request after the page loaded shows up without a reload, at the top.
    browser.execute("window.__sameDocument = true;", &[]);
    let status = viewer_request(server.http, &agent.host, "GET", "/live/after-load", &[], "");
    assert_eq!(status, 200);
    let live = wait_for_row(&browser, "/live/after-load");
    assert_eq!(
        browser.execute("return window.__sameDocument === true;", &[]),
        true
    );
    let rows = shown_rows(&browser);
    assert_eq!(rows[0].0, live, "newest first: {rows:?}");
    assert_eq!(rows[1].0, first, "{rows:?}");

    // Filters: path substring, method, status, minimum duration.
    browser.find("#filter-path").send_keys("live/");
    browser.wait_until("the path filter", WAIT, |b| {
        (shown_rows(b).iter().map(|r| &r.0).collect::<Vec<_>>() == [&live]).then_some(())
    });
    browser.find("#filter-path").clear();
    browser.execute(
        "const s = document.querySelector('#filter-method');
         s.value = 'POST'; s.dispatchEvent(new Event('change'));",
        &[],
    );
    browser.wait_until("the method filter", WAIT, |b| {
        (shown_rows(b).iter().map(|r| &r.0).collect::<Vec<_>>() == [&first]).then_some(())
    });
    browser.execute(
        "const s = document.querySelector('#filter-method');
         s.value = ''; s.dispatchEvent(new Event('change'));",
        &[],
    );
    browser.find("#filter-status").send_keys("404");
    browser.wait_until("the status filter hiding every 200", WAIT, |b| {
        shown_rows(b).is_empty().then_some(())
    });
    browser.find("#filter-status").clear();
    browser.find("#filter-status").send_keys("2xx");
    browser.find("#filter-duration").send_keys("600000");
    browser.wait_until("the duration filter hiding quick requests", WAIT, |b| {
        shown_rows(b).is_empty().then_some(())
    });
    browser.find("#filter-duration").clear();
    browser.wait_until("both 2xx requests", WAIT, |b| {
        (shown_rows(b).len() == 2).then_some(())
    });
    browser.find("#filter-status").clear();
    browser.screenshot(target_dir().join("inspector-list.png"));

    // The detail of the first request.
    browser
        .find(&format!("#requests tr.request[data-id=\"{first}\"]"))
        .click();
    let detail = browser.wait_until("the detail of the first request", WAIT, |b| {
        let text = b.find("#detail").text();
        text.contains("X-Trace").then_some(text)
    });
    for want in [
        "POST",
        "/items?color=blue",
        "HTTP/1.1",
        "first",
        "200",
        evil,
    ] {
        assert!(
            detail.contains(want),
            "the detail lacks {want:?}:\n{detail}"
        );
    }
    let pretty = browser.find("#detail .request-body pre").text();
    assert!(
        pretty.contains("\"name\": \"widget\"") && pretty.contains('\n'),
        "the JSON body is not pretty-printed: {pretty}"
    );
    assert_eq!(
        browser.execute(
            "return window.__xss === undefined && !document.querySelector('#detail img');",
            &[]
        ),
        true,
        "a captured header value became markup"
    );
    browser.screenshot(target_dir().join("inspector-detail.png"));

    // Replay: the origin sees the same request again, and the list gains the replay.
    browser.find("#replay").click();
    let again = expect_seen(&seen, "the replay", |s| s.method == "POST");
    assert_eq!(again.target, "/items?color=blue");
    assert_eq!(again.header("x-trace"), Some("first"));
    assert_eq!(again.body, item.as_bytes());
    browser.wait_until("the replay in the list", WAIT, |b| {
        (shown_rows(b).len() == 3).then_some(())
    });
    // The API answers once the replayed response has ended, which may be after the
    // feed has shown the new record.
    browser.wait_until("the replay's id in the notice", WAIT, |b| {
        b.find("#notice")
            .text()
            .contains("Replayed as r_")
            .then_some(())
    });

    // Replay with edits: another path and one more header.
    browser.find("#replay-edit").click();
    let form = browser.wait_for("#edit-form:not([hidden])", WAIT);
    assert!(form.is_displayed());
    assert_eq!(browser.find("#edit-method").property("value"), "POST");
    assert_eq!(
        browser.find("#edit-path").property("value"),
        "/items?color=blue"
    );
    let headers = browser.find("#edit-headers").property("value");
    assert!(
        headers.as_str().unwrap().contains("X-Trace: first"),
        "{headers}"
    );
    assert_eq!(browser.find("#edit-body").property("value"), item);
    browser.find("#edit-path").clear();
    browser.find("#edit-path").send_keys("/items?color=red");
    browser.find("#edit-headers").send_keys("\nX-Edited: yes");
    browser.find("#edit-send").click();
    let edited = expect_seen(&seen, "the edited replay", |s| s.method == "POST");
    assert_eq!(edited.target, "/items?color=red");
    assert_eq!(edited.header("x-edited"), Some("yes"));
    assert_eq!(edited.header("x-trace"), Some("first"));
    assert_eq!(edited.body, item.as_bytes());
    let replay = wait_for_row(&browser, "/items?color=red");
    let record = http_request(
        inspect,
        "GET",
        &format!("/api/requests/http/{replay}"),
        None,
        None,
    );
    assert_eq!(record.body["replay_of"], first.as_str(), "{record:?}");

    // Copy as curl: the command, with the URL, shows in the page.
    browser.find("#curl").click();
    let curl = browser.wait_until("the curl command", WAIT, |b| {
        let pre = b.find("#curl-text");
        let text = pre.text();
        (pre.is_displayed() && text.contains("curl")).then_some(text)
    });
    assert!(
        curl.contains(&format!("{public_url}/items?color=blue")),
        "no URL in {curl}"
    );

    // HAR: the one-request link and the all-requests link.
    let href = browser.find("#har").attribute("href").expect("#har links");
    assert!(href.ends_with(&format!("/{first}/har")), "{href}");
    let har = fetch_json(&browser, &href);
    let entries = check_har(&har);
    assert_eq!(entries.len(), 1, "{har}");
    assert_eq!(entries[0]["request"]["method"], "POST");
    assert!(
        entries[0]["request"]["url"]
            .as_str()
            .unwrap()
            .ends_with("/items?color=blue"),
        "{har}"
    );
    let all = browser
        .find("#har-all")
        .attribute("href")
        .expect("#har-all links");
    let har = fetch_json(&browser, &all);
    assert_eq!(check_har(&har).len(), 4, "{har}");

    // Clear: the page and the API forget everything.
    browser.find("#clear").click();
    browser.wait_until("an empty list", WAIT, |b| {
        shown_rows(b).is_empty().then_some(())
    });
    let api = http_request(inspect, "GET", "/api/requests/http", None, None);
    assert_eq!(api.body["requests"], json!([]), "{api:?}");
    assert!(!browser.find("#replay").is_enabled());

    // The TCP tab is there (this agent has no TCP tunnel, so it is empty).
    browser.find("#tab-tcp").click();
    assert!(browser.find("#connections").is_displayed());
}
