//! The request inspector's API against a real server, agent and origin: what ngrok's
//! agent API clients read, the captured requests, replay (as it was and edited, seen
//! by the origin), HAR and curl export, redaction, the memory budget, the TCP
//! connection list, WebSocket messages, and the default port's fallback.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Agent, HttpAgent, Server, free_port};
use netbore_test_support::webdriver::base64_decode;
use serde_json::Value;

/// An HTTP/1.1 origin that answers every request `200 ok` (keep-alive) and keeps
/// each request head it received.
fn recording_origin() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let heads = seen.clone();
    std::thread::spawn(move || {
        for socket in listener.incoming().flatten() {
            let heads = heads.clone();
            std::thread::spawn(move || serve_origin(socket, heads));
        }
    });
    (addr, seen)
}

fn serve_origin(socket: TcpStream, heads: Arc<Mutex<Vec<String>>>) {
    let mut writer = socket.try_clone().unwrap();
    let mut reader = BufReader::new(socket);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let length = head
            .lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        head.push_str(&String::from_utf8_lossy(&body));
        heads.lock().unwrap().push(head);
        let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// One request through the tunnel at `edge` for `host`; returns the status.
fn through(edge: SocketAddr, host: &str, request: &str) -> u16 {
    let mut s = TcpStream::connect(edge).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = request.replace("{host}", host);
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A GET to the inspector; the body as text.
fn get(inspector: &str, path: &str) -> (u16, String) {
    call(inspector, "GET", path, None)
}

fn call(inspector: &str, method: &str, path: &str, json: Option<&str>) -> (u16, String) {
    let addr = inspector.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    if let Some(body) = json {
        request.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(json.unwrap_or_default());
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text[9..12].parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    // Lists and exports are written as they are read, in chunks.
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return (status, common::dechunk(body));
    }
    (status, body.to_string())
}

fn get_json(inspector: &str, path: &str) -> Value {
    let (status, body) = get(inspector, path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// Waits until `f` holds, for up to 10 s.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_api_lists_tunnels_captures_replays_and_exports() {
    let server = Server::start();
    let (origin, seen) = recording_origin();
    let port = free_port();
    let at = format!("127.0.0.1:{port}");
    let agent = HttpAgent::start(&server, &origin, &["--inspect", &at]);
    let inspector = agent.online["inspector"].as_str().unwrap().to_string();
    assert_eq!(
        inspector,
        format!("http://{at}"),
        "the online event names it"
    );

    // ngrok's agent API, as its clients read it.
    let tunnels = get_json(&inspector, "/api/tunnels");
    assert_eq!(
        tunnels["tunnels"][0]["public_url"],
        agent.online["public_url"]
    );
    assert_eq!(
        tunnels["tunnels"][0]["config"]["addr"],
        format!("http://{origin}")
    );
    let script = "import json, sys, urllib.request\n\
        tunnels = json.load(urllib.request.urlopen(sys.argv[1] + '/api/tunnels'))['tunnels']\n\
        print([t['public_url'] for t in tunnels if t['proto'] in ('http', 'https')][0])";
    let out = std::process::Command::new("python3")
        .args(["-c", script, &inspector])
        .output()
        .expect("python3 runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        agent.online["public_url"].as_str().unwrap(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Two requests on one keep-alive connection, one with a secret and a JSON body.
    let edge = server.http;
    let status = through(
        edge,
        &agent.host,
        "GET /first?q=a%20b HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer s3cret\r\ncookie: session=c00kie\r\n\r\n\
         POST /second HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: 13\r\nconnection: close\r\n\r\n{\"name\":\"nb\"}",
    );
    assert_eq!(status, 200);
    eventually("two finished requests", || {
        let list = get_json(&inspector, "/api/requests/http");
        let requests = list["requests"].as_array().unwrap();
        requests.len() == 2 && requests.iter().all(|r| r["duration"].as_u64() > Some(0))
    });
    let summaries = get_json(&inspector, "/api/requests/http?summary=1");
    let row = &summaries["requests"][0];
    assert_eq!(row["summary"], true);
    assert_eq!(row["request"]["uri"], "/second");
    assert_eq!(row["response"]["status_code"], 200);
    assert_eq!(row["remote_addr"], "127.0.0.1");
    assert!(row["request"].get("headers").is_none(), "{row}");
    let list = get_json(&inspector, "/api/requests/http?limit=1");
    assert_eq!(list["requests"].as_array().unwrap().len(), 1, "limit");
    let newest = &list["requests"][0];
    assert_eq!(newest["request"]["method"], "POST");
    assert_eq!(newest["request"]["uri"], "/second");
    assert_eq!(newest["request"]["body"]["text"], "{\"name\":\"nb\"}");
    assert_eq!(newest["response"]["status_code"], 200);
    assert_eq!(newest["response"]["body"]["text"], "{\"ok\":true}");
    assert_eq!(newest["remote_addr"], "127.0.0.1");
    let first_id = get_json(&inspector, "/api/requests/http")["requests"][1]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let first = get_json(&inspector, &format!("/api/requests/http/{first_id}"));
    // Without --inspect-secrets both secret fields are hidden, in the headers and
    // in the raw head alike.
    assert_eq!(
        first["request"]["headers"]["Authorization"][0],
        "[redacted]"
    );
    assert_eq!(first["request"]["headers"]["Cookie"][0], "[redacted]");
    let raw = base64_decode(first["request"]["raw"].as_str().unwrap()).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    assert!(raw.contains("authorization: [redacted]\r\n"), "{raw}");
    assert!(raw.contains("cookie: [redacted]\r\n"), "{raw}");
    for secret in ["s3cret", "c00kie"] {
        assert!(
            !first.to_string().contains(secret) && !raw.contains(secret),
            "{secret} is hidden: {first}"
        );
    }

    // Replay as it was: the origin sees the request again, secret included.
    let before = seen.lock().unwrap().len();
    let (status, body) = call(
        &inspector,
        "POST",
        "/api/requests/http",
        Some(&format!("{{\"id\":\"{first_id}\"}}")),
    );
    assert_eq!(status, 200, "{body}");
    let replay_id = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), before + 1);
        let last = seen.last().unwrap();
        assert!(last.starts_with("GET /first?q=a%20b HTTP/1.1"), "{last}");
        assert!(last.contains("authorization: Bearer s3cret"), "{last}");
        assert!(last.contains("cookie: session=c00kie"), "{last}");
    }
    let replayed = get_json(&inspector, &format!("/api/requests/http/{replay_id}"));
    assert_eq!(replayed["replay_of"], first_id.as_str());
    assert_eq!(replayed["response"]["status_code"], 200);

    // Replay with edits: another method, path, headers and body.
    let edit = format!(
        "{{\"id\":\"{first_id}\",\"method\":\"PUT\",\"uri\":\"/edited\",\"headers\":[[\"host\",\"{}\"],[\"x-edited\",\"yes\"],[\"authorization\",\"[redacted]\"]],\"body\":\"new body\"}}",
        agent.host
    );
    let (status, body) = call(&inspector, "POST", "/api/requests/http", Some(&edit));
    assert_eq!(status, 200, "{body}");
    {
        let seen = seen.lock().unwrap();
        let last = seen.last().unwrap();
        assert!(last.starts_with("PUT /edited HTTP/1.1"), "{last}");
        assert!(last.contains("x-edited: yes"), "{last}");
        assert!(last.contains("content-length: 8"), "{last}");
        assert!(last.ends_with("new body"), "{last}");
        assert!(
            !last.contains("user-agent"),
            "the edited headers replace all: {last}"
        );
        assert!(
            last.contains("authorization: Bearer s3cret"),
            "a hidden value sent back as shown is the original: {last}"
        );
    }
    // A bad edit is refused with one sentence, and nothing reaches the origin.
    let count = seen.lock().unwrap().len();
    let bad = format!("{{\"id\":\"{first_id}\",\"headers\":[[\"x\",\"a\\r\\nevil: 1\"]]}}");
    let (status, body) = call(&inspector, "POST", "/api/requests/http", Some(&bad));
    assert_eq!(status, 400, "{body}");
    assert_eq!(seen.lock().unwrap().len(), count);
    // A page elsewhere cannot replay: no JSON content type, or a foreign Origin.
    let addr = inspector.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    let form = format!("{{\"id\":\"{first_id}\"}}");
    write!(
        s,
        "POST /api/requests/http HTTP/1.1\r\nhost: {addr}\r\norigin: http://evil.example\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{form}",
        form.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert_eq!(seen.lock().unwrap().len(), count);

    // curl and HAR.
    let (status, curl) = get(&inspector, &format!("/api/requests/http/{first_id}/curl"));
    assert_eq!(status, 200);
    let public = agent.online["public_url"].as_str().unwrap();
    assert!(
        curl.starts_with(&format!("curl '{public}/first?q=a%20b'")),
        "{curl}"
    );
    assert!(curl.contains("-H 'authorization: [redacted]'"), "{curl}");
    assert!(curl.contains("-H 'cookie: [redacted]'"), "{curl}");
    let har = get_json(&inspector, "/api/requests/http/har");
    for secret in ["s3cret", "c00kie"] {
        assert!(!har.to_string().contains(secret), "{secret} in {har}");
    }
    check_har(&har);
    let entries = har["log"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4, "every request, replays included");
    assert_eq!(entries[0]["request"]["queryString"][0]["value"], "a b");
    assert_eq!(
        entries[1]["request"]["postData"]["text"],
        "{\"name\":\"nb\"}"
    );

    // Clearing empties the list.
    let (status, _) = call(&inspector, "DELETE", "/api/requests/http", None);
    assert_eq!(status, 204);
    assert_eq!(
        get_json(&inspector, "/api/requests/http")["requests"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(get(&inspector, "/api/requests/http/r_00000001").0, 404);
}

/// The HAR 1.2 fields every entry must have.
fn check_har(har: &Value) {
    let log = &har["log"];
    assert_eq!(log["version"], "1.2");
    assert!(log["creator"]["name"].is_string() && log["creator"]["version"].is_string());
    for entry in log["entries"].as_array().unwrap() {
        assert!(
            entry["startedDateTime"].as_str().unwrap().ends_with('Z'),
            "{entry}"
        );
        assert!(entry["time"].is_number(), "{entry}");
        let request = &entry["request"];
        for field in ["method", "url", "httpVersion"] {
            assert!(request[field].is_string(), "request.{field}: {entry}");
        }
        for field in ["cookies", "headers", "queryString"] {
            assert!(request[field].is_array(), "request.{field}: {entry}");
        }
        for field in ["headersSize", "bodySize"] {
            assert!(request[field].is_number(), "request.{field}: {entry}");
        }
        let response = &entry["response"];
        assert!(response["status"].is_number(), "{entry}");
        for field in ["statusText", "httpVersion", "redirectURL"] {
            assert!(response[field].is_string(), "response.{field}: {entry}");
        }
        for field in ["cookies", "headers"] {
            assert!(response[field].is_array(), "response.{field}: {entry}");
        }
        assert!(response["content"]["size"].is_number(), "{entry}");
        assert!(response["content"]["mimeType"].is_string(), "{entry}");
        assert!(response["headersSize"].is_number() && response["bodySize"].is_number());
        assert!(entry["cache"].is_object(), "{entry}");
        for field in ["send", "wait", "receive"] {
            assert!(
                entry["timings"][field].is_number(),
                "timings.{field}: {entry}"
            );
        }
    }
}

#[test]
fn the_history_stays_within_its_budget_and_secrets_show_when_asked() {
    let server = Server::start();
    let (origin, _) = recording_origin();
    let at = format!("127.0.0.1:{}", free_port());
    let agent = HttpAgent::start(
        &server,
        &origin,
        &[
            "--inspect",
            &at,
            "--inspect-body-limit",
            "1000",
            "--inspect-db-size",
            "400000",
            "--inspect-secrets",
        ],
    );
    let inspector = format!("http://{at}");
    let body = "x".repeat(5000);
    for i in 0..200 {
        let request = format!(
            "POST /n{i} HTTP/1.1\r\nhost: {{host}}\r\ncookie: id=visible\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(through(server.http, &agent.host, &request), 200);
        if i % 25 == 24 {
            // The capture runs on the CPU forwarding leaves; on a machine busy with
            // other tests, what passes while its queue is full goes uncaptured. An
            // API call waits for it to catch up.
            get_json(&inspector, "/api/requests/http?summary=1&limit=1");
        }
    }
    let list = get_json(&inspector, "/api/requests/http?limit=10000");
    let requests = list["requests"].as_array().unwrap();
    // Each kept request holds its head, 1,000 bytes of body and a small response.
    // Of 400,000 bytes the capture's queue takes three quarters (it keeps at least
    // 256 KiB per batch), so the history keeps 100,000: about 60 requests, far
    // fewer than the 200 sent.
    assert!(
        (20..120).contains(&requests.len()),
        "{} requests kept",
        requests.len()
    );
    assert_eq!(requests[0]["request"]["uri"], "/n199", "the newest stay");
    let newest = &requests[0]["request"];
    assert_eq!(newest["body"]["size"], 5000);
    assert_eq!(newest["body"]["truncated"], true);
    assert_eq!(newest["body"]["text"].as_str().unwrap().len(), 1000);
    assert_eq!(newest["headers"]["Cookie"][0], "id=visible");
}

#[test]
fn tcp_tunnels_list_their_connections() {
    let server = Server::start();
    let echo = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = echo.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut socket in echo.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = socket.read(&mut buf) {
                    if n == 0 || socket.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let at = format!("127.0.0.1:{}", free_port());
    let agent = Agent::start(&server, &origin, &["--inspect", &at]);
    assert_eq!(agent.online["inspector"], format!("http://{at}"));
    let inspector = format!("http://{at}");
    let mut viewer = TcpStream::connect(agent.public).unwrap();
    viewer.write_all(&[7u8; 3000]).unwrap();
    let mut back = vec![0u8; 3000];
    viewer.read_exact(&mut back).unwrap();
    eventually("an open connection listed", || {
        let list = get_json(&inspector, "/api/connections/tcp");
        list["connections"][0]["open"] == true
    });
    drop(viewer);
    eventually("the connection closed with its bytes", || {
        let list = get_json(&inspector, "/api/connections/tcp");
        let c = &list["connections"][0];
        c["open"] == false && c["bytes_in"] == 3000 && c["bytes_out"] == 3000
    });
    let tunnels = get_json(&inspector, "/api/tunnels");
    assert_eq!(tunnels["tunnels"][0]["proto"], "tcp");

    // Another site's page may not even make it work, and no page may frame it.
    let raw = |extra: &str| {
        let mut s = TcpStream::connect(&at).unwrap();
        write!(
            s,
            "GET /api/requests/http/har HTTP/1.1\r\nhost: {at}\r\n{extra}connection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer.to_ascii_lowercase()
    };
    assert!(raw("sec-fetch-site: cross-site\r\n").starts_with("http/1.1 403"));
    let own = raw("sec-fetch-site: same-origin\r\n");
    assert!(own.starts_with("http/1.1 200"), "{own}");
    assert!(own.contains("x-frame-options: deny"), "{own}");
    assert!(own.contains("frame-ancestors 'none'"), "{own}");
}

#[test]
fn the_inspector_moves_to_the_next_free_port_and_can_be_off() {
    let server = Server::start();
    let (origin, _) = recording_origin();
    // An explicit address that is taken is an error naming it.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let mut proc = HttpAgent::spawn(&server, &origin, &["--inspect", &taken_addr]);
    let error = proc.expect_event("error", Duration::from_secs(10));
    assert!(
        error["message"].as_str().unwrap().contains(&taken_addr),
        "{error}"
    );
    assert_eq!(proc.wait_exit(Duration::from_secs(10)), Some(1));
    // Off: no inspector event, no inspector in the online event.
    let agent = HttpAgent::start(&server, &origin, &["--inspect", "off"]);
    assert!(agent.online.get("inspector").is_none(), "{}", agent.online);
}

#[test]
fn by_default_the_inspector_takes_the_next_free_port_after_4040() {
    let server = Server::start();
    let (origin, _) = recording_origin();
    // 4040 is taken: by this test, or by something else that holds it already.
    let _held = TcpListener::bind(("127.0.0.1", 4040));
    assert!(TcpListener::bind(("127.0.0.1", 4040)).is_err());
    // No --inspect: the default. (The other tests here name their addresses, so
    // only agents outside this test binary may hold ports of the range.)
    let agent = HttpAgent::start(&server, &origin, &[]);
    let Some(inspector) = agent.online["inspector"].as_str() else {
        // Ten agents on this machine already: this one runs without an inspector,
        // and says why. Only right when the ports are indeed taken.
        let stderr = agent.proc.stderr();
        assert!(stderr.contains("all taken"), "{}\n{stderr}", agent.online);
        let free: Vec<u16> = (4041..=4049)
            .filter(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
            .collect();
        assert!(
            free.is_empty(),
            "no inspector in {}, yet ports {free:?} are free",
            agent.online
        );
        eprintln!("other processes hold ports 4041 to 4049: only the fallback was checked");
        return;
    };
    let port: u16 = inspector
        .strip_prefix("http://127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{inspector} is not http://127.0.0.1:PORT"));
    assert!((4041..=4049).contains(&port), "{inspector}");
    // It is this agent's inspector there, not another's.
    let tunnels = get_json(inspector, "/api/tunnels");
    assert_eq!(
        tunnels["tunnels"][0]["public_url"], agent.online["public_url"],
        "{tunnels}"
    );
    assert_eq!(
        tunnels["tunnels"][0]["config"]["addr"],
        format!("http://{origin}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_messages_show_in_their_request() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    const WAIT: Duration = Duration::from_secs(20);

    let origin = common::web::start_origin().await;
    let server = Server::start_with(&["--domain", "localhost"]);
    let at = format!("127.0.0.1:{}", free_port());
    let agent = HttpAgent::start(&server, &origin.addr.to_string(), &["--inspect", &at]);
    let inspector = format!("http://{at}");

    let stream = tokio::net::TcpStream::connect(server.http).await.unwrap();
    let url = format!("ws://{}/ws", agent.host);
    let (mut ws, response) =
        tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, stream))
            .await
            .expect("the upgrade within 20 s")
            .unwrap();
    assert_eq!(response.status(), 101);
    let sent = ["hello inspector", "a second message"];
    for text in sent {
        ws.send(Message::text(text)).await.unwrap();
        let back = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("the echo within 20 s");
        assert_eq!(back.unwrap().unwrap(), Message::text(text));
    }

    // While the WebSocket is open, its request shows each message both ways, in
    // the order they passed (each echo came back before the next was sent).
    let messages = |record: &Value| -> Vec<(String, String, String)> {
        record["websocket"]["messages"]
            .as_array()
            .map(|m| {
                m.iter()
                    .map(|m| {
                        let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
                        (s("from"), s("type"), s("text"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let expected: Vec<(String, String, String)> = sent
        .iter()
        .flat_map(|t| ["viewer", "origin"].map(|from| (from.into(), "text".into(), t.to_string())))
        .collect();
    let mut id = String::new();
    eventually("four messages listed", || {
        let list = get_json(&inspector, "/api/requests/http");
        let record = &list["requests"][0];
        id = record["id"].as_str().unwrap_or_default().to_string();
        messages(record) == expected
    });
    let record = get_json(&inspector, &format!("/api/requests/http/{id}"));
    assert_eq!(record["request"]["uri"], "/ws");
    assert_eq!(record["request"]["headers"]["Upgrade"][0], "websocket");
    assert_eq!(record["response"]["status_code"], 101);
    for m in record["websocket"]["messages"].as_array().unwrap() {
        assert_eq!(
            m["size"].as_u64(),
            m["text"].as_str().map(|t| t.len() as u64),
            "{m}"
        );
        assert!(m["time"].as_str().unwrap().ends_with('Z'), "{m}");
    }
    let summaries = get_json(&inspector, "/api/requests/http?summary=1");
    assert_eq!(summaries["requests"][0]["websocket"]["count"], 4);

    // The viewer's close frame is listed after them.
    ws.close(None).await.unwrap();
    eventually("the close listed", || {
        let record = get_json(&inspector, &format!("/api/requests/http/{id}"));
        let all = messages(&record);
        all.len() > 4 && all[..4] == expected[..] && all[4].0 == "viewer" && all[4].1 == "close"
    });
}
