//! `netbore demo`, the README's first command: it must come online and fetch its hello
//! page through its own HTTP tunnel.

mod common;

use std::time::Duration;

use common::Proc;

#[test]
fn the_demo_fetches_through_its_own_http_tunnel() {
    let demo = Proc::spawn(&["demo"]);
    let online = demo.expect_event("online", Duration::from_secs(20));
    let url = online["public_url"].as_str().unwrap();
    assert!(
        url.starts_with("http://") && url.contains(".localhost:"),
        "{online}"
    );
    let hint = demo.expect_event("hint", Duration::from_secs(5));
    assert!(
        hint["try"].as_str().unwrap().starts_with("curl http://"),
        "{hint}"
    );
    let check = demo.expect_event("self_check", Duration::from_secs(10));
    assert_eq!(check["ok"], true, "{check}");
    assert!(
        check["body"]
            .as_str()
            .unwrap()
            .starts_with("Hello from Netbore!"),
        "{check}"
    );
}
