//! The config file end to end through the real binary: `netbore start` running the
//! file's tunnels on one session against a real server, `netbore config check` and
//! `config add-key`, the default file under `$XDG_CONFIG_HOME`, the `NETBORE_*`
//! variables standing for flags, and the commands about the binary (completions,
//! man, version).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Proc, Server, TempDir, bin, web};
use netbore_test_support::echo_origin;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a finished `netbore ARGS` left: exit code, stdout, stderr.
struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `netbore ARGS` to its end, without `--json` unless ARGS hold it.
fn netbore(args: &[&str]) -> Output {
    netbore_with(args, &[])
}

/// [`netbore`] with the environment variables `env` set besides.
fn netbore_with(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let out = Command::new(bin())
        .args(args)
        .env_remove("NETBORE_CONFIG")
        .env_remove("NETBORE_KEY")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("netbore binary runs");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Writes `text` to `dir/netbore.toml` and returns the path.
fn write_config(dir: &TempDir, text: &str) -> PathBuf {
    let path = dir.0.join("netbore.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The tunnels the key's owner has, from the control API.
fn tunnels_of(server: &Server, key: &str) -> Vec<Value> {
    let listed = server.api("GET", "/tunnels", Some(key), None);
    assert_eq!(listed.status, 200, "{listed:?}");
    listed.body["tunnels"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_all_runs_every_tunnel_of_the_file_on_one_session() {
    let origin = web::start_origin().await;
    let (echo, _echo_task) = echo_origin().await;
    let tls_origin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::start_with(&["--domain", "localhost", "--https-addr", "127.0.0.1:0"]);
    let key = server.create_key("laptop");
    let dir = TempDir::new("config-all");
    // The server and the key come from the file alone.
    let path = write_config(
        &dir,
        &format!(
            r#"server = "{url}"
key = "{key}"

[tunnels.web]
proto = "http"
addr = "http://{origin}"
name = "web"

[tunnels.db]
proto = "tcp"
addr = "{echo}"

[tunnels.api]
proto = "tls"
addr = "{tls}"
name = "secure"
"#,
            url = server.url(),
            origin = origin.addr,
            tls = tls_origin.local_addr().unwrap(),
        ),
    );

    let agent = Proc::spawn(&["start", "--all", "--config", path_str(&path)]);
    let mut urls: Vec<String> = (0..3)
        .map(|_| {
            let online = agent.expect_event("online", Duration::from_secs(20));
            online["public_url"].as_str().unwrap().to_string()
        })
        .collect();
    urls.sort();
    let https = server.https.unwrap().port();
    assert!(urls[0].starts_with("http"), "{urls:?}");
    assert!(urls[0].contains("://web.localhost"), "{urls:?}");
    let tcp_port: u16 = urls[1]
        .strip_prefix("tcp://localhost:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{urls:?}"));
    assert_eq!(
        urls[2],
        format!("tls://secure.localhost:{https}"),
        "{urls:?}"
    );

    // One agent process serves all three: the web page and the echo come through.
    let host = format!("web.localhost:{}", server.http.port());
    let page = web::get(server.http, &host, "/from-the-file").await;
    assert_eq!(
        (page.status, page.text().as_str()),
        (200, "hello /from-the-file")
    );
    let mut viewer = tokio::net::TcpStream::connect(("127.0.0.1", tcp_port))
        .await
        .unwrap();
    viewer.write_all(b"ping through the file").await.unwrap();
    let mut echoed = [0u8; 21];
    tokio::time::timeout(Duration::from_secs(20), viewer.read_exact(&mut echoed))
        .await
        .expect("the echo comes back")
        .unwrap();
    assert_eq!(&echoed, b"ping through the file");

    // The control plane sees the three tunnels online from one agent connection.
    let tunnels = tunnels_of(&server, &key);
    assert_eq!(tunnels.len(), 3, "{tunnels:#?}");
    for t in &tunnels {
        assert_eq!(t["status"], "online", "{t}");
        assert_eq!(t["agent_addr"], tunnels[0]["agent_addr"], "{tunnels:#?}");
        assert!(t["agent_addr"].is_string(), "{t}");
    }
}

#[tokio::test]
async fn start_by_name_runs_only_the_named_tunnels_and_flags_beat_the_file() {
    let origin = web::start_origin().await;
    let server = Server::start_with(&["--domain", "localhost"]);
    let key = server.create_key("laptop");
    let dir = TempDir::new("config-named");
    // The file's server cannot be reached: --server on the command line wins.
    let path = write_config(
        &dir,
        &format!(
            r#"server = "http://127.0.0.1:9"
key = "{key}"

[tunnels.web]
proto = "http"
addr = {port}

[tunnels.db]
proto = "tcp"
addr = "127.0.0.1:9"
"#,
            port = origin.addr.port(),
        ),
    );
    let url = server.url();
    let agent = Proc::spawn(&[
        "start",
        "web",
        "--config",
        path_str(&path),
        "--server",
        &url,
    ]);
    let online = agent.expect_event("online", Duration::from_secs(20));
    assert!(
        online["public_url"]
            .as_str()
            .unwrap()
            .starts_with("http://"),
        "{online}"
    );
    assert_eq!(online["name"], "web", "the file's name for it: {online}");
    // Every tunnel of a session is created before the first goes online.
    let tunnels = tunnels_of(&server, &key);
    assert_eq!(tunnels.len(), 1, "{tunnels:#?}");
    assert_eq!(tunnels[0]["protocol"], "http");

    let missing = netbore(&["start", "nope", "--config", path_str(&path)]);
    assert_eq!(missing.code, 1, "{}", missing.stderr);
    let message = missing.stderr.trim();
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.contains("\"nope\""), "{message}");
    assert!(message.contains("web, db"), "{message}");
}

#[test]
fn config_check_lists_every_problem_at_its_line_and_column() {
    let dir = TempDir::new("config-check");
    let path = write_config(
        &dir,
        "server = \"http://localhost:7834\"\n\n[tunnels.web]\nproto = \"http\"\nprotocol = \"http\"\naddr = \"8080\"\n\n[tunnels.db]\nproto = \"udp\"\naddr = \"5432\"\n",
    );
    let file = path_str(&path);
    let out = netbore(&["config", "check", file]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(
        lines.contains(
            &format!("{file}:5:1: unknown key `protocol` in [tunnels.web]; write `proto` instead")
                .as_str()
        ),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{file}:9:9: ")) && l.contains("\"udp\"")),
        "{lines:#?}"
    );

    let good = write_config(
        &dir,
        "[tunnels.web]\nproto = \"http\"\naddr = 8080\n\n[tunnels.db]\nproto = \"tcp\"\naddr = \"localhost:5432\"\nremote_port = 15432\n\n[tunnels.api]\nproto = \"tls\"\naddr = \"8443\"\nname = \"secure\"\n",
    );
    let out = netbore(&["config", "check", path_str(&good)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "3 tunnels: web (http), db (tcp), api (tls)\n");
}

#[cfg(unix)]
#[test]
fn config_add_key_writes_an_owner_only_file_and_keeps_the_tunnels() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = TempDir::new("config-key");

    // A new file in a new directory, under a umask that would leave it world-readable.
    let fresh = dir.0.join("new").join("netbore.toml");
    let mut add = Proc::spawn_with_umask(
        "000",
        &[
            "config",
            "add-key",
            "nb_first",
            "--config",
            path_str(&fresh),
        ],
    );
    add.expect_event("key_saved", Duration::from_secs(10));
    assert_eq!(add.wait_exit(Duration::from_secs(10)), Some(0));
    assert_eq!(mode(&fresh), 0o600);
    assert_eq!(mode(fresh.parent().unwrap()), 0o700);
    assert_eq!(
        std::fs::read_to_string(&fresh).unwrap(),
        "key = \"nb_first\"\n"
    );

    // An existing file keeps its tunnels and comments; its old key is replaced.
    let tunnels = "# my tunnels\n[tunnels.web]\nproto = \"http\" # the site\naddr = 8080\n";
    let path = write_config(&dir, &format!("key = \"old\"\n{tunnels}"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut add = Proc::spawn_with_umask(
        "000",
        &[
            "config",
            "add-key",
            "nb_second",
            "--config",
            path_str(&path),
        ],
    );
    assert_eq!(
        add.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        add.stderr()
    );
    assert_eq!(mode(&path), 0o600);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("key = \"nb_second\"\n{tunnels}")
    );
    let out = netbore(&["config", "check", path_str(&path)]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "1 tunnel: web (http)\n")
    );
}

#[test]
fn completions_man_and_version_print_what_they_say() {
    let bash = netbore(&["completions", "bash"]);
    assert_eq!(bash.code, 0, "{}", bash.stderr);
    assert!(bash.stdout.contains("_netbore()"), "{}", bash.stdout);
    assert!(bash.stdout.contains("start"), "subcommands are completed");
    // Each shell's own form: zsh's compdef function, fish's `complete` commands.
    let zsh = netbore(&["completions", "zsh"]);
    assert_eq!(zsh.code, 0, "{}", zsh.stderr);
    assert!(zsh.stdout.starts_with("#compdef netbore"), "{}", zsh.stdout);
    assert!(zsh.stdout.contains("_netbore"), "{}", zsh.stdout);
    assert!(
        zsh.stdout.contains("'start:"),
        "subcommands: {}",
        zsh.stdout
    );
    let fish = netbore(&["completions", "fish"]);
    assert_eq!(fish.code, 0, "{}", fish.stderr);
    let lines: Vec<&str> = fish.stdout.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with("complete -c netbore ")),
        "{}",
        fish.stdout
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("complete -c netbore ") && l.contains("-a \"start\"")),
        "subcommands: {}",
        fish.stdout
    );

    let man = netbore(&["man"]);
    assert_eq!(man.code, 0, "{}", man.stderr);
    assert!(
        man.stdout.lines().any(|l| l.starts_with(".TH netbore 1")),
        "{}",
        man.stdout
    );

    let version = env!("CARGO_PKG_VERSION");
    let out = netbore(&["version"]);
    assert_eq!(out.stdout, format!("netbore {version}\n"));
    let out = netbore(&["version", "--json"]);
    let event: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(event["event"], "version");
    assert_eq!(event["version"], version);
}

/// Waits (20 s at most) for the newest request record the inspector at `inspector`
/// holds, once it has its response.
fn newest_request(inspector: std::net::SocketAddr) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let list = common::http_request(inspector, "GET", "/api/requests/http", None, None);
        assert_eq!(list.status, 200, "{list:?}");
        let newest = &list.body["requests"][0];
        if newest["response"]["status_code"].is_number() {
            return newest.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no finished request within 20 s: {list:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netbore_variables_stand_for_their_flags() {
    let origin = web::start_origin().await;
    // Anonymous agents are refused: only the key from NETBORE_KEY brings it online.
    let server = Server::start_opts(
        TempDir::new("data"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        "127.0.0.1:0",
        false,
        &["--domain", "localhost"],
    );
    let key = server.create_key("from-the-environment");
    let inspect = format!("127.0.0.1:{}", common::free_port());
    // No flag but the local address: the server, the key and the inspector's
    // settings come from the environment alone.
    let mut command = Command::new(bin());
    command
        .args(["http", &origin.addr.to_string()])
        .env_remove("NETBORE_CONFIG")
        .env("NETBORE_SERVER", server.url())
        .env("NETBORE_KEY", &key)
        .env("NETBORE_INSPECT", &inspect)
        .env("NETBORE_INSPECT_SECRETS", "true")
        .env("NETBORE_INSPECT_BODY_LIMIT", "4");
    let agent = Proc::spawn_command(command);
    let online = agent.expect_event("online", Duration::from_secs(20));
    assert_eq!(online["inspector"], format!("http://{inspect}"), "{online}");
    let tunnels = tunnels_of(&server, &key);
    assert_eq!(tunnels.len(), 1, "the key's tunnel: {tunnels:#?}");
    assert_eq!(tunnels[0]["status"], "online", "{tunnels:#?}");

    let url = online["public_url"].as_str().unwrap();
    let host = url.strip_prefix("http://").unwrap();
    let reply = web::request(
        server.http,
        "POST",
        host,
        "/echo",
        &[("cookie", "session=visible")],
        "a body longer than four bytes",
    )
    .await;
    assert_eq!(reply.status, 200);
    let record = newest_request(inspect.parse().unwrap());
    // NETBORE_INSPECT_SECRETS shows the cookie; NETBORE_INSPECT_BODY_LIMIT cuts.
    assert_eq!(
        record["request"]["headers"]["Cookie"][0], "session=visible",
        "{record}"
    );
    let body = &record["request"]["body"];
    assert_eq!(
        (body["text"].as_str(), body["truncated"].as_bool()),
        (Some("a bo"), Some(true)),
        "{record}"
    );
    assert_eq!(body["size"], 29, "{record}");
}

#[test]
fn the_default_config_file_is_under_xdg_config_home() {
    let dir = TempDir::new("config-xdg");
    let home = dir.0.join("home");
    let xdg = dir.0.join("xdg");
    let env = [("XDG_CONFIG_HOME", xdg.as_path()), ("HOME", home.as_path())];
    let path = xdg.join("netbore").join("netbore.toml");
    let file = path_str(&path);

    // None there yet: the error names where it looked.
    let out = netbore_with(&["config", "check"], &env);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("there is no config file at {file};")),
        "{}",
        out.stderr
    );

    // A broken file there: its problem at its line and column, under its path.
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        &path,
        "[tunnels.web]\nproto = \"http\"\naddress = \"8080\"\n",
    )
    .unwrap();
    let out = netbore_with(&["config", "check"], &env);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let expected =
        format!("{file}:3:1: unknown key `address` in [tunnels.web]; write `addr` instead");
    assert!(
        out.stderr.lines().any(|l| l == expected),
        "{expected:?} in:\n{}",
        out.stderr
    );

    // Fixed, it is read; an empty XDG_CONFIG_HOME means ~/.config instead.
    std::fs::write(&path, "[tunnels.web]\nproto = \"http\"\naddr = \"8080\"\n").unwrap();
    let out = netbore_with(&["config", "check"], &env);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "1 tunnel: web (http)\n"),
        "{}",
        out.stderr
    );
    let in_home = home.join(".config").join("netbore").join("netbore.toml");
    std::fs::create_dir_all(in_home.parent().unwrap()).unwrap();
    std::fs::write(&in_home, "[tunnels.db]\nproto = \"tcp\"\naddr = \"5432\"\n").unwrap();
    let empty = Path::new("");
    let out = netbore_with(
        &["config", "check"],
        &[("XDG_CONFIG_HOME", empty), ("HOME", home.as_path())],
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "1 tunnel: db (tcp)\n"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_all_reads_the_default_config_file() {
    let origin = web::start_origin().await;
    let server = Server::start_with(&["--domain", "localhost"]);
    let dir = TempDir::new("config-xdg-start");
    let xdg = dir.0.join("xdg");
    let path = xdg.join("netbore").join("netbore.toml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        &path,
        format!(
            "server = \"{}\"\ninspect = \"off\"\n\n[tunnels.site]\nproto = \"http\"\naddr = \"{}\"\nname = \"from-xdg\"\n",
            server.url(),
            origin.addr
        ),
    )
    .unwrap();
    let mut command = Command::new(bin());
    command
        .args(["start", "--all"])
        .env_remove("NETBORE_CONFIG")
        .env_remove("NETBORE_SERVER")
        .env_remove("NETBORE_INSPECT")
        .env("XDG_CONFIG_HOME", &xdg)
        .env("HOME", dir.0.join("home"));
    let agent = Proc::spawn_command(command);
    let online = agent.expect_event("online", Duration::from_secs(20));
    assert_eq!(online["name"], "site", "{online}");
    assert!(
        online.get("inspector").is_none(),
        "the file's inspect: {online}"
    );
    let url = online["public_url"].as_str().unwrap();
    let host = url.strip_prefix("http://").unwrap();
    assert!(host.starts_with("from-xdg.localhost"), "{online}");
    let page = web::get(server.http, host, "/via-xdg").await;
    assert_eq!((page.status, page.text().as_str()), (200, "hello /via-xdg"));
}
