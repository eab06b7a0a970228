//! The registry's tables: public URLs and the room they give back.

use super::*;

fn registry(http_port: Option<u16>, https_port: Option<u16>) -> Registry {
    Registry::new(
        RegistryConfig {
            domain: "example.test".into(),
            http_port,
            https_port,
            upstream: Default::default(),
        },
        PortPool::new([127, 0, 0, 1].into(), crate::PortRange::Any, Vec::new()),
    )
}

#[test]
fn public_urls_follow_the_ingress_ports() {
    let url = |r: &Registry, p| r.public_url(p, Some("app"), Some(20001));
    let plain = registry(Some(80), None);
    assert_eq!(url(&plain, Protocol::Http), "http://app.example.test");
    assert_eq!(url(&plain, Protocol::Tcp), "tcp://example.test:20001");
    let plain = registry(Some(8080), None);
    assert_eq!(url(&plain, Protocol::Http), "http://app.example.test:8080");
    let https = registry(Some(80), Some(443));
    assert_eq!(url(&https, Protocol::Http), "https://app.example.test");
    assert_eq!(url(&https, Protocol::Tls), "tls://app.example.test:443");
    let https = registry(Some(8080), Some(8443));
    assert_eq!(url(&https, Protocol::Http), "https://app.example.test:8443");
    assert_eq!(url(&https, Protocol::Tls), "tls://app.example.test:8443");
}

#[test]
fn a_table_gives_back_its_room_as_it_empties() {
    let mut map: HashMap<u32, u64> = (0..1000).map(|i| (i, 0)).collect();
    let peak = map.capacity();
    for i in 0..990 {
        map.remove(&i);
        shrink_when_sparse(&mut map);
        assert!(map.capacity() >= map.len());
    }
    assert!(map.capacity() <= 64, "{} of {peak} kept", map.capacity());
    assert!((990..1000).all(|i| map.contains_key(&i)));
}
